"""Watches what the lab's Macs do while a tool runs (see bench/macwork.py for what is counted
and how): every fork, exec and exit from the kernel's process events and taskstats, each Mac's
CPU, TCP counters and the pod's check-ins at the window's two ends."""
from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import threading
import time
from collections import defaultdict
from pathlib import Path

from bench import kernel, maccount
from bench.kernel import (BATCH_S, CMDLINE_KEEP, DAEMON_COMM, EV_COMM, EV_EXEC, EV_FORK, PROC_CN_MCAST_IGNORE,
                          TICK, TS_ATTR_DEREGISTER, TS_COMM, TS_PID, TS_READ_CHAR, TS_TGID, TS_TYPE_AGGR_PID,
                          TS_TYPE_PID, TS_TYPE_STATS, TS_UTIME)


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
        self.cn = kernel.connector()
        self.ts, self.family = kernel.taskstats()
        self.owner: dict[int, str] = {}  # tid or tgid -> Mac
        self.procs: dict[int, Proc] = {}  # tgid -> its current Proc (Mac processes only)
        self.records: list[Proc] = []  # every Proc the Macs started (forked), in order
        self.seeded: list[Proc] = []  # the Macs' processes when the window opened
        self.tgid_of: dict[int, int] = {}
        self.counting = False
        self.ns_of: dict[str, str] = {}  # pid namespace -> Mac
        for h in self.hosts:
            ns = kernel.ns(h["pid"], "pid_for_children")
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
        for close in (lambda: kernel.connector_op(self.cn, PROC_CN_MCAST_IGNORE),
                      lambda: kernel.taskstats_op(self.ts, self.family, TS_ATTR_DEREGISTER)):
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
            mac = self.ns_of.get(kernel.ns(pid, "pid"))
            if not mac:
                continue
            fields = kernel.stat_fields(f"/proc/{pid}/stat")
            if not fields:
                continue
            comm = kernel.read(f"/proc/{pid}/comm").decode(errors="replace").strip()
            parent = int(fields[1])
            if self.ns_of.get(kernel.ns(parent, "pid")) != mac:  # PID 1 of the Mac: its sshd listener
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
            mac = self.ns_of.get(kernel.ns(int(entry.name), "pid"))
            if not mac:
                continue
            fields = kernel.stat_fields(f"/proc/{entry.name}/stat")
            if fields:
                mine = int(fields[11]) + int(fields[12])
                cpu[mac] += (mine + int(fields[13]) + int(fields[14])) / TICK
                io = dict(l.split(": ", 1) for l in kernel.read(f"/proc/{entry.name}/io").decode().splitlines() if ": " in l)
                own[int(entry.name)] = (mine / TICK, int(io.get("rchar", 0)))
        checkins: dict[str, int] = defaultdict(int)
        by_address = {a: n for n, a in self.address.items()}
        for line in kernel.read(str(self.pod_log)).splitlines():
            try:
                peer = json.loads(line).get("peer")
            except ValueError:
                continue
            if peer in by_address:
                checkins[by_address[peer]] += 1
        return {"cpu": cpu, "own": own, "tcp": {h["name"]: kernel.tcp(h["pid"]) for h in self.hosts},
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
                raw = kernel.read(f"/proc/{tgid}/cmdline")
                text = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")[:CMDLINE_KEEP]
                if not text:
                    text = "[" + kernel.read(f"/proc/{tgid}/comm").decode(errors="replace").strip() + "]"
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
                for attr, value in kernel.attrs(data[head: offset + size]):
                    if attr != TS_TYPE_AGGR_PID:
                        continue
                    stats = next((v for a, v in kernel.attrs(value) if a == TS_TYPE_STATS), None)
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

    # ---- the counts (bench/maccount.py) ----

    def _result(self, before: dict, after: dict) -> dict:
        return maccount.count(self, before, after)

    def tree(self, mac: str) -> list[dict]:
        """MAC's session programs in order, each with every process it led to (depth-first)."""
        return maccount.tree(self, mac)
