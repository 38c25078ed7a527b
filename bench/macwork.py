"""What a tool made each simulated Mac do while it ran: processes, bytes hashed, TLS, SSH.

    python -m bench.macwork --dir LAB [--tree mac-001] [--json FILE] -- COMMAND ...

Every count comes from the kernel, for the lab's Macs only (a Mac is its own PID and network
namespace), over the window in which the tool runs:

- processes, threads, execs: the kernel's process-events connector (netlink, the interface
  `forkstat` uses) reports every fork, exec and exit on the machine as it happens. A task
  belongs to a Mac when its parent does, starting from the processes found in the Mac's PID
  namespace when the window opens; so nothing is sampled or missed, however short-lived.
- what each process was and cost: the kernel's taskstats (netlink, the interface `getdelays`
  uses) sends, as each task exits, its name (the last program it exec'd), CPU time (sampled
  at the scheduler tick: exact in sum, coarse for one short process) and bytes read (rounded
  down to a KiB by the kernel); a process still running at the end is read from /proc. The
  command line of each exec is read from /proc as the exec is reported, for the Macs listed
  in DETAIL only (best effort: a process already gone is shown by its name only).
- bytes hashed: bytes read by hashing programs (openssl dgst, shasum, sha*sum, md5...), less
  what the same program reads hashing an empty file (its configuration, measured once here):
  exact to a KiB or two per run. Hashing inside another process (Ansible's copy and stat
  modules hash with Python's hashlib) is not a hashing program: its bytes show only in that
  python3's bytes read (kept apart).
- SSH: connections = TCP connections the Mac accepted (PassiveOpens in its network
  namespace's /proc/net/snmp: sshd is the only thing listening on a Mac); channels that ran
  something (exec, shell or subsystem requests) = programs sshd started for a session, i.e.
  execs by a child of a per-connection sshd (the per-connection sshd's own re-exec, a child
  of the listener, is not one).
- TLS handshakes: TCP connections the Mac opened (ActiveOpens in its namespace; in this lab
  every one is an HTTPS connection to the pod: curl in a preflight, the agent's check-ins),
  and of them the agent's check-ins (new lines in the pod's checkins.jsonl from the Mac).
- CPU: for each Mac, the sum over its live processes of their own and their reaped
  children's CPU time (/proc/PID/stat utime, stime, cutime, cstime), at the end less at the
  start: every process on a Mac is reaped by a process of that Mac (its sshd is its PID 1).

Cheap: the kernel sends a few dozen bytes per event (a few hundred per task exit); a thread
here reads them every 5 ms while they come and reports its own CPU time (`watcher_cpu_s`,
0.5 s in a 50-Mac rollout), which is part of the machine CPU of the run. Events the socket
could not hold would be counted (`lost_event_batches`; 64 MB buffers: none so far).
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

NETLINK_CONNECTOR, NETLINK_GENERIC = 11, 16
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
EV_FORK, EV_EXEC, EV_COMM = 0x1, 0x2, 0x200
SO_RCVBUFFORCE = 33
RCVBUF = 64 << 20
NLMSG_DONE = 3
GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 0x10, 3, 1, 2
TASKSTATS_CMD_GET = 1
TS_ATTR_REGISTER, TS_ATTR_DEREGISTER = 3, 4
TS_TYPE_PID, TS_TYPE_STATS, TS_TYPE_AGGR_PID = 1, 3, 4
# struct taskstats (linux/taskstats.h, version >= 10; later versions only append fields)
TS_COMM, TS_PID, TS_UTIME, TS_STIME, TS_READ_CHAR, TS_TGID = 80, 128, 152, 160, 216, 368
HASHERS = {"openssl", "shasum", "sha1sum", "sha224sum", "sha256sum", "sha384sum", "sha512sum", "md5sum", "md5",
           "sha1", "sha256", "b2sum", "cksum"}
DAEMON_COMM = "qualys-cloud-ag"  # the simulated agent names itself as the real daemon is named
TICK = os.sysconf("SC_CLK_TCK")
CMDLINE_KEEP = 400
BATCH_S = 0.005  # while events come, the watcher reads its sockets every 5 ms: one wake-up for many


def _nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * ((4 - size % 4) % 4)


def _attrs(data: bytes, offset: int = 0):
    while offset + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, offset)
        if size < 4:
            return
        yield kind & 0x3FFF, data[offset + 4: offset + size]
        offset += (size + 3) & ~3


def _connector() -> socket.socket:
    """Subscribed to the kernel's process events (fork, exec, comm, exit), machine-wide."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    s.bind((0, CN_IDX_PROC))
    _connector_op(s, PROC_CN_MCAST_LISTEN)
    s.setblocking(False)
    return s


