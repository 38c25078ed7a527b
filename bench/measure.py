"""Run a command and measure what it cost the controller: wall time, CPU seconds, peak RSS."""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass


@dataclass
class Cost:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int
    output: str


def measure(argv: list[str], env: dict | None = None, timeout: float = 1800) -> Cost:
    """wait4 on this one child gives its own rusage (with its descendants), nothing else's."""
    out_r, out_w = os.pipe()
    started = time.monotonic()
    pid = os.posix_spawnp(argv[0], argv, env if env is not None else dict(os.environ),
                          file_actions=[(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, out_w, 2),
                                        (os.POSIX_SPAWN_CLOSE, out_r)])
    os.close(out_w)
    killer = threading.Timer(timeout, lambda: os.kill(pid, signal.SIGKILL))
    killer.start()
    with os.fdopen(out_r, "rb") as reader:
        output = reader.read()
    _, status, usage = os.wait4(pid, 0)
    killer.cancel()
    return Cost(time.monotonic() - started, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                os.waitstatus_to_exitcode(status), output.decode(errors="replace"))
