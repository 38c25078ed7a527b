"""From what bench/macwork.py's Watcher saw to per-Mac counts: processes, execs, sudo, macOS
shims, SSH channels, bytes hashed (less each hashing program's fixed reads), TLS handshakes,
CPU; the process tree of a Mac; the per-Mac means of a run."""
from __future__ import annotations

import select
import struct
import subprocess
import tempfile
import time
from collections import defaultdict

from bench import kernel
from bench.kernel import TS_ATTR_DEREGISTER, TS_PID, TS_READ_CHAR, TS_TYPE_AGGR_PID, TS_TYPE_STATS

HASHERS = {"openssl", "shasum", "sha1sum", "sha224sum", "sha256sum", "sha384sum", "sha512sum", "md5sum", "md5",
           "sha1", "sha256", "b2sum", "cksum"}


def count(self, before: dict, after: dict) -> dict:
    """What the Watcher SELF saw, per Mac: processes, execs, sudo, shims, channels, bytes hashed,
    TLS handshakes, CPU; BEFORE and AFTER are its snapshots at the window's ends."""
    calibration = hasher_overheads()
    for proc in self.records:  # still running at the end: its name now
        if not proc.exited and not proc.comm:
            proc.comm = kernel.read(f"/proc/{proc.pid}/comm").decode(errors="replace").strip() or "?"
    macs: dict[str, dict] = {}
    for h in self.hosts:
        name = h["name"]
        t0, t1 = before["tcp"].get(name, {}), after["tcp"].get(name, {})
        checkins = after["checkins"].get(name, 0) - before["checkins"].get(name, 0)
        tcp_out = t1.get("ActiveOpens", 0) - t0.get("ActiveOpens", 0)
        macs[name] = {
            "processes": 0, "threads": 0, "execs": 0, "channels": 0, "sudo": 0, "shims": 0,
            "bytes_hashed": 0, "hash_runs": 0, "python_bytes_read": 0, "unnamed_execs": 0,
            "ssh_connections": t1.get("PassiveOpens", 0) - t0.get("PassiveOpens", 0),
            "tls_handshakes": tcp_out, "agent_checkins": checkins, "tls_other": tcp_out - checkins,
            "cpu_s": round(after["cpu"].get(name, 0) - before["cpu"].get(name, 0), 2),
            "daemon_cpu_s": 0.0,
            "by_program": defaultdict(lambda: {"processes": 0, "cpu_ms": 0.0, "bytes_read": 0}),
        }
    shims = set(SHIM_NAMES)
    for proc in self.seeded + self.records:
        if proc.mac not in macs:
            continue
        m = macs[proc.mac]
        # its CPU and bytes read in the window: taskstats at its exit, or /proc at the end,
        # less what it had used when the window opened (processes already there)
        cpu0, read0 = before["own"].get(proc.pid, (0.0, 0)) if not proc.started else (0.0, 0)
        cpu1, read1 = ((proc.cpu_us / 1e6, proc.rchar) if proc.exited
                       else after["own"].get(proc.pid, (cpu0, read0)))
        cpu, read = max(cpu1 - cpu0, 0.0), max(read1 - read0, 0)
        name = proc.comm or "?"
        if proc.daemon:
            m["daemon_cpu_s"] += cpu
        if not proc.started:  # not one the tool started: only its CPU and reads in the window count
            if cpu or read:
                row = m["by_program"][name]
                row["cpu_ms"] += cpu * 1000
                row["bytes_read"] += read
            continue
        row = m["by_program"][name]
        row["cpu_ms"] += cpu * 1000
        row["bytes_read"] += read
        row["processes"] += 1
        m["processes"] += 1
        m["threads"] += proc.threads
        m["execs"] += len(proc.execs)
        m["unnamed_execs"] += sum(1 for e in proc.execs if e.startswith("["))
        m["channels"] += proc.channel == proc.pid
        m["sudo"] += name == "sudo" or any(e.split(" ", 1)[0].endswith("/sudo") or e.startswith("sudo ")
                                           for e in proc.execs)
        m["shims"] += name in shims
        if name in HASHERS and not (name == "openssl" and proc.execs and proc.execs[-1]
                                    and not _is_digest(proc.execs[-1])):
            m["hash_runs"] += 1
            m["bytes_hashed"] += max(read - calibration.get(name, 0), 0)
        if name.startswith("python"):
            m["python_bytes_read"] += read
    for m in macs.values():
        m["daemon_cpu_s"] = round(m["daemon_cpu_s"], 2)
    for m in macs.values():
        m["by_program"] = {k: {**v, "cpu_ms": round(v["cpu_ms"], 1)}
                           for k, v in sorted(m["by_program"].items(), key=lambda kv: -kv[1]["processes"])}
    return {"window_s": round((self.t1 - self.t0) / 1e9, 2), "macs": macs, "lost_event_batches": self.lost,
            "watcher_cpu_s": round(self.cpu_s, 2), "watcher_read": {"process_events": self.events,
                                                                     "exit_records": self.exits},
            "hasher_overhead_bytes": calibration,
            "summary": summarize(macs)}

