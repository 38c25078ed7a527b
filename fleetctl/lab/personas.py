"""Personas: the ways real Macs in a fleet differ, parsed from `--personas` specs."""
from __future__ import annotations

import re
from dataclasses import dataclass

from fleetctl.errors import UsageError

ARCHES = ("arm64", "x86_64")
MACOS = {  # persona -> (ProductVersion, BuildVersion) as sw_vers prints them
    "macos12": ("12.7.6", "21H1320"),
    "macos13": ("13.7.1", "22H221"),
    "macos14": ("14.5", "23F79"),
    "macos15": ("15.1", "24B83"),
}
NEWEST_MACOS = "macos15"
TRAITS = {
    "lowdisk": "less than 100 MB free on /",
    "lowmem": "less than 512 MB of RAM",
    "sudo-password": "sudo asks admin for a password",
    "nosudo": "admin may not use sudo at all",
    "root-login": "the inventory logs in as root",
    "installer-fails": "installer reports a failed install",
    "drop-mid-transfer": "the SSH connection dies during an upload",
    "unreachable": "nothing answers at its address",
    "slowlink": "its link is shaped to 40 Mbit/s",
    "proxy-only": "the pod is reachable only through the lab proxy",
    "agent-crashes": "the agent daemon dies right after it starts",
    "chatty-agent": "the agent logs many lines fleetctl does not know each cycle, alarming words at harmless levels",
    "log-errors": "the agent logs an [Error] line after every contact with the platform",
    "rsr-extra": "sw_vers adds a ProductVersionExtra line (a Rapid Security Response)",
    "odd-log": "the agent writes its log in another line format than the guide's",
    "clock-skew": "its clock (date) runs 10 minutes ahead of the controller's",
    "no-openssl": "has no openssl command",
    "jump-host": "also the SSH jump host (bastion) for behind-bastion Macs",
    "behind-bastion": "accepts SSH only through the lab's jump host (ProxyJump)",
    "relay-dies": "as a relay, serves half of a relay-*.pkg with cat, then its SSH session dies",
    "relay-corrupts": "as a relay, serves a relay-*.pkg with cat with one byte flipped in the middle",
    "other-subscription": "its agent checks in to another subscription (another CustomerId and ActivationId, as "
                          "if an MDM profile or an old activation provisioned it elsewhere): the API user's "
                          "search never finds it",
    "duplicate-record": "leaves a duplicate platform record: the host id of its first contact lands outside "
                        "HostIdSearchDir, so the agent checks in again as new; two records, one name, the older "
                        "never checking in again",
    "hostile-output": "a broken or compromised Mac: terminal escapes, HTML, NUL, invalid UTF-8 and a huge line in "
                      "its agent log and tool output; an on-demand scan that drips output forever",
    # Laptops (lab/laptops.py drives them): a client sees them as it sees a Mac that is not there.
    "away": "a laptop that leaves the network about P% of the time (away=P%, e.g. away=40%), in random periods "
            "(lab up --away-period): its link goes down, nothing answers at its address",
    "asleep": "sleeps (no SSH, no ARP answer) until a Wake-on-LAN magic packet for its Ethernet address comes "
              "from its own LAN (a Mac of its site; off any site, also the controller); then awake until lab sleep",
    "asleep-wifi": "a Wi-Fi-only laptop asleep for good: its radio is off, no magic packet wakes it",
    "renumbered": "`fleetctl lab renumber` moves these Macs' addresses in a ring, as DHCP after a trip "
                  "(needs two or more; inventory and known_hosts keep the old addresses)",
}
ALL = (*ARCHES, *MACOS, *TRAITS)
SHOWN = tuple("away=P%" if p == "away" else p for p in ALL)  # how the persona is written
EXCLUSIVE = [set(ARCHES), set(MACOS), {"sudo-password", "nosudo"}, {"jump-host", "behind-bastion", "unreachable"},
             {"relay-dies", "relay-corrupts"}, {"away", "asleep", "asleep-wifi", "renumbered", "unreachable"}]
AWAY = re.compile(r"away=(\d{1,2})%")


def base(persona: str) -> str:
    """The persona's name without its value: away=40% -> away."""
    return persona.partition("=")[0]


@dataclass(frozen=True)
class HostSpec:
    """One simulated Mac: its place in the fleet and what it is like."""

    index: int  # 1-based
    personas: tuple[str, ...]  # as given, in order, without defaults

    @property
    def name(self) -> str:
        return f"mac-{self.index:03d}"

    @property
    def arch(self) -> str:
        return next((p for p in self.personas if p in ARCHES), "arm64")

    @property
    def macos(self) -> str:
        return next((p for p in self.personas if p in MACOS), NEWEST_MACOS)

    def has(self, trait: str) -> bool:
        return any(base(p) == trait for p in self.personas)

    @property
    def away_percent(self) -> int | None:
        """away=P%: how much of the time this laptop is gone; None: never."""
        found = next((AWAY.fullmatch(p) for p in self.personas if base(p) == "away"), None)
        return int(found.group(1)) if found else None

    @property
    def wifi_only(self) -> bool:
        """A laptop with Wi-Fi (en0) and no Ethernet port; every other Mac is wired (Ethernet en0)."""
        return self.has("asleep-wifi")

    @property
    def user(self) -> str:
        return "root" if self.has("root-login") else "admin"

    def as_list(self) -> list[str]:
        """The full persona list recorded in the inventory (defaults made explicit)."""
        traits = [p for p in self.personas if base(p) in TRAITS]
        return [self.arch, self.macos, *traits]


