"""What each simulated Mac costs the machine: memory of its processes, and CPU while idle.

    python -m bench.labcost --dir LAB_DIR [--idle-s 20] [--json FILE]

A Mac's processes are those in its network namespace (found from the pid `lab up` recorded):
the `unshare` that holds its PID namespace, the sshd listener, and after a rollout the
simulated agent's daemon (plus whatever is running at that moment). Memory is read from
/proc: RSS counts shared pages once per process, PSS (smaps_rollup) splits them between the
processes that share them, so PSS sums to what the Macs really take. Idle CPU is the whole
machine's busy time over a window in which nothing but the lab runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench.measure import machine_cpu_s


def _netns_inode(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _memory_kb(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, USS = private clean + dirty) in kB; zeros for a process that just left."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    values[key] = int(rest.split()[0])
    except OSError:
        return 0, 0, 0
    return values.get("Rss", 0), values.get("Pss", 0), values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)


def _role(pid: int) -> str:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if comm == "unshare":
        return "unshare (PID namespace holder)"
    if comm == "sshd":
        return "sshd listener" if " -D " in f" {cmdline} " else "sshd (a session)"
    if cmdline.endswith("/MacOS/qualys-cloud-agent") or comm == "qualys-cloud-ag":
        return "agent daemon (python3)"  # it names itself as the real daemon is named
    return comm


def mac_processes(lab: Path) -> dict[str, list[int]]:
    """Mac name -> pids of every process in that Mac's network namespace."""
    state = json.loads((lab / "state.json").read_text())
    by_ns = {}
    for host in state["hosts"]:
        ns = _netns_inode(host["pid"]) if host.get("pid") else None
        if ns:
            by_ns[ns] = host["name"]
    found: dict[str, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            mac = by_ns.get(_netns_inode(int(entry.name)))
            if mac:
                found[mac].append(int(entry.name))
    return found


def memory(lab: Path) -> dict:
    """Per role: process count and summed RSS/PSS/USS; per Mac: the means."""
    macs = mac_processes(lab)
    roles: dict[str, dict] = defaultdict(lambda: {"processes": 0, "rss_kb": 0, "pss_kb": 0, "uss_kb": 0})
    for pids in macs.values():
        for pid in pids:
            rss, pss, uss = _memory_kb(pid)
            r = roles[_role(pid)]
            r["processes"] += 1
            r["rss_kb"] += rss
            r["pss_kb"] += pss
            r["uss_kb"] += uss
    n = max(len(macs), 1)
    total = {k: sum(r[k] for r in roles.values()) for k in ("processes", "rss_kb", "pss_kb", "uss_kb")}
    state = json.loads((lab / "state.json").read_text())
    shared = {}
    for key in ("pod_pid", "proxy_pid", "proxy_front_pid"):
        if state.get(key):
            rss, pss, _ = _memory_kb(state[key])
            shared[key.removesuffix("_pid")] = {"rss_kb": rss, "pss_kb": pss}
    return {
        "macs": len(macs),
        "roles": {name: {**r, "pss_mb_per_mac": round(r["pss_kb"] / 1024 / n, 2),
                         "rss_mb_per_mac": round(r["rss_kb"] / 1024 / n, 2)} for name, r in sorted(roles.items())},
        "total": {**total, "pss_mb": round(total["pss_kb"] / 1024, 1), "rss_mb": round(total["rss_kb"] / 1024, 1)},
        "per_mac": {"processes": round(total["processes"] / n, 2), "rss_mb": round(total["rss_kb"] / 1024 / n, 2),
                    "pss_mb": round(total["pss_kb"] / 1024 / n, 2), "uss_mb": round(total["uss_kb"] / 1024 / n, 2)},
        "shared": shared,
    }


def _cpu_ticks(pid: int) -> int:
    """utime + stime + the waited-for children's, in clock ticks (0 for a process that left)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except OSError:
        return 0
    return sum(int(x) for x in fields[11:15])


def idle_cpu(lab: Path, seconds: float) -> dict:
    """CPU the lab itself used over SECONDS with no tool running, per role: its Macs' processes
    and the pod, proxy and proxy front, read per process (other work on the machine is not
    counted; a process that starts and ends inside the window is counted in its parent's
    children's time only once that parent waits for it)."""
    state = json.loads((lab / "state.json").read_text())
    roles = {p: _role(p) for pids in mac_processes(lab).values() for p in pids}
    roles.update({state[k]: k.removesuffix("_pid") for k in ("pod_pid", "proxy_pid", "proxy_front_pid") if state.get(k)})
    before, started = {p: _cpu_ticks(p) for p in roles}, time.monotonic()
    machine = machine_cpu_s()
    time.sleep(seconds)
    wall, machine = time.monotonic() - started, machine_cpu_s() - machine
    by_role: dict[str, float] = defaultdict(float)
    for pid, role in roles.items():
        after = _cpu_ticks(pid)
        if after:
            by_role[role] += max(after - before[pid], 0) / os.sysconf("SC_CLK_TCK")
    lab_s = sum(by_role.values())
    return {"window_s": round(wall, 1), "lab_cpu_s": round(lab_s, 2), "lab_cores_busy": round(lab_s / wall, 3),
            "by_role_cpu_s": {k: round(v, 2) for k, v in sorted(by_role.items())},
            "machine_cores_busy": round(machine / wall, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--idle-s", type=float, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"memory": memory(args.dir)}
    if args.idle_s:
        result["idle"] = idle_cpu(args.dir, args.idle_s)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
