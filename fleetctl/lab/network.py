"""The lab network: a bridge the controller sits on, a network namespace per Mac.

Addresses come from 198.18.0.0/15 (RFC 2544, reserved for network test labs). Lab slot k
(several labs may run at once) uses hosts 198.18.32k.0/19 and puts its pod at 198.19.k.1,
reachable from a Mac only through a route the proxy-only persona does not get.

A branch-office site i is a bridge of its own (flab<slot>s<i>) for its Macs' LAN, joined to the
lab's bridge by one veth pair, the uplink (fl<slot>u<i>m on the lab's bridge, fl<slot>u<i>s on the
site's), shaped with tbf in both directions. Addresses stay in the lab's /19, so nothing is routed:
the site reaches the controller, the pod and the proxy only through its uplink. The uplink acts
as the router a real office has there for Wake-on-LAN: magic packets (UDP to port 7 or 9,
EtherType 0x0842) do not cross it either way (no_wake_across), so a Mac wakes only from its LAN.

Each Mac's eth0 carries its primary port's hardware address (lab/identity.py) and a route for
the limited broadcast (255.255.255.255), which a Mac sends out of its primary interface.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fleetctl.errors import LabError

MAX_SLOTS = 8
POD_PORT = 443
PROXY_PORT = 3128
SLOW_RATE = "40mbit"
KERNEL_HZ = 250  # Debian's CONFIG_HZ: a tbf bucket holds at least one tick's worth of bytes
MIN_BURST_BYTES = 4000  # 32kbit
WAKE_PORTS = (7, 9)  # Wake-on-LAN's UDP ports
WOL_ETHERTYPE = 0x0842


@dataclass(frozen=True)
class MacLink:
    """How one reachable Mac joins the network."""

    index: int
    mac: str  # its eth0's hardware address
    direct: bool = True  # has a route to the pod (proxy-only Macs do not)
    slow: bool = False  # its link shaped to SLOW_RATE


def claim_slot() -> int:
    """The first free slot, taken at once by creating its bridge: `ip link add` fails for all but
    one of several labs starting together, so two labs never share a slot (nor, when one of them
    fails and cleans up, lose each other's namespaces)."""
    for k in range(MAX_SLOTS):
        if Path(f"/sys/class/net/{bridge(k)}").exists():
            continue
        done = subprocess.run(["ip", "link", "add", bridge(k), "type", "bridge"], capture_output=True, text=True)
        if done.returncode == 0:
            _remove_leftovers(k)
            _ip_batch([
                f"addr add {controller_address(k)}/19 dev {bridge(k)}",
                f"addr add {pod_address(k)}/32 dev {bridge(k)}",
                f"link set {bridge(k)} up",
            ])
            return k
        if "exists" not in done.stderr:
            raise LabError(f"network setup failed: {done.stderr.strip()}")
    raise LabError(f"all {MAX_SLOTS} lab slots are in use; stop a lab with `fleetctl lab down --dir DIR`")


def _remove_leftovers(slot: int) -> None:
    """What a lab killed mid-way left in SLOT (its bridge is gone, so no live lab owns them):
    processes in its namespaces, the namespaces, Mac veths, site bridges and uplinks."""
    names = [n.name for n in Path("/run/netns").iterdir() if n.name.startswith(f"flab{slot}-")] \
        if Path("/run/netns").exists() else []
    for ns in names:
        for pid in namespace_pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    delete_namespaces(names)
    links = [d.name for d in Path("/sys/class/net").iterdir()
             if d.name.startswith((f"fl{slot}h", f"fl{slot}u", f"flab{slot}s"))]
    delete_links(links)


def make_room(macs: int) -> None:
    """Every namespace shares the kernel's one neighbour (ARP) table: Debian's limit of 1,024
    entries cannot hold 1,000 Macs seen from both ends. Raise it (never lower it)."""
    for name, need in (("gc_thresh1", 2 * macs), ("gc_thresh2", 4 * macs), ("gc_thresh3", 8 * macs)):
        path = Path("/proc/sys/net/ipv4/neigh/default") / name
        try:
            if int(path.read_text()) < need:
                path.write_text(f"{need}\n")
        except (OSError, ValueError):
            pass  # not ours to insist on: the lab still works for smaller fleets


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


def site_bridge(slot: int, site: int) -> str:
    return f"flab{slot}s{site}"


def uplink(slot: int, site: int) -> tuple[str, str]:
    """The uplink veth pair of SITE: (the end on the lab's bridge, the end on the site's bridge)."""
    return f"fl{slot}u{site}m", f"fl{slot}u{site}s"


def _ip_batch(lines: list[str], netns_name: str | None = None) -> None:
    argv = ["ip", *(["-n", netns_name] if netns_name else []), "-batch", "-"]
    done = subprocess.run(argv, input="\n".join(lines) + "\n", text=True, capture_output=True)
    if done.returncode != 0:
        raise LabError(f"network setup failed: {done.stderr.strip()}")


def _no_ipv6(dev: str) -> None:
    """A device of the lab's own plumbing sends nothing by itself (no IPv6 autoconfiguration)."""
    try:
        Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").write_text("1\n")
    except OSError:
        pass  # IPv6 disabled altogether


def tbf(dev: str, rate_bps: int) -> None:
    """Shape DEV's egress to RATE_BPS bits/s (tbf: netem is not available on every machine)."""
    burst = max(MIN_BURST_BYTES, rate_bps // 8 // KERNEL_HZ)
    done = subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf",
                           "rate", f"{rate_bps}bit", "burst", str(burst), "latency", "400ms"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"shaping {dev} to {rate_bps} bit/s failed: {done.stderr.strip()}")


def create_site(slot: int, site: int, rate_bps: int) -> None:
    """SITE's bridge and its uplink to the lab's bridge, shaped to RATE_BPS both ways."""
    br, main_end, site_end = site_bridge(slot, site), *uplink(slot, site)
    _ip_batch([
        f"link add {br} type bridge",
        f"link add {main_end} type veth peer name {site_end}",
        f"link set {main_end} master {bridge(slot)}",
        f"link set {site_end} master {br}",
    ])
    for dev in (br, main_end, site_end):
        _no_ipv6(dev)
    for dev in (main_end, site_end):
        tbf(dev, rate_bps)
        no_wake_across(dev)
    _ip_batch([f"link set {dev} up" for dev in (br, main_end, site_end)])


def no_wake_across(dev: str) -> None:
    """Drop Wake-on-LAN packets leaving through DEV (an uplink end, shaped by tbf 1:), as the
    router between two subnets does: tbf's child becomes an htb whose class 10:1 passes
    everything else unshaped (tbf still shapes) and whose class 10:2, fed by u32 filters on UDP
    ports 7 and 9 and EtherType 0x0842, ends in a pfifo of length 0. (This kernel has u32 but
    no tc actions such as gact drop, nor flower.)"""
    lines = [f"qdisc add dev {dev} parent 1:1 handle 10: htb default 1",
             f"class add dev {dev} parent 10: classid 10:1 htb rate 10gbit quantum 60000",
             f"class add dev {dev} parent 10: classid 10:2 htb rate 8kbit quantum 1514",
             f"qdisc add dev {dev} parent 10:2 handle 20: pfifo limit 0"]
    lines += [f"filter add dev {dev} parent 10: protocol ip prio {n} u32 match ip protocol 17 0xff "
              f"match ip dport {port} 0xffff flowid 10:2" for n, port in enumerate(WAKE_PORTS, start=1)]
    lines.append(f"filter add dev {dev} parent 10: protocol {WOL_ETHERTYPE:#06x} prio 9 u32 match u32 0 0 flowid 10:2")
    done = subprocess.run(["tc", "-batch", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"keeping Wake-on-LAN off {dev} failed: {done.stderr.strip()}")


def wake_drops(dev: str) -> int:
    """Magic packets no_wake_across dropped on DEV so far."""
    done = subprocess.run(["tc", "-s", "qdisc", "show", "dev", dev], capture_output=True, text=True)
    lines = done.stdout.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("qdisc pfifo 20:") and n + 1 < len(lines) and "dropped " in lines[n + 1]:
            return int(lines[n + 1].split("dropped ")[1].split(",")[0])
    return 0


def mac_up(slot: int, index: int, address: str, direct: bool) -> list[str]:
    """`ip` lines, run in the Mac's namespace, that put it on the LAN at ADDRESS (again)."""
    lines = [f"addr replace {address}/19 brd + dev eth0", "link set eth0 up",
             "route replace 255.255.255.255/32 dev eth0"]  # the limited broadcast leaves by eth0, as on a Mac
    if direct:
        lines.append(f"route replace {pod_address(slot)}/32 via {controller_address(slot)}")
    return lines


def in_mac(slot: int, index: int, lines: list[str]) -> None:
    """Run `ip` LINES in Mac INDEX's network namespace."""
    _ip_batch(lines, netns(slot, index))


def forget(slot: int, address: str) -> None:
    """The controller forgets ADDRESS's hardware address, as it would once the Mac had been gone
    for longer than an ARP entry lives: its next connection asks anew (and nobody answers)."""
    subprocess.run(["ip", "neigh", "flush", "to", address, "dev", bridge(slot)], capture_output=True)


def uplink_tx_bytes(slot: int, site: int) -> int:
    """Bytes the lab's side sent into SITE over its uplink (controller, pod, proxy -> site)."""
    return _counter(uplink(slot, site)[0], "tx_bytes")


def uplink_rx_bytes(slot: int, site: int) -> int:
    """Bytes SITE sent out over its uplink to the lab's side (site -> controller, pod, proxy)."""
    return _counter(uplink(slot, site)[0], "rx_bytes")


def _counter(dev: str, name: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{dev}/statistics/{name}").read_text())
    except OSError:
        raise LabError(f"no uplink {dev}: is the lab with this site still up?") from None


def create_hosts(slot: int, hosts: list[MacLink], bridges: dict[int, str] | None = None) -> None:
    """A namespace and a veth pair for every reachable Mac in HOSTS, eth0 inside with its address.
    BRIDGES: the bridge of a Mac (by index) that is not on the lab's own, i.e. its site's."""
    root: list[str] = []
    for h in hosts:
        ns, v = netns(slot, h.index), veth(slot, h.index)
        br = (bridges or {}).get(h.index, bridge(slot))
        root += [f"netns add {ns}", f"link add {v} type veth peer name eth0 address {h.mac} netns {ns}",
                 f"link set {v} master {br} up"]
    _ip_batch(root)
    for h in hosts:
        _ip_batch(["link set lo up", *mac_up(slot, h.index, host_address(slot, h.index), h.direct)],
                  netns(slot, h.index))
        if h.slow:
            subprocess.run(
                ["tc", "qdisc", "add", "dev", veth(slot, h.index), "root", "tbf",
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


def delete_links(names: list[str]) -> None:
    """Remove these links where they exist (one end of a veth pair takes the other along)."""
    gone = [n for n in names if Path(f"/sys/class/net/{n}").exists()]
    if gone:
        subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"link del {n}\n" for n in gone),
                       text=True, capture_output=True)


def delete_bridge(slot: int) -> None:
    delete_links([bridge(slot)])
