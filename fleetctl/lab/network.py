"""The lab network: a bridge the controller sits on, a network namespace per Mac.

Addresses come from 198.18.0.0/15 (RFC 2544, reserved for network test labs). Lab slot k
(several labs may run at once) uses hosts 198.18.32k.0/19 and puts its pod at 198.19.k.1,
reachable from a Mac only through a route the proxy-only persona does not get.
"""
from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from fleetctl.errors import LabError

MAX_SLOTS = 8
POD_PORT = 443
PROXY_PORT = 3128
SLOW_RATE = "40mbit"


def free_slot() -> int:
    for k in range(MAX_SLOTS):
        if not Path(f"/sys/class/net/flab{k}").exists():
            return k
    raise LabError(f"all {MAX_SLOTS} lab slots are in use; stop a lab with `fleetctl lab down --dir DIR`")


def bridge(slot: int) -> str:
    return f"flab{slot}"


def controller_address(slot: int) -> str:
    return str(ipaddress.IPv4Address("198.18.0.1") + (slot << 13))


def pod_address(slot: int) -> str:
    return f"198.19.{slot}.1"


def host_address(slot: int, index: int) -> str:
    if not 1 <= index <= 8000:
        raise LabError(f"host index {index} out of range")
    return str(ipaddress.IPv4Address("198.18.0.0") + (slot << 13) + 9 + index)


def netns(slot: int, index: int) -> str:
    return f"flab{slot}-mac-{index:03d}"


def veth(slot: int, index: int) -> str:
    return f"fl{slot}h{index:03d}"


def _ip_batch(lines: list[str], netns_name: str | None = None) -> None:
    argv = ["ip", *(["-n", netns_name] if netns_name else []), "-batch", "-"]
    done = subprocess.run(argv, input="\n".join(lines) + "\n", text=True, capture_output=True)
    if done.returncode != 0:
        raise LabError(f"network setup failed: {done.stderr.strip()}")


def create_bridge(slot: int) -> None:
    br = bridge(slot)
    _ip_batch([
        f"link add {br} type bridge",
        f"addr add {controller_address(slot)}/19 dev {br}",
        f"addr add {pod_address(slot)}/32 dev {br}",
        f"link set {br} up",
    ])


def create_hosts(slot: int, hosts: list[tuple[int, bool, bool]]) -> None:
    """HOSTS: (index, can reach the pod directly, slow link) for every reachable Mac."""
    br = bridge(slot)
    root: list[str] = []
    for index, _, _ in hosts:
        ns, v = netns(slot, index), veth(slot, index)
        root += [f"netns add {ns}", f"link add {v} type veth peer name eth0 netns {ns}", f"link set {v} master {br} up"]
    _ip_batch(root)
    for index, direct, slow in hosts:
        lines = [
            "link set lo up",
            f"addr add {host_address(slot, index)}/19 dev eth0",
            "link set eth0 up",
        ]
        if direct:
            lines.append(f"route add {pod_address(slot)}/32 via {controller_address(slot)}")
        _ip_batch(lines, netns(slot, index))
        if slow:
            subprocess.run(
                ["tc", "qdisc", "add", "dev", veth(slot, index), "root", "tbf",
                 "rate", SLOW_RATE, "burst", "32kbit", "latency", "400ms"],
                check=True, capture_output=True,
            )


def namespace_pids(ns: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def delete_namespaces(names: list[str]) -> None:
    existing = set(Path("/run/netns").iterdir()) if Path("/run/netns").exists() else set()
    gone = [n for n in names if Path("/run/netns", n) in existing]
    if gone:
        subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in gone),
                       text=True, capture_output=True)


def delete_bridge(slot: int) -> None:
    if Path(f"/sys/class/net/{bridge(slot)}").exists():
        subprocess.run(["ip", "link", "del", bridge(slot)], capture_output=True)
