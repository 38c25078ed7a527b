"""Wake-on-LAN as a sleeping Mac's network card sees it: which frames wake it.

A magic packet is six 0xFF bytes, then the card's hardware address sixteen times, anywhere in
the payload of a frame addressed to the card (or broadcast): UDP to port 7 or 9 (usually to a
broadcast address), or an Ethernet frame of type 0x0842. Pure functions, no sockets.
"""
from __future__ import annotations

BROADCAST = b"\xff" * 6
ETHERTYPE_IPV4 = b"\x08\x00"
ETHERTYPE_WOL = b"\x08\x42"
UDP = 17
PORTS = (7, 9)


def address_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def magic(mac: str) -> bytes:
    """The magic packet for MAC (a:b:c:d:e:f)."""
    return b"\xff" * 6 + address_bytes(mac) * 16


def payload(frame: bytes) -> bytes | None:
    """The part of FRAME a card scans for a magic packet, or None if it is no Wake-on-LAN frame."""
    if len(frame) < 14:
        return None
    kind = frame[12:14]
    if kind == ETHERTYPE_WOL:
        return frame[14:]
    if kind != ETHERTYPE_IPV4 or len(frame) < 34 or frame[14] >> 4 != 4 or frame[23] != UDP:
        return None
    udp = 14 + (frame[14] & 0x0F) * 4
    if len(frame) < udp + 8 or int.from_bytes(frame[udp + 2:udp + 4], "big") not in PORTS:
        return None
    return frame[udp + 8:]


def wakes(frame: bytes, mac: str) -> bool:
    """Does FRAME, arriving at the card with hardware address MAC, wake its Mac?"""
    own = address_bytes(mac)
    if frame[:6] not in (own, BROADCAST):
        return False
    body = payload(frame)
    return body is not None and magic(mac) in body


def sender(frame: bytes) -> str:
    """Who sent FRAME: its source hardware address, and its IPv4 source if it has one."""
    src = ":".join(f"{b:02x}" for b in frame[6:12])
    if frame[12:14] == ETHERTYPE_IPV4 and len(frame) >= 30:
        return f"{src} ({'.'.join(str(b) for b in frame[26:30])})"
    return src
