"""The lab's Qualys "pod": an HTTPS endpoint that records every agent check-in, and answers
the platform API (podapi.py) about the agents that reached it.

Runs as its own process (`python -m fleetctl.lab.pod`); tests read DIR/pod/checkins.jsonl.
Like the real platform it assigns the host ID: the agent only learns (and writes) its
hostid from the answer to a check-in. The controller calls the API at the pod's address:
its certificate names both the pod's host name and that address.
"""
from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fleetctl.lab import podapi, podlimits

ACTIVATED_MODULES = ["vm", "pc", "inv"]  # the manifests an agent of another subscription gets
MODULE_MANIFESTS = {"AGENT_VM": "vm", "AGENT_PC": "pc", "AGENT_SCA": "sca"}  # inv comes with every agent
MAX_BODY = 64 << 10
HANDSHAKE_TIMEOUT_S = 10  # a client that never finishes its TLS handshake frees its thread


def make_certificate(pod_dir: Path, name: str, address: str | None = None) -> Path:
    """A self-signed certificate for NAME (and ADDRESS, where the controller calls the API);
    Macs and the controller trust it as the lab's root CA. Made again when the names change
    (a lab started again in the same DIR may get another address)."""
    pod_dir.mkdir(parents=True, exist_ok=True)
    cert, key, names = pod_dir / "cert.pem", pod_dir / "key.pem", pod_dir / "cert.names"
    san = f"DNS:{name}" + (f",IP:{address}" if address else "")
    if not cert.exists() or not key.exists() or not names.exists() or names.read_text() != san:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "3650", "-subj", f"/CN={name}",
             "-addext", f"subjectAltName={san}"],
            check=True, capture_output=True,
        )
        key.chmod(0o600)
        names.write_text(san)
    return cert


def agent_modules(pod_dir: Path, customer_id: object) -> list[str]:
    """The manifests a check-in's answer names: the subscription's activated modules (api.json)."""
    config = podlimits.read_config(pod_dir)
    if customer_id != config.customer_id:
        return ACTIVATED_MODULES
    return [*(MODULE_MANIFESTS[m] for m in config.modules if m in MODULE_MANIFESTS), "inv"]


def assign_hostid(checkin: dict) -> str:
    """The hostid the agent sent, or a new one on its first contact."""
    sent = checkin.get("hostid")
    return sent if isinstance(sent, str) and sent else str(uuid.uuid4())


class Pod(BaseHTTPRequestHandler):
    server_version = "QualysPod/fleetlab"
    log_file: Path
    api: podapi.Api
    lock = threading.Lock()

    def _reply(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _api(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= podapi.MAX_API_BODY:
            self._send(413, b"", {})
            return
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("Host") or self.server.server_address[0]
        answer = self.api.handle(self.path, dict(self.headers.items()), body, host)
        self._send(answer.status, answer.body, answer.headers)

    def do_GET(self) -> None:  # reachability probes (preflight) get a plain answer
        self._reply(200, {"service": "Qualys CloudAgent pod (fleetlab)"})

    def do_POST(self) -> None:
        if self.path.startswith("/qps/"):
            self._api()
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not self.path.endswith("/CloudAgent/checkin") or not 0 < length <= MAX_BODY:
            self._reply(404, {"error": "unknown endpoint"})
            return
        try:
            checkin = json.loads(self.rfile.read(length))
            if not isinstance(checkin, dict):
                raise ValueError
        except ValueError:
            self._reply(400, {"error": "bad check-in"})
            return
        # recorded: hostid = the one assigned, sent_hostid = what the agent sent ("" the first time)
        hostid = assign_hostid(checkin)
        checkin.update(sent_hostid=checkin.get("hostid") or "", hostid=hostid, peer=self.client_address[0],
                       time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with self.lock, open(self.log_file, "a") as f:
            f.write(json.dumps(checkin, sort_keys=True) + "\n")
        modules = agent_modules(self.log_file.parent, checkin.get("customer_id"))
        self._reply(200, {"status": "ok", "hostid": hostid, "modules": modules})

    def log_message(self, format: str, *args) -> None:
        pass


class PodServer(ThreadingHTTPServer):
    """TLS handshakes in each request's thread, not in the accept loop, and a deep backlog: with
    1,000 Macs one handshake at a time starved the pod (curl and check-ins timed out)."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], handler, context: ssl.SSLContext):
        self.context = context
        super().__init__(address, handler)

    def finish_request(self, request, client_address) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--max-hours", type=float, default=72, help="stop by itself after this long")
    args = parser.parse_args()
    Pod.log_file = args.dir / "checkins.jsonl"
    Pod.api = podapi.Api(args.dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.dir / "cert.pem", args.dir / "key.pem")
    server = PodServer((args.address, args.port), Pod, context)
    threading.Timer(args.max_hours * 3600, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
