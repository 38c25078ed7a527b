"""upgrade: the vendor's upgrade and restart scripts, for Macs below the package's version."""
from __future__ import annotations

from fleetctl.actions import common, distribute
from fleetctl.engine import Session
from fleetctl.plan import HostPlan
from fleetctl.playbook import Playbook


def scripts(plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
    parts = common.package_scripts(plan, "upgrade")
    if plan.ca_bundle:
        parts.append(("configure (proxy CA bundle again)", plan.configure_script([], None, plan.ca_bundle, "<...>")))
    return parts


def run(s: Session) -> None:
    p, r = s.plan, s.result
    common.require_agent(s)
    pkg = common.package_for(s)
    if common.version(r.version_before) >= common.version(pkg.version):
        r.status, r.reason = "ok", f"already at {r.version_before}"
        return
    f = common.preflight(s, pkg, needs_pod=bool(p.pod_url))
    distribute.stage(s, f, pkg)
    parts = [common.install_package(s, "upgrade", pkg)]
    if p.ca_bundle:  # the bundle lives inside the app bundle, which the upgrade replaced
        parts.append(common.configure(s, [], None, p.ca_bundle, {**s.applied, **p.digests},
                                      s.applied.get("fingerprint", "")))
    parts.append(common.verify(s, pkg.version))
    common.apply(s, parts)  # one privileged round trip
    r.status, r.reason = "changed", s.with_notes(None)