def _entry(text: str, where: str) -> tuple[tuple[str, ...], int]:
    body, _, count_text = text.partition("*")
    count = 1
    if count_text:
        if not count_text.strip().isdigit() or int(count_text) < 1:
            raise UsageError(f"--personas {where}: '*{count_text}' must be a positive count, e.g. x86_64*3")
        count = int(count_text)
    names = tuple(p.strip() for p in body.split("+"))
    for name in names:
        if base(name) not in ALL:
            raise UsageError(f"--personas {where}: unknown persona {name!r}; choose from {', '.join(SHOWN)}")
        if base(name) == "away":
            found = AWAY.fullmatch(name)
            if not found or not 1 <= int(found.group(1)) <= 99:
                raise UsageError(f"--personas {where}: write away=P% with P from 1 to 99 (the share of the time "
                                 "the laptop is gone), e.g. away=40%")
        elif "=" in name:
            raise UsageError(f"--personas {where}: {base(name)!r} takes no value; write it as {base(name)}")
    for group in EXCLUSIVE:
        clash = [n for n in names if base(n) in group]
        if len(clash) > 1:
            raise UsageError(f"--personas {where}: {' and '.join(clash)} cannot be combined on one host")
    if len({base(n) for n in names}) != len(names):
        raise UsageError(f"--personas {where}: a persona is repeated")
    return names, count


def parse(spec: str, hosts: int, sized_by: str = "") -> list[HostSpec]:
    """Expand SPEC into HOSTS host specs; hosts beyond the spec are healthy defaults.
    SIZED_BY: what set HOSTS, for the error (default: --hosts)."""
    plan: list[tuple[str, ...]] = []
    for n, text in enumerate(spec.split(",") if spec.strip() else [], start=1):
        if not text.strip():
            raise UsageError(f"--personas entry {n} is empty; remove the extra comma")
        names, count = _entry(text.strip(), f"entry {n} ({text.strip()!r})")
        plan += [names] * count
    if len(plan) > hosts:
        raise UsageError(f"--personas describes {len(plan)} hosts but {sized_by or f'--hosts is {hosts}'}; "
                         "raise --hosts")
    plan += [()] * (hosts - len(plan))
    jumps = [names for names in plan if "jump-host" in names]
    if len(jumps) > 1 or (not jumps and any("behind-bastion" in names for names in plan)):
        raise UsageError("--personas: behind-bastion Macs need exactly one jump-host Mac, e.g. "
                         '"jump-host,behind-bastion*5"')
    if sum("renumbered" in names for names in plan) == 1:
        raise UsageError("--personas: renumbered Macs take each other's addresses in a ring (`fleetctl lab "
                         'renumber`): give at least two, e.g. "renumbered*2"')
    return [HostSpec(i, names) for i, names in enumerate(plan, start=1)]


def jump_host(specs: list[HostSpec]) -> HostSpec | None:
    return next((s for s in specs if s.has("jump-host")), None)


SITE_NAME = re.compile(r"[a-z][a-z0-9-]*")
SITE_RATE = re.compile(r"(\d+(?:\.\d+)?)(kbit|mbit|gbit)")
RATE_UNITS = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}  # as tc reads them (SI)
RESERVED_GROUPS = ("all", "ungrouped")


@dataclass(frozen=True)
class SiteSpec:
    """A branch office: COUNT Macs on a LAN of their own, behind an uplink shaped to RATE."""

    index: int  # 1-based, in --sites order
    name: str
    count: int
    rate: str  # as tc understands it, e.g. 20mbit

    @property
    def rate_bps(self) -> int:
        number, unit = SITE_RATE.fullmatch(self.rate).groups()
        return int(float(number) * RATE_UNITS[unit])


def parse_sites(spec: str) -> list[SiteSpec]:
    """`berlin=20@20mbit,paris=10@5mbit` -> sites, in order; errors name the entry and the form."""
    sites: list[SiteSpec] = []
    for n, text in enumerate(spec.split(",") if spec.strip() else [], start=1):
        text = text.strip()
        form = f"--sites {text!r}: write NAME=COUNT@RATE, e.g. berlin=20@20mbit"
        if not text:
            raise UsageError(f"--sites entry {n} is empty; remove the extra comma")
        name, eq, rest = text.partition("=")
        count_text, at, rate = rest.partition("@")
        name, count_text, rate = name.strip(), count_text.strip(), rate.strip().lower()
        if not (eq and at and count_text.isdigit() and SITE_RATE.fullmatch(rate)):
            raise UsageError(form)
        if not SITE_NAME.fullmatch(name):
            raise UsageError(f"{form}; NAME is a lower-case letter, then letters, digits or '-'")
        if name in RESERVED_GROUPS or re.fullmatch(r"mac-\d+", name):
            raise UsageError(f"--sites {text!r}: {name!r} is taken (an inventory group or host name); "
                             "name the site after its office")
        if int(count_text) < 1:
            raise UsageError(f"--sites {text!r}: a site needs at least one Mac")
        if any(s.name == name for s in sites):
            raise UsageError(f"--sites: site {name!r} is given twice")
        site = SiteSpec(n, name, int(count_text), rate)
        if site.rate_bps < 8000:
            raise UsageError(f"--sites {text!r}: the uplink needs at least 8kbit")
        sites.append(site)
    return sites
