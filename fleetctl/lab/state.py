"""What a running lab started, kept in DIR/state.json so `lab down`, `lab status` and the
laptop commands find it again (and stop it by pid).

state.json: {"dir", "slot", "seed", "away_period", "laptops_pid",
"hosts": [{"name", "index", "address", "user", "personas", "pid", "site",
           "serial", "hardware_uuid", "ethernet", "wifi"}],
"pod_pid", "proxy_pid", "proxy_front_pid", "created_paths",
"sites": [{"name", "index", "rate", "bridge", "uplink_main", "uplink_site", "hosts": [names]}]}
A host's address is where it is now (`lab renumber` moves renumbered Macs); the inventory keeps
the addresses the lab started with.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fleetctl.errors import LabError
from fleetctl.lab import network

LAPTOP_PERSONAS = ("away", "asleep", "asleep-wifi")  # what the lab's laptops process drives


@dataclass
class LabHost:
    name: str
    index: int
    address: str
    user: str
    personas: list[str]
    pid: int | None = None  # sshd; None for unreachable Macs
    site: str | None = None  # its branch-office site; None: on the lab's own bridge
    serial: str = ""
    hardware_uuid: str = ""
    ethernet: str | None = None  # None: a Wi-Fi-only laptop, no Ethernet port
    wifi: str = ""

    def has(self, persona: str) -> bool:
        return any(p.partition("=")[0] == persona for p in self.personas)

    @property
    def primary(self) -> str:
        """The hardware address its eth0 (en0) carries."""
        return self.ethernet or self.wifi

    @property
    def away_percent(self) -> int:
        """P of its away=P% persona (0: never away)."""
        return next((int(p[len("away="):-1]) for p in self.personas if p.startswith("away=")), 0)

    @property
    def laptop(self) -> str | None:
        """Which of LAPTOP_PERSONAS it has, if any."""
        return next((p for p in LAPTOP_PERSONAS if self.has(p)), None)


@dataclass
class LabSite:
    """A branch office: its Macs on a bridge of their own, one shaped uplink to the lab's bridge."""

    name: str
    index: int
    rate: str  # tc's notation, e.g. 20mbit, both directions
    bridge: str
    uplink_main: str  # the uplink's end on the lab's bridge: its tx_bytes went controller -> site
    uplink_site: str
    hosts: list[str] = field(default_factory=list)


@dataclass
class LabState:
    dir: str
    slot: int
    hosts: list[LabHost] = field(default_factory=list)
    pod_pid: int | None = None
    proxy_pid: int | None = None  # tinyproxy
    proxy_front_pid: int | None = None  # proxyauth.py, where the Macs find the proxy
    created_paths: list[str] = field(default_factory=list)
    sites: list[LabSite] = field(default_factory=list)
    seed: int = 1  # the Macs' hardware identities and the away schedules derive from it
    away_period: float = 20.0  # seconds an away=P% laptop is gone, on average, each time
    laptops_pid: int | None = None  # lab/laptops.py, when any Mac is away or asleep

    @property
    def namespaces(self) -> list[str]:
        return [network.netns(self.slot, h.index) for h in self.hosts if "unreachable" not in h.personas]

    def host(self, name: str) -> LabHost:
        found = next((h for h in self.hosts if h.name == name), None)
        if found is None:
            raise LabError(f"the lab in {self.dir} has no Mac {name!r} (mac-001 to {self.hosts[-1].name})")
        return found


def state_file(lab_dir: Path) -> Path:
    return lab_dir / "state.json"


def save(state: LabState) -> None:
    """Written whole to a new file, then renamed: a reader never sees half of it."""
    path = state_file(Path(state.dir))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=1))
    tmp.replace(path)


def load(lab_dir: Path) -> LabState:
    path = state_file(lab_dir)
    if not path.exists():
        raise LabError(f"no lab is running in {lab_dir}; start one with `fleetctl lab up --hosts N --dir {lab_dir}`")
    raw = json.loads(path.read_text())
    raw["hosts"] = [LabHost(**h) for h in raw["hosts"]]
    raw["sites"] = [LabSite(**s) for s in raw.get("sites", [])]
    return LabState(**raw)


def site(state: LabState, name: str) -> LabSite:
    found = next((s for s in state.sites if s.name == name), None)
    if found is None:
        known = ", ".join(s.name for s in state.sites) or "none"
        raise LabError(f"the lab in {state.dir} has no site {name!r} (its sites: {known})")
    return found


def site_uplink_bytes(lab_dir: Path, name: str, from_site: bool = False) -> int:
    """Bytes that crossed site NAME's uplink so far: controller -> site (the default; pod and
    proxy traffic too), or site -> controller with FROM_SITE. Traffic within the site's LAN
    never crosses it. Take the difference of two readings."""
    state = load(lab_dir.resolve())
    found = site(state, name)
    return (network.uplink_rx_bytes if from_site else network.uplink_tx_bytes)(state.slot, found.index)


def alive(pid: int | None) -> bool:
    """Running and not a zombie (a pid from state.json may be long gone)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False
