"""How a simulated Mac leaves its LAN and comes back: away, asleep, awake, renumbered.

What a client sees is what it sees of a real Mac that is not there: nothing answers at its
address, not even ARP. The controller's connect fails with "No route to host" after about 3 s
(its ARP requests go unanswered; `forget` drops what it knew, as if the Mac had been gone for
longer than an ARP entry lives), never "Connection refused" (that would be a Mac at its desk
with Remote Login off). Another Mac that still has the address in its ARP cache sees its SYNs
go unanswered instead ("Connection timed out") until that entry fails.
- away: its link goes down (the laptop left: unplugged, out of the Wi-Fi); it comes back with
  the same address.
- asleep, wired: its address goes, its link stays up (the NIC listens for a magic packet) and
  its processes are stopped (SIGSTOP), as a sleeping Mac runs nothing; waking reverses both.
- asleep, Wi-Fi only: its link goes down too (the radio is off).
- renumbered: its link goes down, it gets another address, it comes back.
Each return is announced with gratuitous ARP from the Mac, as macOS does on joining a network,
so neighbours learn where the address now lives.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from fleetctl.errors import LabError
from fleetctl.lab import network

CLONE_NEWNET = 0x40000000
CARRIER_TIMEOUT_S = 2.0


@contextmanager
def _inside(ns: str):
    """This thread in network namespace NS for the block (sockets made there stay there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        there = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    except OSError:
        os.close(home)
        raise LabError(f"no network namespace {ns}: is the lab still up?") from None
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise LabError(f"cannot enter {ns}: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise SystemExit(f"fleetlab: cannot leave {ns}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(there)
        os.close(home)


def garp(mac: str, address: str) -> bytes:
    """A gratuitous ARP request: MAC says it has ADDRESS, to everyone on the LAN."""
    hw, ip = bytes.fromhex(mac.replace(":", "")), socket.inet_aton(address)
    return b"\xff" * 6 + hw + b"\x08\x06" + bytes.fromhex("0001080006040001") + hw + ip + bytes(6) + ip


def announce(slot: int, index: int, mac: str, address: str) -> None:
    """Send a gratuitous ARP from the Mac's eth0 (once its link has carrier; bounded wait)."""
    carrier = Path(f"/sys/class/net/{network.veth(slot, index)}/operstate")
    deadline = time.monotonic() + CARRIER_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if carrier.read_text().strip() == "up":
                break
        except OSError:
            return  # the Mac is gone (lab down)
        time.sleep(0.02)
    with _inside(network.netns(slot, index)):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with s:
        s.bind(("eth0", 0))
        s.send(garp(mac, address))


def _signal_all(slot: int, index: int, sig: int) -> None:
    for pid in network.namespace_pids(network.netns(slot, index)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def leave(slot: int, index: int, address: str) -> None:
    """The laptop left: link down, nothing answers."""
    network.in_mac(slot, index, ["link set eth0 down"])
    network.forget(slot, address)


def come_back(slot: int, index: int, address: str, direct: bool) -> None:
    """Back on the LAN with its address (announce it afterwards)."""
    network.in_mac(slot, index, network.mac_up(slot, index, address, direct))


def sleep(slot: int, index: int, address: str, wifi_only: bool) -> None:
    """Asleep: no address (no ARP answer); a wired Mac's link stays up for the magic packet."""
    network.in_mac(slot, index, ["addr flush dev eth0", *(["link set eth0 down"] if wifi_only else [])])
    network.forget(slot, address)
    _signal_all(slot, index, signal.SIGSTOP)


def wake(slot: int, index: int, address: str, direct: bool) -> None:
    """Awake: its processes run again, then it is back on the LAN (announce it afterwards)."""
    _signal_all(slot, index, signal.SIGCONT)
    come_back(slot, index, address, direct)


def renumber(slot: int, moves: list[tuple[int, str, str, bool]]) -> None:
    """MOVES: (index, old address, new address, direct) of Macs that left and came back, each
    given another's old address by DHCP. All leave first, so no address is ever on two Macs."""
    for index, old, _, _ in moves:
        network.in_mac(slot, index, ["link set eth0 down", "addr flush dev eth0"])
        network.forget(slot, old)
    for index, _, new, direct in moves:
        come_back(slot, index, new, direct)