def _connector_op(s: socket.socket, op: int) -> None:
    payload = struct.pack("=I", op)
    cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    s.send(struct.pack("=IHHII", 16 + len(cn), NLMSG_DONE, 0, 0, 0) + cn)


def _possible_cpus() -> bytes:
    try:
        return Path("/sys/devices/system/cpu/possible").read_text().strip().encode() + b"\0"
    except OSError:
        return f"0-{(os.cpu_count() or 1) - 1}".encode() + b"\0"


def _taskstats() -> tuple[socket.socket, int]:
    """A generic-netlink socket registered for every CPU's task exits (taskstats)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    s.bind((0, 0))
    body = struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0) + _nla(CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0")
    s.send(struct.pack("=IHHII", 16 + len(body), GENL_ID_CTRL, 1, 1, 0) + body)
    reply = s.recv(65536)
    family = None
    for kind, value in _attrs(reply, 20):
        if kind == CTRL_ATTR_FAMILY_ID:
            family = struct.unpack_from("=H", value)[0]
    if family is None:
        raise OSError("the kernel has no TASKSTATS generic-netlink family")
    _taskstats_op(s, family, TS_ATTR_REGISTER)
    s.setblocking(False)
    return s, family


def _taskstats_op(s: socket.socket, family: int, attr: int) -> None:
    body = struct.pack("=BBH", TASKSTATS_CMD_GET, 1, 0) + _nla(attr, _possible_cpus())
    s.send(struct.pack("=IHHII", 16 + len(body), family, 1 | 4, 2, 0) + body)  # request, ack


def _ns(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _stat_fields(path: str) -> list[str] | None:
    try:
        with open(path) as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _tcp(pid: int) -> dict[str, int]:
    """The Tcp counters of PID's network namespace (/proc/PID/net/snmp)."""
    lines = [l.split() for l in _read(f"/proc/{pid}/net/snmp").decode().splitlines() if l.startswith("Tcp:")]
    return dict(zip(lines[0][1:], (int(x) for x in lines[1][1:]))) if len(lines) == 2 else {}


class Proc:
    """One process (thread group) a Mac started inside the window, or had when it opened."""

    __slots__ = ("mac", "pid", "parent", "kind", "channel", "started", "execs", "comm", "cpu_us", "rchar",
                 "exited", "threads", "daemon")

    def __init__(self, mac: str, pid: int, parent: int | None, kind: str, started: bool):
        self.mac, self.pid, self.parent, self.kind, self.started = mac, pid, parent, kind, started
        self.channel: int | None = None  # the session program (pid) it descends from
        self.execs: list[str] = []
        self.comm, self.cpu_us, self.rchar, self.exited, self.threads, self.daemon = "", 0, 0, False, 0, False


