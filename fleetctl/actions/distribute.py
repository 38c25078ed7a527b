"""How a package reaches a Mac before `installer` runs: already staged, streamed from the
controller, or, at a site (fleetctl_site), fetched from the site's relay over its LAN.

Every path ends the same way: the staged file is checked against the package's sha256 again by
the install step itself, so no Mac installs a copy that does not match.
"""
from __future__ import annotations

from fleetctl import relay, render
from fleetctl.engine import Session
from fleetctl.plan import Package


def stage(s: Session, f: dict, pkg: Package) -> None:
    """Put PKG in the Mac's staging directory unless preflight found it there (a rerun sends nothing)."""
    r = s.result
    r.site = s.plan.site
    if pkg.sha256 in f.get("staged", []):
        r.package_from = "staged"
        return
    note = s.relays.notes.get(s.plan.host.name) if s.relays else None
    if note:
        s.notes.append(note)
    if s.site is None:
        _upload(s, pkg)
        return
    while True:
        role, offer = s.site.claim(s.plan.host.name, pkg.sha256)
        if role == "fetch" and _fetch(s, pkg, offer):
            r.package_from = f"relay {offer.relay}"
            return
        if role == "relay":
            _upload(s, pkg)
            _offer(s, pkg)
            return
        if role == "direct":
            s.notes.append(f"site {s.site.name}: no relay could serve the package; uploaded directly")
            _upload(s, pkg)
            return


def _upload(s: Session, pkg: Package) -> None:
    s.upload(pkg)
    s.result.package_from = "controller"


def _offer(s: Session, pkg: Package) -> None:
    """This Mac has the package: offer it to its neighbours. A relay that cannot offer is still
    a Mac that installs: its neighbours turn to the next relay."""
    p, site = s.plan, s.site
    key = relay.OneTimeKey.new()
    copy = relay.copy_path(p, pkg)
    host_key = s.conn.transport.get_remote_server_key()
    s.relays.remember(p.host.name, s)
    s.keep_open = True
    sources = ",".join(a for h, a in site.addresses.items() if h != p.host.name)
    res = s.step("relay-open", render.render(
        "relay_open", sources=sources, copy=copy, staged=p.staged(pkg), sha256=pkg.sha256,
        public_key=key.public, marker=relay.MARKER + s.relays.run_id), check=False)
    if res.rc != 0:
        site.failed(pkg.sha256, p.host.name)
        s.notes.append(f"could not serve as the site's relay: {s.failure(res)}")
        return
    address = site.addresses[p.host.name]
    port = p.endpoint.port if address == p.endpoint.hostname else 22
    site.offered(pkg.sha256, relay.Offer(p.host.name, address, port, s.conn.fabric.user, copy,
                                         (host_key.get_name(), host_key.get_base64()), key))


def _fetch(s: Session, pkg: Package, offer: relay.Offer) -> bool:
    """Fetch from OFFER's relay; False (and the relay is dropped) if it fails or its copy is bad."""
    p = s.plan
    res = s.step(f"fetch from {offer.relay}", render.render(
        "relay_fetch", staged_dir=p.staged_dir, staged=p.staged(pkg), private_key=offer.key.private,
        known_hosts_line=offer.known_hosts_line, host_key_type=offer.host_key[0], port=offer.port,
        user=offer.user, address=offer.address, sha256=pkg.sha256), check=False)
    if res.rc == 0:
        return True
    s.site.failed(pkg.sha256, offer.relay)
    s.notes.append(f"relay {offer.relay} failed ({s.failure(res)})")
    return False
