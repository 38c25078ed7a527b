"""Branch offices: each package crosses a site's uplink once, to one Mac of the site (the relay);
its neighbours fetch it over their LAN with macOS's own `ssh` and check its sha256.

The fetch is authorised for one run and one file: a one-time key whose authorized_keys entry on
the relay is `restrict`ed, forced to `cat` the relay's copy, and accepted only `from=` the
site's addresses. A relay is in the journal before its key is written, so the keys of a killed
run are removed by `fleetctl resume`; a finished run removes its own. No secret of the run
(activation keys, passwords) ever reaches the relay or another Mac.
"""
from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetctl import render, ssh
from fleetctl.plan import HostPlan, Package

MAX_RELAYS = 3  # relays tried per site and package before its Macs all upload directly
WAIT_S = 1800.0  # bound on waiting for a relay to have the package
MARKER = "fleetctl-relay:"  # comment on every authorized_keys line fleetctl adds
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")  # the relay copy's path goes into a forced command


@dataclass(frozen=True)
class OneTimeKey:
    private: str  # OpenSSH format, for the fetching Macs' ssh -i
    public: str  # "ssh-ed25519 AAAA...", for the relay's authorized_keys

    @classmethod
    def new(cls) -> "OneTimeKey":
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        return cls(private, public.decode())


@dataclass(frozen=True)
class Offer:
    """A package staged on a relay, and how a neighbour may fetch it."""

    relay: str
    address: str
    port: int
    user: str
    path: str
    host_key: tuple[str, str]  # (type, base64) of the relay's SSH host key, pinned for the fetch
    key: OneTimeKey

    @property
    def known_hosts_line(self) -> str:
        where = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{where} {self.host_key[0]} {self.host_key[1]}"


@dataclass
class _Package:
    """One package at one site: who relays it, what is offered, which relays failed."""

    relay: str | None = None
    offer: Offer | None = None
    failed: list[str] = field(default_factory=list)


class Site:
    def __init__(self, name: str, addresses: dict[str, str], preferred: str | None):
        self.name, self.addresses, self.preferred = name, addresses, preferred
        self.cond = threading.Condition()
        self.running: set[str] = set()
        self.gone: set[str] = set()
        self.claimed: dict[str, str] = {}  # host -> sha256 of the package it needs
        self.packages: dict[str, _Package] = {}

    def _wait_for_preferred(self, name: str, sha256: str) -> bool:
        p = self.preferred
        return bool(p and p != name and p in self.running and p not in self.gone
                    and self.claimed.get(p, sha256) == sha256 and p not in self.packages[sha256].failed)

    def claim(self, name: str, sha256: str, wait_s: float = WAIT_S) -> tuple[str, Offer | None]:
        """("relay", None): upload it and offer it; ("fetch", offer); ("direct", None)."""
        deadline = time.monotonic() + wait_s
        with self.cond:
            self.claimed[name] = sha256
            pkg = self.packages.setdefault(sha256, _Package())
            while True:
                if pkg.offer:
                    return "fetch", pkg.offer
                if len(pkg.failed) >= MAX_RELAYS:
                    return "direct", None
                if pkg.relay is None and not self._wait_for_preferred(name, sha256):
                    pkg.relay = name
                    return "relay", None
                left = deadline - time.monotonic()
                if left <= 0:
                    return "direct", None
                self.cond.wait(left)

    def offered(self, sha256: str, offer: Offer) -> None:
        with self.cond:
            self.packages[sha256].offer = offer
            self.cond.notify_all()

    def failed(self, sha256: str, relay: str) -> None:
        """RELAY cannot serve (down, killed, corrupt copy): the next Mac to ask takes over."""
        with self.cond:
            pkg = self.packages[sha256]
            if pkg.relay == relay:
                pkg.relay = None
            if pkg.offer and pkg.offer.relay == relay:
                pkg.offer = None
            if relay not in pkg.failed:
                pkg.failed.append(relay)
            self.cond.notify_all()

    def started(self, name: str) -> None:
        with self.cond:
            self.running.add(name)

    def left(self, name: str) -> None:
        """NAME's run ended; a relay that never offered its package is replaced."""
        with self.cond:
            self.gone.add(name)
            for pkg in self.packages.values():
                if pkg.relay == name and pkg.offer is None:
                    pkg.relay = None
                    pkg.failed.append(name)
            self.cond.notify_all()