class Watcher:
    """Counts what the lab's Macs do between start() and stop()."""

    def __init__(self, lab: Path, detail: set[str] | None = None, batch_s: float = BATCH_S):
        """DETAIL: the Macs whose every exec's command line is read (for tree(); None: all).
        BATCH_S: 0 reads each event as it comes (more command lines caught before their
        process is gone, several times the watcher's CPU)."""
        self.lab = lab
        self.detail = detail
        self.batch_s = batch_s
        state = json.loads((lab / "state.json").read_text())
        self.hosts = [h for h in state["hosts"] if h.get("pid")]
        self.address = {h["name"]: h["address"] for h in self.hosts}
        self.pod_log = lab / "pod" / "checkins.jsonl"
        self.lost = 0
        self.cpu_s = 0.0
        self.events = self.exits = 0  # machine-wide: process events and task-exit records read

    # ---- the window ----

    def start(self) -> "Watcher":
        self.cn = _connector()
        self.ts, self.family = _taskstats()
        self.owner: dict[int, str] = {}  # tid or tgid -> Mac
        self.procs: dict[int, Proc] = {}  # tgid -> its current Proc (Mac processes only)
        self.records: list[Proc] = []  # every Proc the Macs started (forked), in order
        self.seeded: list[Proc] = []  # the Macs' processes when the window opened
        self.tgid_of: dict[int, int] = {}
        self.counting = False
        self.ns_of: dict[str, str] = {}  # pid namespace -> Mac
        for h in self.hosts:
            ns = _ns(h["pid"], "pid_for_children")
            if ns:
                self.ns_of[ns] = h["name"]
        self._seed()
        self.before = self._snapshot()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="macwork", daemon=True)
        self.counting = True
        self.t0 = time.monotonic_ns()
        self.thread.start()
        return self

    def stop(self) -> dict:
        self.t1 = time.monotonic_ns()
        after = self._snapshot()
        self.stopping.set()
        self.thread.join()
        for close in (lambda: _connector_op(self.cn, PROC_CN_MCAST_IGNORE),
                      lambda: _taskstats_op(self.ts, self.family, TS_ATTR_DEREGISTER)):
            try:
                close()
            except OSError:
                pass
        self.cn.close()
        self.ts.close()
        return self._result(self.before, after)

    # ---- what is there when the window opens ----

    def _seed(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            mac = self.ns_of.get(_ns(pid, "pid"))
            if not mac:
                continue
            fields = _stat_fields(f"/proc/{pid}/stat")
            if not fields:
                continue
            comm = _read(f"/proc/{pid}/comm").decode(errors="replace").strip()
            parent = int(fields[1])
            if self.ns_of.get(_ns(parent, "pid")) != mac:  # PID 1 of the Mac: its sshd listener
                kind = "listener"
            else:
                kind = "sshd" if comm == "sshd" else "proc"
            proc = Proc(mac, pid, parent, kind, started=False)
            proc.comm, proc.daemon = comm, comm == DAEMON_COMM
            self.procs[pid] = proc
            self.seeded.append(proc)
            self.owner[pid] = mac
            self.tgid_of[pid] = pid
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    self.owner[int(task)] = mac
                    self.tgid_of[int(task)] = pid
            except OSError:
                pass
        # a seeded process's channel: its nearest seeded ancestor that is a session program
        for proc in self.procs.values():
            if proc.kind == "proc" and self.procs.get(proc.parent, proc).kind == "sshd":
                proc.kind = "session"

    def _snapshot(self) -> dict:
        """Per Mac: CPU seconds so far (live processes' own + reaped children's), the TCP
        counters of its network namespace, and the pod's check-ins from its address; per live
        process: its own CPU seconds and bytes read so far (/proc/PID/stat, /proc/PID/io)."""
        cpu: dict[str, float] = defaultdict(float)
        own: dict[int, tuple[float, int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            mac = self.ns_of.get(_ns(int(entry.name), "pid"))
            if not mac:
                continue
            fields = _stat_fields(f"/proc/{entry.name}/stat")
            if fields:
                mine = int(fields[11]) + int(fields[12])
                cpu[mac] += (mine + int(fields[13]) + int(fields[14])) / TICK
                io = dict(l.split(": ", 1) for l in _read(f"/proc/{entry.name}/io").decode().splitlines() if ": " in l)
                own[int(entry.name)] = (mine / TICK, int(io.get("rchar", 0)))
        checkins: dict[str, int] = defaultdict(int)
        by_address = {a: n for n, a in self.address.items()}
        for line in _read(str(self.pod_log)).splitlines():
            try:
                peer = json.loads(line).get("peer")
            except ValueError:
                continue
            if peer in by_address:
                checkins[by_address[peer]] += 1
        return {"cpu": cpu, "own": own, "tcp": {h["name"]: _tcp(h["pid"]) for h in self.hosts},
                "checkins": checkins}

    # ---- the events ----

    def _run(self) -> None:
        started = time.thread_time()
        poller = select.poll()
        poller.register(self.cn, select.POLLIN)
        poller.register(self.ts, select.POLLIN)
        while True:
            # exit records first, then the process events: every record read is older than the
            # events read after it, and a task's fork is reported before it can run, so each
            # record's task is known by the time the record is counted
            records = []
            while (data := self._recv(self.ts)) is not None:
                records.append(data)
            events = self._drain_connector()
            for data in records:
                self._taskstats(data)
            if (records or events) and self.batch_s:
                time.sleep(self.batch_s)  # let events gather: one wake-up for many
            elif records or events:
                continue
            elif self.stopping.is_set():
                break
            else:
                poller.poll(200)
        self.cpu_s = time.thread_time() - started

    def _recv(self, s: socket.socket) -> bytes | None:
        while True:
            try:
                return s.recv(1 << 16)
            except BlockingIOError:
                return None
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # the socket overflowed: events were lost
                    self.lost += 1
                    continue
                raise

    def _drain_connector(self) -> bool:
        got = False
        while (data := self._recv(self.cn)) is not None:
            got = True
            offset = 0
            while offset + 16 <= len(data):
                size = struct.unpack_from("=I", data, offset)[0]
                if size < 16:
                    break
                self._event(data, offset + 16 + 20)  # nlmsghdr, cn_msg
                offset += (size + 3) & ~3
        return got

    def _event(self, data: bytes, at: int) -> None:
        if at + 16 > len(data):
            return
        self.events += 1
        what, _cpu, stamp = struct.unpack_from("=IIQ", data, at)
        at += 16
        if what == EV_FORK:
            ppid, ptgid, cpid, ctgid = struct.unpack_from("=iiii", data, at)
            mac = self.owner.get(ptgid)
            if mac is None:
                self.owner.pop(cpid, None)  # a reused pid leaves the Mac it was in
                self.tgid_of.pop(cpid, None)
                return
            self.owner[cpid] = mac
            self.tgid_of[cpid] = ctgid
            if cpid != ctgid:  # a thread
                if ctgid in self.procs and stamp >= self.t0:
                    self.procs[ctgid].threads += 1
                return
            parent = self.procs.get(ptgid)
            pkind = parent.kind if parent else "proc"
            kind = "sshd" if pkind in ("listener", "sshd") else "proc"
            proc = Proc(mac, ctgid, ptgid, kind, started=stamp >= self.t0)
            proc.channel = parent.channel if parent else None
            proc.daemon = bool(parent and parent.daemon)
            self.procs[ctgid] = proc
            self.records.append(proc)
        elif what == EV_EXEC:
            pid, tgid = struct.unpack_from("=ii", data, at)
            proc = self.procs.get(tgid) if self.owner.get(tgid) else None
            if proc is None:
                return
            if self.detail is None or proc.mac in self.detail:
                raw = _read(f"/proc/{tgid}/cmdline")
                text = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")[:CMDLINE_KEEP]
                if not text:
                    text = "[" + _read(f"/proc/{tgid}/comm").decode(errors="replace").strip() + "]"
            else:
                text = ""  # not read (a Mac not listed in detail)
            proc.execs.append(text)
            if proc.kind == "sshd":
                parent = self.procs.get(proc.parent)
                if parent is not None and parent.kind != "listener":  # sshd starting a session's program
                    proc.kind = "session"
                    proc.channel = proc.pid
            elif proc.kind != "session":
                proc.kind = "proc"
        elif what == EV_COMM:
            pid, tgid = struct.unpack_from("=ii", data, at)
            comm = data[at + 8: at + 24].split(b"\0", 1)[0].decode(errors="replace")
            proc = self.procs.get(tgid) if self.owner.get(tgid) else None
            if proc is not None and comm == DAEMON_COMM:
                proc.daemon = True

    def _taskstats(self, data: bytes) -> None:
        self.exits += 1
        offset = 0
        while offset + 16 <= len(data):
            size, kind = struct.unpack_from("=IH", data, offset)
            if size < 16:
                return
            if kind == self.family:
                # the usual layout: AGGR_PID { PID (u32), STATS }: skip tasks of no Mac at once
                head = offset + 20
                _, outer, _, inner, pid = struct.unpack_from("=HHHHI", data, head) if size >= 32 else (0,) * 5
                if outer & 0x3FFF == TS_TYPE_AGGR_PID and inner == TS_TYPE_PID and pid not in self.owner:
                    offset += (size + 3) & ~3
                    continue
                for attr, value in _attrs(data[head: offset + size]):
                    if attr != TS_TYPE_AGGR_PID:
                        continue
                    stats = next((v for a, v in _attrs(value) if a == TS_TYPE_STATS), None)
                    if stats is not None and len(stats) >= TS_TGID + 4:
                        self._exit(stats)
            offset += (size + 3) & ~3

    def _exit(self, stats: bytes) -> None:
        pid = struct.unpack_from("=I", stats, TS_PID)[0]
        mac = self.owner.get(pid)
        if mac is None or not self.counting:
            return
        tgid = struct.unpack_from("=I", stats, TS_TGID)[0] or self.tgid_of.get(pid, pid)
        proc = self.procs.get(tgid)
        if proc is None:
            return
        utime, stime = struct.unpack_from("=QQ", stats, TS_UTIME)
        proc.cpu_us += utime + stime
        proc.rchar += struct.unpack_from("=Q", stats, TS_READ_CHAR)[0]
        if pid == tgid:
            proc.comm = stats[TS_COMM: TS_COMM + 32].split(b"\0", 1)[0].decode(errors="replace")
            proc.exited = True

    # ---- the counts ----

    def _result(self, before: dict, after: dict) -> dict:
        calibration = hasher_overheads()
        for proc in self.records:  # still running at the end: its name now
            if not proc.exited and not proc.comm:
                proc.comm = _read(f"/proc/{proc.pid}/comm").decode(errors="replace").strip() or "?"
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
        children: dict[int, list[Proc]] = defaultdict(list)
        for proc in self.records:
            if proc.mac == mac and proc.started:
                children[proc.parent].append(proc)
        out = []

        def walk(proc: Proc, depth: int, into: list) -> None:
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
    s, family = _taskstats()
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
                        for attr, value in _attrs(data[offset + 20: offset + size]):
                            stats = next((v for a, v in _attrs(value) if a == TS_TYPE_STATS), None) \
                                if attr == TS_TYPE_AGGR_PID else None
                            if stats is not None:
                                pid = struct.unpack_from("=I", stats, TS_PID)[0]
                                if pid in pids:
                                    found[pids[pid]] = struct.unpack_from("=Q", stats, TS_READ_CHAR)[0]
                    offset += (size + 3) & ~3
    finally:
        _taskstats_op(s, family, TS_ATTR_DEREGISTER)
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


def table(runs: dict[str, dict]) -> str:
    """RUNS: label -> a Watcher result. The per-Mac means, one row per run."""
    rows = ["| run | processes | execs | sudo | macOS shims | Mac CPU s | of it agent daemon | SSH connections | "
            "SSH channels | bytes hashed | hash runs | python3 bytes read | TLS handshakes | of them check-ins |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, result in runs.items():
        p = result["summary"]["per_mac"]
        rows.append(f"| {label} | {p['processes']:g} | {p['execs']:g} | {p['sudo']:g} | {p['shims']:g} | "
                    f"{p['cpu_s']} | {p['daemon_cpu_s']} | {p['ssh_connections']:g} | {p['channels']:g} | "
                    f"{p['bytes_hashed'] / 1e6:.2f} MB | {p['hash_runs']:g} | {p['python_bytes_read'] / 1e6:.2f} MB | "
                    f"{p['tls_handshakes']:g} | {p['agent_checkins']:g} |")
    rows += ["",
             "processes: forks on the Mac (sshd's own included: 3 per SSH connection); execs: programs started; "
             "sudo: processes that ran sudo; macOS shims: the lab's stand-ins for macOS commands (each a python3 -S, "
             "10-15 ms of CPU, a millisecond or two on a real Mac); Mac CPU: all the Mac's processes, the agent's "
             "daemon included; bytes hashed: read by hashing programs (openssl dgst, sha1sum, shasum...), less their "
             "fixed reads; python3 bytes read: by python3 processes that are not shims (Ansible's modules, the "
             "agent's configuration tool): Ansible's copy module hashes the upload there (sha1 and md5) and its "
             "stat module the staged file on a rerun (sha1), in-process, so not in bytes hashed; TLS handshakes: "
             "TCP connections the Mac opened (all HTTPS to the pod here: preflight curl and the agent's check-ins)."]
    notes = []
    for label, result in runs.items():
        if result.get("lost_event_batches"):
            notes.append(f"{label}: {result['lost_event_batches']} batches of kernel events lost: counts are low")
    return "\n".join(rows + notes)


def programs_table(result: dict, top: int = 25) -> str:
    rows = ["| program (last exec'd) | processes per Mac | CPU ms per Mac | bytes read per Mac |", "|---|---|---|---|"]
    for name, r in list(result["summary"]["programs_per_mac"].items())[:top]:
        rows.append(f"| {name} | {r['processes']} | {r['cpu_ms']} | {r['bytes_read']:,} |")
    return "\n".join(rows)


def format_tree(tree: list[dict], width: int = 150) -> str:
    out = []
    for i, channel in enumerate(tree, 1):
        first = channel["channel"]
        out.append(f"channel {i}: {first[:width]}")
        for row in channel["processes"]:
            execs = " => ".join(e[:90] for e in row["execs"]) or "(fork, no exec)"
            out.append(f"  {'  ' * row['depth']}{row['program']:<16} {row['cpu_ms']:>7.1f} ms "
                       f"{row['bytes_read']:>10,} B read  {execs[:width]}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="the lab's directory")
    parser.add_argument("--tree", action="append", default=[], help="list every process this Mac ran, per channel")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--batch-s", type=float, default=0,
                        help="read the kernel's events every so often (0, the default here: at once, so that "
                             "more short-lived processes' command lines are caught)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to watch after --")
    hasher_overheads()
    watcher = Watcher(args.dir.resolve(), detail=set(args.tree), batch_s=args.batch_s).start()
    rc = subprocess.call(command)
    result = watcher.stop()
    result["command"] = command
    result["exit"] = rc
    result["trees"] = {mac: watcher.tree(mac) for mac in args.tree}
    print(table({" ".join(command)[:40]: result}))
    print()
    print(programs_table(result))
    for mac, tree in result["trees"].items():
        print(f"\n{mac}:")
        print(format_tree(tree))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=dict) + "\n")
    sys.exit(rc)


if __name__ == "__main__":
    main()
