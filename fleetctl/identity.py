"""Which Mac answered: its hardware identity, recorded at first contact and checked at every later one.

Laptops change addresses: DHCP may give a Mac's old address to another Mac. fleetctl records
each Mac's serial number and hardware UUID (what `ioreg -rd1 -c IOPlatformExpertDevice` prints),
its wired Ethernet address (`networksetup -listallhardwareports`, for Wake-on-LAN) and its SSH
host key, under its inventory name. A different Mac at that name's address is never acted on:
the reason names both serials. A name that resolves by DNS keeps working when the Mac moves.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fleetctl import facts
from fleetctl.errors import UsageError
from fleetctl.journal import Journal

ETHER = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class Identity:
    serial: str | None
    hardware_uuid: str | None
    ether: str | None = None  # wired Ethernet address; None: none recorded (a Wi-Fi-only laptop)
    host_key: str | None = None  # SHA256:… of the SSH host key, as OpenSSH prints it
    address: str | None = None
    first_seen: float | None = None

    def describe(self) -> str:
        return f"serial {self.serial or 'unknown'}" + (f", hardware UUID {self.hardware_uuid}" if self.hardware_uuid else "")


def from_probe(found: dict[str, list[str]], host_key: str | None, address: str) -> Identity:
    """What the probe printed (serial=, hardware_uuid=, ether=): a Mac's words, so checked for shape."""
    serial = facts.first(found, "serial")
    uuid = facts.first(found, "hardware_uuid").upper()
    ether = facts.first(found, "ether").lower()
    return Identity(serial if re.fullmatch(r"[A-Z0-9]{8,14}", serial) else None,
                    uuid if re.fullmatch(r"[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}", uuid) else None,
                    ether if ETHER.fullmatch(ether) else None, host_key, address)


class Book:
    """The identities one inventory's Macs were recorded with (in the journal, kept across runs)."""

    def __init__(self, journal: Journal, inventory: str):
        self.journal, self.inventory = journal, inventory
        self.lock = threading.Lock()
        self.known: dict[str, Identity] = {}
        for name, serial, uuid, ether, key, address, first_seen, _ in journal.identities(inventory):
            self.known[name] = Identity(serial, uuid, ether, key, address, first_seen)

    def get(self, name: str) -> Identity | None:
        with self.lock:
            return self.known.get(name)

    def mismatch(self, name: str, seen: Identity) -> str | None:
        """Why the Mac that answered is not NAME's, or None (first contact, or the same Mac)."""
        recorded = self.get(name)
        if recorded is None:
            return None
        differs = (recorded.serial and seen.serial and recorded.serial != seen.serial) or \
                  (recorded.hardware_uuid and seen.hardware_uuid and recorded.hardware_uuid != seen.hardware_uuid)
        if not differs:
            return None
        other = self.owner(seen, exclude=name)
        return (f"a different Mac answered at {seen.address}: {seen.describe()}"
                + (f" (that is {other})" if other else "")
                + f", not {name}'s {recorded.describe()} recorded {_when(recorded.first_seen)}; not acted on. "
                  f"If {name} was replaced: fleetctl identities -i INVENTORY --forget {name}")

    def changed_key(self, name: str, address: str, presented: str) -> str | None:
        """A refused host key that is another recorded Mac's: the reason names both Macs."""
        with self.lock:
            other = next(((n, i) for n, i in self.known.items() if i.host_key == presented and n != name), None)
        if other is None:
            return None
        recorded = self.get(name)
        return (f"a different Mac answered at {address}: its host key is {other[0]}'s ({other[1].describe()}), "
                f"not {name}'s" + (f" ({recorded.describe()})" if recorded else "")
                + "; refused (the address was probably given to another Mac by DHCP)")

    def owner(self, seen: Identity, exclude: str) -> str | None:
        with self.lock:
            return next((f"{n} in this inventory" for n, i in self.known.items()
                         if n != exclude and i.serial and i.serial == seen.serial), None)

    def record(self, name: str, seen: Identity) -> None:
        self.journal.save_identity(self.inventory, name, seen.serial, seen.hardware_uuid, seen.ether, seen.host_key,
                                   seen.address or "")
        with self.lock:
            old = self.known.get(name)
            self.known[name] = Identity(
                (old and old.serial) or seen.serial, (old and old.hardware_uuid) or seen.hardware_uuid,
                seen.ether or (old and old.ether), seen.host_key, seen.address,
                (old and old.first_seen) or datetime.now().timestamp())


def _when(ts: float | None) -> str:
    return f"on {datetime.fromtimestamp(ts):%Y-%m-%d %H:%M}" if ts else "earlier"


def show(console, inventory_path: Path, forget: tuple[str, ...], journal: Journal | None = None) -> int:
    """`fleetctl identities`: the table, or forget some names; 2 when a name to forget is unknown."""
    from rich.table import Table

    journal = journal or Journal()
    inventory = str(inventory_path.resolve())
    if forget:
        unknown = [name for name in forget if not journal.forget_identity(inventory, name)]
        for name in forget:
            if name not in unknown:
                console.print(f"{name}: forgotten; its next contact records the Mac that answers")
        if unknown:
            raise UsageError(f"no identity recorded for {', '.join(unknown)} in {inventory}")
        return 0
    table = Table(title=f"identities recorded for {inventory}")
    for col in ("host", "serial", "hardware UUID", "Ethernet", "host key", "address", "first seen", "last seen"):
        table.add_column(col, overflow="fold")
    for name, serial, uuid, ether, key, address, first_seen, last_seen in journal.identities(inventory):
        table.add_row(name, serial or "-", uuid or "-", ether or "-", key or "-", address or "-",
                      _stamp(first_seen), _stamp(last_seen))
    console.print(table)
    return 0


def _stamp(ts: float | None) -> str:
    return f"{datetime.fromtimestamp(ts):%Y-%m-%d %H:%M}" if ts else "-"