def lan_address(plan: HostPlan) -> str | None:
    """Where the Mac's neighbours reach it: fleetctl_lan_address, else its address if an IP."""
    value = plan.lan_address or plan.endpoint.hostname
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


class Relays:
    """The sites of one run (or wave): who is where, the relays opened, and closing them."""

    def __init__(self, run_id: str, plans: Iterable[HostPlan], opened: Callable[[str], None] = lambda h: None,
                 closed: Callable[[str], None] = lambda h: None):
        self.run_id, self.opened_hook, self.closed_hook = run_id, opened, closed
        self.sites: dict[str, Site] = {}
        self.notes: dict[str, str] = {}  # host -> why it uploads directly although it has a site
        by_site: dict[str, list[HostPlan]] = {}
        for p in plans:
            if p.site:
                by_site.setdefault(p.site, []).append(p)
        for name, members in by_site.items():
            if len(members) < 2:  # a site of one Mac needs no relay
                continue
            addresses = {}
            for p in members:
                address = lan_address(p)
                if address and SAFE_PATH.match(p.staged_dir):
                    addresses[p.host.name] = address
                else:
                    self.notes[p.host.name] = (f"site {name}: uploaded directly, no LAN address for the relay "
                                               "(set fleetctl_lan_address to this Mac's IP)")
            if len(addresses) > 1:
                preferred = next((p.relay for p in members if p.relay), None)
                self.sites[name] = Site(name, addresses, preferred if preferred in addresses else None)
        self.open: dict[str, object] = {}  # relay host -> its engine Session (connection kept open)
        self.lock = threading.Lock()

    def site(self, plan: HostPlan) -> Site | None:
        site = self.sites.get(plan.site or "")
        return site if site and plan.host.name in site.addresses else None

    def order(self, plans: list[HostPlan]) -> list[int]:
        """Indexes of PLANS with each site's likely relay first, so it starts before its neighbours."""
        first: dict[str, int] = {}
        for i, p in enumerate(plans):
            site = self.site(p)
            if site and (site.name not in first or p.host.name == site.preferred):
                first[site.name] = i
        leaders = sorted(first.values())
        rest = set(range(len(plans))) - set(leaders)
        return leaders + sorted(rest)

    def remember(self, name: str, session: object) -> None:
        """Before the key is written: the journal knows this relay, resume can clean it."""
        self.opened_hook(name)
        with self.lock:
            self.open[name] = session

    def close(self) -> list[str]:
        """Remove every relay's keys and copies; returns warnings for relays left to `resume`."""
        warnings = []
        with self.lock:
            sessions, self.open = self.open, {}
        for name, session in sessions.items():
            try:
                res = session.conn.run(close_script(session.plan)) if session.conn else None
                if res is None or res.rc != 0:
                    raise ssh.Unreachable((res.err.strip() if res else "") or "connection closed")
                self.closed_hook(name)
            except ssh.Unreachable as e:
                warnings.append(f"relay {name}: its one-time key could not be removed ({e}); "
                                f"`fleetctl resume {self.run_id}` removes it")
            finally:
                if session.conn:
                    session.conn.close()
                    session.conn = None
        return warnings


def close_script(plan: HostPlan) -> str:
    return render.render("relay_close", staged_dir=plan.staged_dir, marker=MARKER)


def copy_path(plan: HostPlan, pkg: Package) -> str:
    return f"{plan.staged_dir}/relay-{pkg.sha256[:16]}.pkg"


class Cleanup:
    """An action for `fleetctl resume`: remove what relays of a killed run left (keys, copies)."""

    needs_root = False

    def __init__(self, closed: Callable[[str], None]):
        self.closed = closed

    def scripts(self, plan: HostPlan, book: object) -> list[tuple[str, str]]:
        return [("relay-close", close_script(plan))]

    def run(self, session) -> None:
        session.step("relay-close", close_script(session.plan))
        self.closed(session.plan.host.name)
        session.result.status = "ok"