def tree(self, mac: str) -> list[dict]:
    """MAC's session programs in order, each with every process it led to (depth-first);
    cpu_ms and bytes_read from taskstats at each process's exit (0 if still running)."""
    children: dict[int, list] = defaultdict(list)
    for proc in self.records:
        if proc.mac == mac and proc.started:
            children[proc.parent].append(proc)
    out = []

    def walk(proc, depth: int, into: list) -> None:
        into.append({"depth": depth, "program": proc.comm, "execs": proc.execs,
                     "cpu_ms": round(proc.cpu_us / 1000, 1), "bytes_read": proc.rchar, "threads": proc.threads})
        for child in children.get(proc.pid, []):
            walk(child, depth + 1, into)

    for proc in self.records:
        if proc.mac == mac and proc.started and proc.channel == proc.pid:
            rows: list = []
            walk(proc, 0, rows)
            out.append({"channel": proc.execs[0] if proc.execs else "?", "processes": rows})
    return out


SHIM_NAMES = ["installer", "sw_vers", "pkgutil", "launchctl", "sysctl", "uname", "df", "system_profiler", "dscl",
              "log", "ioreg", "ifconfig", "networksetup", "pgrep"]


def _is_digest(cmdline: str) -> bool:
    words = cmdline.split()
    return any(w in ("dgst", "sha1", "sha256", "sha512", "md5") or w.startswith("-sha") for w in words[1:4])


_overheads: dict[str, int] | None = None


def hasher_overheads() -> dict[str, int]:
    """Bytes each hashing program reads besides its input (its configuration, libraries' headers,
    perl's modules for shasum): what it reads hashing an empty file, measured once with taskstats."""
    global _overheads
    if _overheads is not None:
        return _overheads
    found: dict[str, int] = {}
    runs = {"openssl": ["openssl", "dgst", "-sha256", "-r"], "shasum": ["shasum", "-a", "256"],
            "sha1sum": ["sha1sum"], "sha256sum": ["sha256sum"], "md5sum": ["md5sum"]}
    s, family = kernel.taskstats()
    try:
        with tempfile.NamedTemporaryFile() as empty:
            pids = {}
            for name, argv in runs.items():
                try:
                    proc = subprocess.Popen([*argv, empty.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                except OSError:
                    continue
                proc.wait()
                pids[proc.pid] = name
            deadline = time.monotonic() + 2
            while len(found) < len(pids) and time.monotonic() < deadline:
                ready, _, _ = select.select([s], [], [], 0.2)
                if not ready:
                    continue
                data = s.recv(1 << 16)
                offset = 0
                while offset + 16 <= len(data):
                    size, kind = struct.unpack_from("=IH", data, offset)
                    if size < 16:
                        break
                    if kind == family:
                        for attr, value in kernel.attrs(data[offset + 20: offset + size]):
                            stats = next((v for a, v in kernel.attrs(value) if a == TS_TYPE_STATS), None) \
                                if attr == TS_TYPE_AGGR_PID else None
                            if stats is not None:
                                pid = struct.unpack_from("=I", stats, TS_PID)[0]
                                if pid in pids:
                                    found[pids[pid]] = struct.unpack_from("=Q", stats, TS_READ_CHAR)[0]
                    offset += (size + 3) & ~3
    finally:
        kernel.taskstats_op(s, family, TS_ATTR_DEREGISTER)
        s.close()
    _overheads = found
    return found


KEYS = ("processes", "execs", "threads", "sudo", "shims", "channels", "ssh_connections", "bytes_hashed", "hash_runs",
        "python_bytes_read", "tls_handshakes", "agent_checkins", "tls_other", "cpu_s", "daemon_cpu_s", "unnamed_execs")


def summarize(macs: dict[str, dict]) -> dict:
    """Per-Mac means and the fleet's totals; a program table summed over the Macs."""
    n = max(len(macs), 1)
    totals = {k: sum(m[k] for m in macs.values()) for k in KEYS}
    programs: dict[str, dict] = defaultdict(lambda: {"processes": 0, "cpu_ms": 0.0, "bytes_read": 0})
    for m in macs.values():
        for name, row in m["by_program"].items():
            for k in row:
                programs[name][k] += row[k]
    return {"macs": len(macs), "per_mac": {k: round(v / n, 2) for k, v in totals.items()}, "total": totals,
            "programs_per_mac": {name: {"processes": round(r["processes"] / n, 2), "cpu_ms": round(r["cpu_ms"] / n, 1),
                                        "bytes_read": round(r["bytes_read"] / n)}
                                 for name, r in sorted(programs.items(), key=lambda kv: -kv[1]["processes"])}}

