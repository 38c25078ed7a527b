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


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent (every process: the tool and the simulated Macs)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]  # user nice system idle iowait irq softirq
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    return busy / os.sysconf("SC_CLK_TCK")
