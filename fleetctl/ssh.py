"""One SSH connection per Mac (a fabric.Connection over paramiko): run rendered scripts, with
sudo, and stream uploads.

Scripts go to `sh -s` on stdin, never into argv; a sudo password is the first stdin line,
read by `sudo -S -k` (which always asks, so the line is never run as a command).
"""
from __future__ import annotations

import atexit
import base64
import errno
import hashlib
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import fabric
import paramiko

from fleetctl.capture import Capture
from fleetctl.errors import FleetError
from fleetctl.sshconfig import Endpoint

# The fixed remote commands; everything variable arrives on stdin.
SHELL = "/bin/sh -s"
SUDO_NOPASSWD = "sudo -n /bin/sh -s"
SUDO_PASSWORD = "sudo -S -k -p '' /bin/sh -s"
CHUNK = 256 << 10
# What a Mac may send ahead of our reading it (paramiko buffers it): small, since a step's
# output is small and a hostile Mac's flood must not cost the controller more than this.
RECEIVE_WINDOW = 1 << 20
SILENT_ERRNOS = (errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETUNREACH)
POLL_S = 0.5  # how often a step waiting on stdout also drains stderr and checks its deadline
# A Mac that vanishes (powered off, its network gone) must fail within minutes, not after TCP's
# ~15 minutes of retransmissions: keepalives keep data in flight, and data unacknowledged for
# DEAD_PEER_S closes the connection (TCP_USER_TIMEOUT, where the controller's OS has it). Not
# less: 20 uploads sharing a 20 Mbit/s office link saw live segments wait over 60 s for an ACK.
KEEPALIVE_S = 15
DEAD_PEER_S = 300
_known_hosts_lock = threading.Lock()
_known_hosts: dict[Path, tuple[tuple[int, int], paramiko.HostKeys]] = {}  # path -> (stamp, parsed)
# Endpoints arrive resolved (sshconfig.py reads ~/.ssh/config as OpenSSH does): Fabric must not
# read it again. One Config for every connection: building one per Mac costs time at 1,000 Macs.
_FABRIC_CONFIG = fabric.Config(overrides={"load_ssh_configs": False})


class Unreachable(FleetError):
    """The Mac could not be reached or refused us (network, host key, authentication)."""


class NoAnswer(Unreachable):
    """Nothing answered at the Mac's address (timed out, no route, host down): asleep, away or
    off the network. Refused connections and SSH errors mean something is there."""


class HostKeyChanged(Unreachable):
    """The Mac's host key is not the one known_hosts has for its name: PRESENTED is its fingerprint."""

    def __init__(self, message: str, presented: str):
        super().__init__(message)
        self.presented = presented


class TimedOut(FleetError):
    """A step did not finish in time (a hung tool, or a Mac that writes forever); its channel is closed."""


@dataclass
class Result:
    rc: int
    out: str
    err: str


class _Transport(paramiko.Transport):
    """AES-GCM first (every supported macOS offers it): it needs no separate HMAC per packet,
    which paramiko computes in Python and which showed up in profiles of large uploads."""

    _preferred_ciphers = tuple(sorted(paramiko.Transport._preferred_ciphers, key=lambda c: "gcm" not in c))


