"""What the macOS command shims share: the lab's per-host facts, the invocation counter, and
how a command fails. Lies beside macshim.py in /usr/local/bin/.lib on every simulated Mac.
"""
import fcntl
import json
import os
import sys

LAB = "/private/var/fleetlab"


def facts() -> dict:
    with open(LAB + "/host.json") as f:
        return json.load(f)


def count(name: str) -> None:
    """Add one to this command's invocation counter (atomic under concurrent calls).

    One copy per place it is installed: this one for every shim in /usr/local/bin/.lib; the
    simulated agent, installed by its package into the app bundle, has its own
    (agent/agentcommon.py), and so does string-util, which must run standalone."""
    fd = os.open(f"{LAB}/counts/{name}", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        n = int(os.read(fd, 32) or b"0")
        os.lseek(fd, 0, 0)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % (n + 1))
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o666)
    finally:
        os.close(fd)


def fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)
