"""The kernel interfaces bench/macwork.py reads: the process-events connector (netlink, as
`forkstat` uses it), taskstats (generic netlink, as `getdelays` uses it) and a few /proc files.
Constants and layouts are the kernel's (linux/cn_proc.h, linux/taskstats.h)."""
from __future__ import annotations

import os
import socket
import struct
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
DAEMON_COMM = "qualys-cloud-ag"  # the simulated agent names itself as the real daemon is named
TICK = os.sysconf("SC_CLK_TCK")
CMDLINE_KEEP = 400
BATCH_S = 0.005  # while events come, the watcher reads its sockets every 5 ms: one wake-up for many


def nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * ((4 - size % 4) % 4)


def attrs(data: bytes, offset: int = 0):
    while offset + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, offset)
        if size < 4:
            return
        yield kind & 0x3FFF, data[offset + 4: offset + size]
        offset += (size + 3) & ~3


def connector() -> socket.socket:
    """Subscribed to the kernel's process events (fork, exec, comm, exit), machine-wide."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    s.bind((0, CN_IDX_PROC))
    connector_op(s, PROC_CN_MCAST_LISTEN)
    s.setblocking(False)
    return s


def connector_op(s: socket.socket, op: int) -> None:
    payload = struct.pack("=I", op)
    cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    s.send(struct.pack("=IHHII", 16 + len(cn), NLMSG_DONE, 0, 0, 0) + cn)


def possible_cpus() -> bytes:
    try:
        return Path("/sys/devices/system/cpu/possible").read_text().strip().encode() + b"\0"
    except OSError:
        return f"0-{(os.cpu_count() or 1) - 1}".encode() + b"\0"


def taskstats() -> tuple[socket.socket, int]:
    """A generic-netlink socket registered for every CPU's task exits (taskstats)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    s.bind((0, 0))
    body = struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0) + nla(CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0")
    s.send(struct.pack("=IHHII", 16 + len(body), GENL_ID_CTRL, 1, 1, 0) + body)
    reply = s.recv(65536)
    family = None
    for kind, value in attrs(reply, 20):
        if kind == CTRL_ATTR_FAMILY_ID:
            family = struct.unpack_from("=H", value)[0]
    if family is None:
        raise OSError("the kernel has no TASKSTATS generic-netlink family")
    taskstats_op(s, family, TS_ATTR_REGISTER)
    s.setblocking(False)
    return s, family


def taskstats_op(s: socket.socket, family: int, attr: int) -> None:
    body = struct.pack("=BBH", TASKSTATS_CMD_GET, 1, 0) + nla(attr, possible_cpus())
    s.send(struct.pack("=IHHII", 16 + len(body), family, 1 | 4, 2, 0) + body)  # request, ack


def ns(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def stat_fields(path: str) -> list[str] | None:
    try:
        with open(path) as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def tcp(pid: int) -> dict[str, int]:
    """The Tcp counters of PID's network namespace (/proc/PID/net/snmp)."""
    lines = [l.split() for l in read(f"/proc/{pid}/net/snmp").decode().splitlines() if l.startswith("Tcp:")]
    return dict(zip(lines[0][1:], (int(x) for x in lines[1][1:]))) if len(lines) == 2 else {}

