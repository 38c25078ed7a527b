"""The processes a lab runs: started detached with their output in a log, waited for with a
deadline, stopped by pid (never by name: several labs may run side by side)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from fleetctl.errors import LabError
from fleetctl.lab import network, proxy
from fleetctl.lab.state import LabState, alive

BOOT = Path(__file__).with_name("boot.py")
READY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10


def spawn(argv: list[str], log: Path) -> int:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True)
    return proc.pid


def in_mount_namespace(directory: Path, netns: str | None = None) -> list[str]:
    """A Mac also gets its own PID namespace, so `ps` and pids show only its own processes."""
    mac = ["ip", "netns", "exec", netns, "unshare", "--pid", "--fork", "--kill-child", "--mount-proc"] if netns else ["unshare"]
    return [*mac, "--mount", "--uts", "--propagation", "private",
            "/usr/bin/python3", "-I", "-S", str(BOOT), str(directory)]


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()[-500:]
    except OSError:
        return ""


def wait_proxy(state: LabState) -> None:
    """The front and tinyproxy behind it both accept connections (bounded wait)."""
    ends = [(network.controller_address(state.slot), network.PROXY_PORT),
            (proxy.inner_address(state.slot), network.PROXY_PORT)]
    deadline = time.monotonic() + READY_TIMEOUT_S
    while ends:
        try:
            socket.create_connection(ends[0], timeout=0.5).close()
            ends.pop(0)
        except OSError:
            if time.monotonic() > deadline or not (alive(state.proxy_pid) and alive(state.proxy_front_pid)):
                log = _tail(Path(state.dir) / "proxy" / "proxy.log")
                raise LabError(f"the lab proxy does not answer on {ends[0][0]}:{ends[0][1]}: {log}")
            time.sleep(0.1)


def wait_listening(state: LabState) -> None:
    """Every started Mac's sshd answers on port 22 (bounded wait). Run before any Mac is sent
    away or to sleep: at that point every Mac is on its LAN."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = [h for h in state.hosts if h.pid]
    while pending and time.monotonic() < deadline:
        still = []
        for h in pending:
            if not alive(h.pid):
                log = _tail(Path(state.dir) / "hosts" / h.name / "sshd.log")
                raise LabError(f"{h.name}: sshd exited at start: {log}")
            try:
                socket.create_connection((h.address, 22), timeout=0.5).close()
            except OSError:
                still.append(h)
        pending = still
        if pending:
            time.sleep(0.1)
    if pending:
        raise LabError(f"{len(pending)} Macs did not answer on port 22 within {READY_TIMEOUT_S}s, e.g. {pending[0].name}")


def wait_file(path: Path, pid: int | None, log: Path, what: str) -> None:
    """PATH exists (written by the process PID once it is ready; bounded wait)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not path.exists():
        if not alive(pid) or time.monotonic() > deadline:
            raise LabError(f"{what} did not start: {_tail(log) or 'no output'}")
        time.sleep(0.05)


def kill(pids: list[int]) -> None:
    """SIGTERM, then SIGKILL what is left; SIGCONT in between wakes stopped (asleep) processes,
    which would otherwise hold SIGTERM until the deadline."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
                if sig == signal.SIGTERM:
                    os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S / 2
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [p for p in pids if alive(p)]
        if not pids:
            return
    raise LabError(f"processes {pids} would not stop")
