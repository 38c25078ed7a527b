"""Each simulated Mac's hardware identity: serial number, hardware UUID, port addresses.

Derived from the lab's seed and the Mac's index only, so a Mac keeps its identity for the
lab's life and a lab started again with the same seed gets the same Macs. Each value is a
seeded permutation of the index (odd multiplications and xor-shifts where the range is a power
of two, a Feistel network on the serial's digits), so no two Macs of a lab ever share one,
which hashing alone could not promise.

Formats, as real Macs show them (see spec: "Laptops, identity and waking"):
- serial: 12 characters, "C02" then 9 of 0-9A-Z without I and O (Apple avoids those two);
- hardware UUID: upper-case 8-4-4-4-12, version 5 and RFC 4122 variant, as IOPlatformUUID is;
- Ethernet a8:20:66:xx:xx:xx and Wi-Fi 3c:22:fb:xx:xx:xx: Apple's OUIs, lower-case;
- Thunderbolt Bridge: a locally administered address (36:...), as macOS makes up for it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

SERIAL_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # 34 symbols: no I, no O
SERIAL_PREFIX = "C02"
SERIAL_DIGITS = 9
ETHERNET_OUI = "a8:20:66"
WIFI_OUI = "3c:22:fb"
BRIDGE_PREFIX = "36"
MAX_INDEX = 1 << 20  # far above any lab (2,000 Macs)


@dataclass(frozen=True)
class Identity:
    """What identifies one simulated Mac's hardware."""

    serial: str
    hardware_uuid: str
    ethernet: str
    wifi: str
    bridge: str  # Thunderbolt Bridge
    provisioning_udid: str  # system_profiler's, on Apple silicon: ECID-based


def _key(seed: int, field: str, bits: int) -> int:
    digest = hashlib.sha256(f"fleetlab-identity:{seed}:{field}".encode()).digest()
    return int.from_bytes(digest, "big") & ((1 << bits) - 1)


def _permute_bits(seed: int, field: str, value: int, bits: int) -> int:
    """A bijection of [0, 2**bits): the same VALUE always maps to the same result, two values never to one."""
    mask = (1 << bits) - 1
    x = value & mask
    for round_ in range(3):
        x = (x * (_key(seed, f"{field}:m{round_}", bits) | 1) + _key(seed, f"{field}:a{round_}", bits)) & mask
        x ^= x >> (bits // 2 + round_)
    return x


def _permute_digits(seed: int, field: str, value: int, radix: int, digits: int) -> int:
    """A bijection of [0, RADIX**DIGITS): a Feistel network on the high and low digits, each
    round adding (modulo) a keyed hash of one half to the other; any round can be undone."""
    low_size = radix ** (digits // 2)
    high_size = radix ** (digits - digits // 2)
    high, low = divmod(value, low_size)
    for round_ in range(4):
        if round_ % 2:
            low = (low + _key(seed, f"{field}:{round_}:{high}", 64)) % low_size
        else:
            high = (high + _key(seed, f"{field}:{round_}:{low}", 64)) % high_size
    return high * low_size + low


def _mac(prefix: str, value: int, octets: int) -> str:
    return prefix + "".join(f":{(value >> (8 * i)) & 0xFF:02x}" for i in reversed(range(octets)))


def serial(seed: int, index: int) -> str:
    value = _permute_digits(seed, "serial", index, len(SERIAL_ALPHABET), SERIAL_DIGITS)
    chars = []
    for _ in range(SERIAL_DIGITS):
        value, digit = divmod(value, len(SERIAL_ALPHABET))
        chars.append(SERIAL_ALPHABET[digit])
    return SERIAL_PREFIX + "".join(reversed(chars))


def hardware_uuid(seed: int, index: int) -> str:
    """122 permuted bits laid into a version-5, RFC-variant UUID, upper-case."""
    x = _permute_bits(seed, "uuid", index, 122)
    node, x = x & ((1 << 48) - 1), x >> 48
    clock, x = x & ((1 << 14) - 1), x >> 14
    hi, x = x & 0xFFF, x >> 12
    mid, low = x & 0xFFFF, x >> 16
    return f"{low:08X}-{mid:04X}-{0x5000 | hi:04X}-{0x8000 | clock:04X}-{node:012X}"


def derive(seed: int, index: int) -> Identity:
    """The identity of the Mac with INDEX (1-based) in a lab started with SEED."""
    if not 1 <= index < MAX_INDEX:
        raise ValueError(f"Mac index {index} out of range")
    nic = _permute_bits(seed, "nic", index, 24)  # Ethernet and Wi-Fi share the NIC part, as on real Macs
    return Identity(
        serial=serial(seed, index),
        hardware_uuid=hardware_uuid(seed, index),
        ethernet=_mac(ETHERNET_OUI, nic, 3),
        wifi=_mac(WIFI_OUI, nic, 3),
        bridge=_mac(BRIDGE_PREFIX, _permute_bits(seed, "bridge", index, 40), 5),
        provisioning_udid=f"00006020-{_permute_bits(seed, 'ecid', index, 64):016X}",
    )


def _next_mac(address: str, step: int) -> str:
    value = (int(address.replace(":", ""), 16) & ~0xFF) | ((int(address[-2:], 16) + step) & 0xFF)
    return ":".join(f"{value:012x}"[k:k + 2] for k in range(0, 12, 2))


def ports(ident: Identity, wifi_only: bool) -> list[dict]:
    """The Mac's network ports in `networksetup -listallhardwareports` order. en0 is the one the
    lab connects (eth0 in the Mac's namespace carries its address): Ethernet on a wired Mac (a
    Mac mini: Wi-Fi is en1), Wi-Fi on a Wi-Fi-only laptop (a MacBook Pro: no Ethernet port)."""
    bridge = {"port": "Thunderbolt Bridge", "device": "bridge0", "address": ident.bridge, "kind": "bridge"}
    if wifi_only:
        return [{"port": "Wi-Fi", "device": "en0", "address": ident.wifi, "kind": "wifi"}, bridge,
                *({"port": f"Thunderbolt {n}", "device": f"en{n}", "address": _next_mac(ident.bridge, 4 * (n - 1)),
                   "kind": "thunderbolt"} for n in (1, 2, 3))]
    return [{"port": "Ethernet", "device": "en0", "address": ident.ethernet, "kind": "ethernet"}, bridge,
            {"port": "Wi-Fi", "device": "en1", "address": ident.wifi, "kind": "wifi"},
            *({"port": f"Thunderbolt {n}", "device": f"en{n + 1}", "address": _next_mac(ident.bridge, 4 * (n - 1)),
               "kind": "thunderbolt"} for n in (1, 2))]


def primary(ident: Identity, wifi_only: bool) -> str:
    """The address en0 (the Mac's eth0) carries: what ARP and magic packets see."""
    return ident.wifi if wifi_only else ident.ethernet
