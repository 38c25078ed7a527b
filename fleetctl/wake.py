"""Wake sleeping Macs through a neighbour on their LAN.

A Mac of a site (fleetctl_site) that does not answer may be asleep. Wired Macs with "Wake for
network access" on wake for a Wake-on-LAN packet sent on their own subnet; the controller is
rarely on it, so a reachable Mac of the same site sends the packet (Apple's advice for
Apple Remote Desktop: a computer on that subnet, kept awake, as a sentry), with perl, which
stock macOS ships. The Ethernet address is the one recorded at the Mac's first contact;
Wi-Fi-only Macs cannot be woken (the radio sleeps) and are left for a later retry.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fleetctl import facts, render
from fleetctl.engine import Session
from fleetctl.plan import HostPlan
from fleetctl.playbook import Playbook
from fleetctl.results import HostResult

NEIGHBOURS_TRIED = 3  # a site's senders tried in turn before its Macs are left asleep


class Send:
    """The action run on the neighbour: send the magic packets, nothing else."""

    needs_root = False

    def __init__(self, addresses: list[str]):
        self.addresses = addresses

    def scripts(self, plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
        return [("wake (from a neighbour of the site)", render.render("wake", addresses=["<Ethernet address>"]))]

    def run(self, s: Session) -> None:
        sent = facts.parse(s.step("wake", render.render("wake", addresses=self.addresses)).out).get("sent", [])
        if sorted(sent) != sorted(self.addresses):
            raise s.check_failed(f"wake: perl sent {len(sent)} of {len(self.addresses)} packets")
        s.result.status = "ok"


@dataclass
class SiteWake:
    """One site's sleepers (name -> Ethernet address) and the Macs that may send for them, best first."""

    site: str
    sleepers: dict[str, str]
    senders: list[str] = field(default_factory=list)


def plan(unreached: list[HostResult], plans: dict[str, HostPlan], ether: dict[str, str | None],
         candidates: list[str]) -> list[SiteWake]:
    """Sites with a sleeper worth waking: UNREACHED Macs of a site with a recorded wired address;
    CANDIDATES (reachable Macs, best first, from any site) become each site's senders."""
    sites: dict[str, SiteWake] = {}
    for r in unreached:
        p = plans.get(r.name)
        if p is None or not p.site or not ether.get(r.name):
            continue
        sites.setdefault(p.site, SiteWake(p.site, {})).sleepers[r.name] = ether[r.name]
    for name in candidates:
        p = plans.get(name)
        if p is not None and p.site in sites and name not in sites[p.site].sleepers:
            sites[p.site].senders.append(name)
    return [w for w in sites.values() if w.senders]
