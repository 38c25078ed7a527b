"""Host patterns in an Ansible inventory, read the way ansible-core 2.19 reads them:
`badwolf.example.com:5309`, `[2001:db8::1]:2222`, and ranges such as `mac[01:50]`,
`mac[:5]` (start 0), `mac[01:10:2]` (stride) and `fin-[a:d]`, expanded in order."""
from __future__ import annotations

import ipaddress
import re
import string

from fleetctl.errors import UsageError

# A range inside a name: numeric or one letter each side, optional :step (ansible's grammar).
_ALNUM_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_NUM_RANGE = re.compile(r"\[[0-9]+:[0-9]+(?::[0-9]+)?\]")
_HEX_RANGE = re.compile(r"\[[0-9a-f]+:[0-9a-f]+(?::[0-9]+)?\]", re.I)
_LABEL = rf"(?:\w|{_ALNUM_RANGE})(?:[\w-]|{_ALNUM_RANGE})*(?<![_-])"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.I)
_BRACKETED_PORT = re.compile(r"\[(.+)\]:([0-9]+)")
_HOST_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)")


def _ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(_NUM_RANGE.fullmatch(p) or (re.fullmatch(r"[0-9]{1,3}", p) and int(p) <= 255)
                                   for p in parts)


def _ipv6(text: str) -> bool:
    if "%" in text:
        return False
    try:
        ipaddress.IPv6Address(_HEX_RANGE.sub("0", text))
    except ValueError:
        return False
    return True


def is_address(text: str) -> bool:
    """An IPv4 or IPv6 address or a DNS-style name, any of them possibly holding ranges."""
    return _ipv4(text) or _ipv6(text) or bool(_HOSTNAME.fullmatch(text))


def split_port(pattern: str) -> tuple[str, int | None]:
    """`host:port` and `[host]:port` -> (host, port); a name Ansible would not parse keeps its
    colon and gets no port (as in ansible-core); a bare IPv6 address never has a port."""
    address, port = pattern, None
    for regex in (_BRACKETED_PORT, _HOST_PORT):  # both, in turn, as ansible-core does
        match = regex.fullmatch(address)
        if match:
            address, port = match[1], int(match[2])
    if not is_address(address):
        return pattern, None
    return address, port


def expand(pattern: str, where: str) -> list[str]:
    """`mac[01:03].corp` -> mac01.corp, mac02.corp, mac03.corp; `[a:c]`, `[:2]`, `[1:9:2]` too."""
    if "[" not in pattern:
        return [pattern]
    start, end = pattern.index("["), pattern.find("]")
    if end < start:
        raise UsageError(f"{where}: host range in {pattern!r} is not closed; write e.g. mac[01:50]")
    head, spec, tail = pattern[:start], pattern[start + 1:end], pattern[end + 1:]
    values = _range_values(spec, f"{where}: host range [{spec}]")
    if not values:
        raise UsageError(f"{where}: host range [{spec}] is empty (Ansible would silently add no host); "
                         "write it low to high, e.g. mac[01:50]")
    return [name for value in values for name in expand(head + value + tail, where)]


def _range_values(spec: str, where: str) -> list[str]:
    bounds = spec.split(":")
    if len(bounds) not in (2, 3):
        raise UsageError(f"{where} must be begin:end or begin:end:step")
    first, last = bounds[0] or "0", bounds[1]
    step = bounds[2] if len(bounds) == 3 else "1"
    if not last:
        raise UsageError(f"{where} must give an end value")
    width = len(first) if first[0] == "0" and len(first) > 1 else 0
    if width and width != len(last):
        raise UsageError(f"{where}: a zero-padded range needs begin and end of the same length, e.g. [01:50]")
    try:
        letters = string.ascii_letters
        if first in letters and last in letters:
            low, high = letters.index(first), letters.index(last)
            if low > high:
                raise UsageError(f"{where} must go from low to high")
            return list(letters[low:high + 1:int(step)])
        return [str(n).zfill(width) for n in range(int(first), int(last) + 1, int(step))]
    except ValueError:
        raise UsageError(f"{where} is mixed or has a zero step; write e.g. mac[01:50], [a:f] or [1:9:2]") from None


def split_limit(limit: str) -> list[str]:
    """--limit terms: comma-separated; without commas, colon-separated (`all:!lab`), except an
    IPv6 address and the colons of a `[x:y]` range."""
    if "," in limit:
        return [t.strip() for t in limit.split(",") if t.strip()]
    if _ipv6(limit) or _BRACKETED_PORT.fullmatch(limit):
        return [limit]
    return [t for t in re.findall(r"(?:[^:\[\]]|\[[^\]]*\])+", limit) if t]
