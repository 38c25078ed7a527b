"""configure: apply only the settings that differ from what fleetctl last applied on the Mac."""
from __future__ import annotations

from fleetctl.actions import common
from fleetctl.engine import Session
from fleetctl.plan import HostPlan
from fleetctl.playbook import Playbook


def scripts(plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
    return [("configure (only the settings that differ on each Mac)", plan.configure_script(
        plan.options, plan.proxy_content, plan.ca_bundle, "<sha256 of each setting, the agent's paths>"))]


def run(s: Session) -> None:
    p, r = s.plan, s.result
    common.require_agent(s)
    proxy = common.proxy_change(s, all_settings=False)
    changed = {k for k, d in p.digests.items() if s.applied.get(k) != d and k != "proxy"}
    if proxy is not None:
        changed.add("proxy")
    if not changed:
        r.status = "ok"
        return
    common.preflight(s, None, needs_pod=bool(p.pod_url))
    options = [o for o in p.options if o.partition("=")[0] in changed]
    common.apply(s, [common.configure(s, options, proxy, p.ca_bundle if "ca_bundle" in changed else None,
                                      {**s.applied, **p.digests}, s.applied.get("fingerprint", "")),
                     common.verify(s, r.version_before)])
    r.status, r.reason = "changed", s.with_notes("changed: " + ", ".join(sorted(changed)))