class _FabricConnection(fabric.Connection):
    """fabric.Connection.__init__ sets self.inline_ssh_env, which fabric does not declare on the
    class: invoke's DataProxy then stores it in the Config (ours is shared by every Connection)
    and re-merges that Config, which empties it for a moment. Another thread reading it then
    (Connection.open reads .authentication) failed with "No attribute or config key found for
    'authentication'": one Mac in a 1,000-Mac status sweep was reported unreachable. Declared
    here, it is a plain instance attribute and the shared Config is only ever read."""

    inline_ssh_env = None


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """--accept-new-hostkeys: remember a first-seen key; a changed key still refuses (paramiko)."""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        with _known_hosts_lock:
            client.get_host_keys().add(hostname, key.get_name(), key)
            with open(self.path, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            cached = _known_hosts.get(self.path)
            if cached:  # the parsed copy stays current: no re-read per new Mac
                cached[1].add(hostname, key.get_name(), key)
                _known_hosts[self.path] = (_stamp(self.path), cached[1])


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _parsed(path: Path) -> paramiko.HostKeys:
    """known_hosts parsed once (again only when it changes), not once per Mac: paramiko builds a
    key object for every line, 0.15 s for 1,000 lines, which at 1,000 Macs was 150 s of CPU."""
    with _known_hosts_lock:
        stamp = _stamp(path)
        cached = _known_hosts.get(path)
        if cached is None or cached[0] != stamp:
            cached = _known_hosts[path] = (stamp, paramiko.HostKeys(str(path)))
        return cached[1]


def _load_known_key(client: paramiko.SSHClient, known_hosts: Path, where: Endpoint) -> None:
    """Give CLIENT the keys known for WHERE (hashed entries too), as OpenSSH names the host."""
    name = where.hostname if where.port == 22 else f"[{where.hostname}]:{where.port}"
    for key_type, key in (_parsed(known_hosts).lookup(name) or {}).items():
        client.get_host_keys().add(name, key_type, key)


class _Jumps:
    """One connection per bastion, shared by every Mac behind it (OpenSSH would log in per Mac)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[Endpoint, Connection] = {}
        self.failed: dict[Endpoint, str] = {}  # a bastion that refused us: the Macs behind it fail at once

    def channel(self, jump: Endpoint, target: Endpoint, known_hosts: Path, accept_new: bool) -> paramiko.Channel:
        with self.lock:
            if jump in self.failed:
                raise Unreachable(self.failed[jump])
            conn = self.open.get(jump)
            if conn is None or not conn.transport.is_active():
                try:
                    conn = self.open[jump] = Connection(jump, known_hosts, accept_new)
                except Unreachable as e:
                    self.failed[jump] = f"jump host {jump}: {e}"
                    raise Unreachable(self.failed[jump]) from None
        try:
            return conn.transport.open_channel("direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0),
                                               timeout=target.timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise Unreachable(f"jump host {jump} cannot reach {target.hostname}:{target.port}: "
                              f"{e or 'connection refused'}") from None

    def close(self) -> None:
        with self.lock:
            for conn in self.open.values():
                conn.close()
            self.open.clear()
            self.failed.clear()


class Connection:
    def __init__(self, where: Endpoint, known_hosts: Path, accept_new: bool):
        timeout = where.timeout
        self.fabric = _FabricConnection(
            where.hostname, user=where.user, port=where.port, config=_FABRIC_CONFIG, connect_kwargs={
                "key_filename": list(where.key_files), "timeout": timeout, "banner_timeout": timeout,
                "auth_timeout": timeout, "look_for_keys": not where.key_files, "allow_agent": True,
                "transport_factory": _Transport})
        self.client = self.fabric.client
        try:
            _load_known_key(self.client, known_hosts, where)
        except FileNotFoundError:
            if not accept_new:
                raise Unreachable(f"known_hosts file {known_hosts} does not exist; "
                                  "use --accept-new-hostkeys for first contact") from None
        except OSError as e:
            raise Unreachable(f"cannot read known_hosts {known_hosts}: {e}") from None
        # Fabric's default trusts any new key: fleetctl never does silently (design: safety rules).
        self.client.set_missing_host_key_policy(_AcceptNew(known_hosts) if accept_new else paramiko.RejectPolicy())
        try:
            if where.jump:
                sock = JUMPS.channel(where.jump, where, known_hosts, accept_new)
            else:
                # Our own socket with TCP_NODELAY: each step is a few small SSH messages, and Nagle's
                # algorithm against delayed ACKs added ~40 ms to every one of them.
                sock = socket.create_connection((where.hostname, where.port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if hasattr(socket, "TCP_USER_TIMEOUT"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_PEER_S * 1000)
            self.fabric.connect_kwargs["sock"] = sock
            self.fabric.open()
        except paramiko.BadHostKeyException as e:
            raise HostKeyChanged(f"host key for {where.hostname} has CHANGED (not the one in {known_hosts}); "
                                 "refusing to connect — check the Mac, then fix known_hosts",
                                 fingerprint(e.key.asbytes())) from None
        except paramiko.SSHException as e:
            text = str(e)
            if "not found in known_hosts" in text:
                raise Unreachable(f"host key for {where.hostname} is unknown; add it to {known_hosts} "
                                  "or run with --accept-new-hostkeys") from None
            if isinstance(e, paramiko.AuthenticationException):
                raise Unreachable(f"authentication failed for {where.user or 'the login user'}@{where.hostname} "
                                  "(check the user, the key and ssh-agent)") from None
            if "No authentication methods" in text:
                raise Unreachable(f"no key to log in to {where} with: set ansible_ssh_private_key_file, an "
                                  "IdentityFile in ~/.ssh/config, or add the key to ssh-agent") from None
            raise Unreachable(f"SSH error: {text}") from None
        except (OSError, EOFError) as e:
            reason = _network_reason(e)
            if reason == "timed out":
                reason = f"timed out after {timeout:g}s connecting to {where} (ConnectTimeout)"
            silent = isinstance(e, socket.timeout) or getattr(e, "errno", None) in SILENT_ERRNOS
            raise (NoAnswer if silent else Unreachable)(reason) from None
        self.transport = self.client.get_transport()
        self.transport.set_keepalive(KEEPALIVE_S)
        self.host_key = fingerprint(self.transport.get_remote_server_key().asbytes())
        self.bytes_sent = 0

    def run(self, script: str, mode: str = SHELL, password: str | None = None, timeout: float = 900,
            on_output: Callable[[bytes], None] | None = None) -> Result:
        """Run SCRIPT with MODE (SHELL, SUDO_NOPASSWD, SUDO_PASSWORD); it has TIMEOUT seconds in all.
        ON_OUTPUT sees each piece of stdout as it arrives (the engine times steps sharing a channel)."""
        stdin = (password + "\n" if mode == SUDO_PASSWORD else "") + script
        return self._exec(mode, lambda chan: chan.sendall(stdin.encode()), timeout, on_output)

    def stream(self, command: str, source: BinaryIO, progress: Callable[[int], None], timeout: float = 3600) -> Result:
        """Run COMMAND (a rendered script passed as the exec string) with SOURCE as its stdin."""
        def feed(chan):
            while chunk := source.read(CHUNK):
                chan.sendall(chunk)
                self.bytes_sent += len(chunk)
                progress(len(chunk))
        return self._exec(command, feed, timeout)

    def _exec(self, command: str, feed: Callable, timeout: float,
              on_output: Callable[[bytes], None] | None = None) -> Result:
        deadline = time.monotonic() + timeout
        try:
            chan = self.transport.open_session(window_size=RECEIVE_WINDOW, max_packet_size=32768)
            chan.settimeout(timeout)
            chan.exec_command(command)
            try:
                feed(chan)
                chan.shutdown_write()
            except OSError:
                # The command closed its channel before reading all of stdin (sudo -n refusing,
                # a script exiting early): its output and exit status are the answer.
                if not self.transport.is_active():
                    raise
            try:
                out, err = _collect(chan, deadline, on_output)
                # A command may close its output and still run: its exit status comes within the deadline too.
                if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                    raise socket.timeout()
                rc = chan.recv_exit_status()
            except socket.timeout:
                _signal(chan, "TERM")  # the command may never end by itself: stop it, then close
                raise
            finally:
                chan.close()
        except (OSError, EOFError, paramiko.SSHException) as e:
            if time.monotonic() >= deadline:
                raise TimedOut(f"timed out after {timeout:g}s") from None
            raise Unreachable(f"connection lost: {(_network_reason(e) if isinstance(e, OSError) else str(e)) or 'closed'}") from None
        if rc == -1:
            raise Unreachable("connection lost before the command finished")
        return Result(rc, out.text(), err.text())

    def close(self) -> None:
        self.fabric.close()


def _signal(chan: paramiko.Channel, name: str) -> None:
    """Ask sshd to send signal NAME to the command (RFC 4254 6.9 "signal", which OpenSSH's sshd
    honours); paramiko has no call for this request, so it is written as the RFC gives it."""
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("signal")
    m.add_boolean(False)
    m.add_string(name)
    try:
        chan.transport._send_user_message(m)
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the connection is gone: so is the command's session


def _collect(chan: paramiko.Channel, deadline: float,
             on_output: Callable[[bytes], None] | None = None) -> tuple[Capture, Capture]:
    """Read stdout and stderr together until the command closes them, within bounds: a Mac that
    floods one stream while we wait on the other, or never stops writing, costs the same memory."""
    out, err = Capture(), Capture()
    chan.settimeout(POLL_S)
    while True:
        while chan.recv_stderr_ready():
            err.add(chan.recv_stderr(CHUNK))
        if time.monotonic() >= deadline:
            raise socket.timeout()
        try:
            data = chan.recv(CHUNK)
        except socket.timeout:
            continue
        if not data:
            break
        out.add(data)
        if on_output is not None:
            on_output(data)
    while data := chan.recv_stderr(CHUNK):  # the channel is at EOF: what is left, then b""
        err.add(data)
    return out, err


def fingerprint(key_bytes: bytes) -> str:
    """SHA256:… of a host key, as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_bytes).digest()).decode().rstrip("=")


def _network_reason(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (no SSH server)"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


JUMPS = _Jumps()
atexit.register(JUMPS.close)
