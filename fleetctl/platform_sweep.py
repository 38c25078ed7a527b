"""platform_uninstall: after a Mac's agent is uninstalled on the Mac, uninstall it on the platform
too (the guide: only that frees the licence and removes the host record and results).

Only Macs whose Mac-side uninstall succeeded; each one's state is in the journal before and
after every call (journal.platform_*), so a resume neither repeats nor skips one. The platform
is searched again each time: an agent it no longer lists was uninstalled there already.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

from fleetctl import platform
from fleetctl.inventory import Host
from fleetctl.journal import Journal
from fleetctl.plan import HostPlan
from fleetctl.qualys_api import SEARCH, UNINSTALL, ApiError, Client, api_url
from fleetctl.secrets import Secrets


def scripts(plan: HostPlan) -> list[tuple[str, str]]:
    """What `fleetctl plan` shows: the calls made from this controller, after the Mac's uninstall."""
    url = api_url(plan.host.vars.get("server_uri"), plan.host.vars.get("qualys_api_url"), plan.host.where)
    return [("platform (from this controller, only once the Mac-side uninstall succeeded)",
             f"POST {url}{SEARCH}   tagName EQUALS Cloud Agent, agentUuid IN <the Mac's agent UUID>\n"
             f"POST {url}{UNINSTALL.format(id='<asset id>')}   for each record found (frees the licence)\n")]


def sweep(journal: Journal, run_id: str, hosts: list[Host], secrets: Secrets, say: Callable[[str], None]) -> int:
    """Uninstall on the platform every agent of RUN_ID that is due; returns how many are still due."""
    records = journal.platform_records(run_id)
    due = {h.name: h for h in hosts if records.get(h.name, ("", ""))[1] == "due"}
    if not due:
        return 0
    api = platform.clients(list(due.values()), secrets, say)
    groups: dict[int, list[str]] = defaultdict(list)
    for name in due:
        groups[id(api[name])].append(name)
    for names in groups.values():
        _uninstall(journal, run_id, api[names[0]], {n: records[n][0] for n in names})
    left = [n for n, (_, state, _) in journal.platform_records(run_id).items() if state == "due"]
    return len(left)


def _uninstall(journal: Journal, run_id: str, client: Client, uuids: dict[str, str]) -> None:
    try:
        found = client.agents("agentUuid", uuids.values())
    except ApiError as e:
        for name in uuids:
            journal.platform_set(run_id, name, "due", f"not yet: {e}")
        return
    by_uuid = defaultdict(list)
    for agent in found:
        by_uuid[agent.agent_uuid].append(agent)
    for name, uuid in uuids.items():
        records = by_uuid.get(uuid, [])
        if not records:
            journal.platform_set(run_id, name, "done", f"the platform lists no agent {uuid} (uninstalled there "
                                 "already, or in another subscription)")
            continue
        try:
            for agent in records:
                client.uninstall(agent.asset_id)
        except ApiError as e:
            journal.platform_set(run_id, name, "due", f"not yet: {e}")
            continue
        ids = ", ".join(a.asset_id for a in records)
        journal.platform_set(run_id, name, "done", f"uninstalled on the platform: asset {ids} (licence freed)")
