"""install: upload, install and provision where needed; a converged Mac is left alone."""
from __future__ import annotations

from fleetctl import facts
from fleetctl.actions import common, distribute
from fleetctl.engine import Session
from fleetctl.plan import HostPlan
from fleetctl.playbook import Playbook


def scripts(plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
    return [*common.package_scripts(plan, "install"), ("configure", plan.configure_script(
        plan.options, plan.proxy_content, plan.ca_bundle, "<sha256 of each setting, the agent's paths>"))]


def with_probe(plan: HostPlan) -> dict:
    """A Mac with no agent will be installed: its preflight rides with the probe, one round trip
    fewer. Not when preflight needs root (UseSudo: sudo -l -U), which the probe has yet to learn."""
    return {} if plan.sudo_command is not None else {"preflight": common.preflight_script(plan, needs_pod=True)}


def run(s: Session) -> None:
    p, r = s.plan, s.result
    pkg = common.package_for(s)
    need_install = not r.version_before or common.version(r.version_before) < common.version(pkg.version)
    need_config = (need_install or s.applied.get("fingerprint") != p.fingerprint
                   or facts.first(s.state, "hostid") != "1")
    keep = "" if need_install or r.version_before == pkg.version else f"keeps newer {r.version_before}"
    if not need_config and facts.first(s.state, "daemon_pid"):
        r.status, r.reason = "ok", keep or None
        return
    f = common.preflight(s, pkg, needs_pod=True)
    parts = []
    if need_install:
        distribute.stage(s, f, pkg)
        parts.append(common.install_package(s, "install", pkg))
    parts.append(common.configure(s, p.options, common.proxy_change(s, all_settings=True), p.ca_bundle, p.digests,
                                  p.fingerprint))
    parts.append(common.verify(s, pkg.version if need_install else r.version_before))
    common.apply(s, parts)  # one privileged round trip: install, configure, verify
    r.status, r.reason = "changed", s.with_notes(keep)
