"""The lab proxy's front door: Basic proxy authentication with any characters, before tinyproxy.

Runs as its own process (`python -m fleetctl.lab.proxyauth`, see proxy.py for why it exists).
For each client it reads the request head, checks Proxy-Authorization against the lab's
accounts, answers 407 when it does not match, and otherwise hands the request (without the
credentials) to tinyproxy and relays bytes both ways. Only CONNECT is served: the agent and
curl reach the HTTPS pod that way. Every request is recorded in DIR/proxy/access.jsonl (user
name and outcome, never the password) so tests can see which account a Mac used.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import selectors
import socket
import socketserver
import threading
import time
from pathlib import Path

from fleetctl.lab import proxy

MAX_HEAD = 16 << 10
IDLE_TIMEOUT_S = 60
CONNECT_TIMEOUT_S = 10
DENIED = (b"HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"fleetlab\"\r\n"
          b"Content-Length: 0\r\nConnection: close\r\n\r\n")
NOT_ALLOWED = b"HTTP/1.0 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BAD_GATEWAY = b"HTTP/1.0 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The request head (up to the blank line) and whatever the client sent after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise ValueError("request head too long")
        chunk = sock.recv(4096)
        if not chunk:
            raise ValueError("client closed before the request head ended")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def credentials(value: str) -> tuple[str, str] | None:
    """(user, password) from a 'Basic ...' header value; user names never hold ':' (RFC 7617)."""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def authorized(head: bytes, accounts: dict[str, str]) -> tuple[str | None, bool]:
    """(the user the client named, whether its password matches)."""
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "proxy-authorization":
            creds = credentials(value)
            if creds is None:
                return None, False
            user, password = creds
            expected = accounts.get(user)
            return user, expected is not None and hmac.compare_digest(expected.encode(), password.encode())
    return None, False


def without_credentials(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [lines[0]] + [l for l in lines[1:] if not l.lower().startswith(b"proxy-authorization:")]
    return b"\r\n".join(kept) + b"\r\n\r\n"


def relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until one side closes or both stay idle for IDLE_TIMEOUT_S."""
    with selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        while events := sel.select(IDLE_TIMEOUT_S):
            for key, _ in events:
                data = key.fileobj.recv(65536)
                if not data:
                    return
                key.data.sendall(data)


class Front(socketserver.BaseRequestHandler):
    accounts: dict[str, str] = {}
    upstream: tuple[str, int]
    access_log: Path
    lock = threading.Lock()

    def _record(self, target: str, user: str | None, outcome: str) -> None:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "client": self.client_address[0],
                 "target": target, "user": user, "outcome": outcome}
        with self.lock, open(self.access_log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def handle(self) -> None:
        client = self.request
        client.settimeout(IDLE_TIMEOUT_S)
        try:
            head, rest = read_head(client)
            method, target = (head.split(b"\r\n", 1)[0].decode("latin-1").split(" ") + ["", ""])[:2]
            user, ok = authorized(head, self.accounts)
            if method != "CONNECT":
                client.sendall(NOT_ALLOWED)
                self._record(target, user, "405 not CONNECT")
            elif not ok:
                client.sendall(DENIED)
                self._record(target, user, "407 denied")
            else:
                self._forward(client, head, rest, target, user)
        except (OSError, ValueError):
            pass

    def _forward(self, client: socket.socket, head: bytes, rest: bytes, target: str, user: str | None) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=CONNECT_TIMEOUT_S)
        except OSError:
            client.sendall(BAD_GATEWAY)
            self._record(target, user, "502 tinyproxy unreachable")
            return
        self._record(target, user, "allowed")
        with upstream:
            upstream.settimeout(IDLE_TIMEOUT_S)
            upstream.sendall(without_credentials(head) + rest)
            relay(client, upstream)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the lab directory (password files)")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="tinyproxy's host:port")
    parser.add_argument("--max-hours", type=float, default=72, help="stop by itself after this long")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    Front.accounts = proxy.accounts(args.dir)
    Front.upstream = (host, int(port))
    Front.access_log = args.dir / "proxy" / "access.jsonl"
    server = Server((args.listen, args.port), Front)
    threading.Timer(args.max_hours * 3600, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
