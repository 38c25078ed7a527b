"""`fleetctl platform`: each Mac beside what the Qualys platform lists for its agent.

The Mac tells its agent UUID (the hostid file); the platform is asked for that UUID, and for
other records with the same name (a duplicate asset, the one the guide warns about). Flags are
what an admin acts on; the summary groups Macs that share them, as doctor does.
"""
from __future__ import annotations

import dataclasses
import json
import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table

from fleetctl import engine, outfile, report
from fleetctl.actions import uninstall
from fleetctl.engine import Session
from fleetctl.errors import UsageError
from fleetctl.inventory import Host
from fleetctl.plan import HostPlan, Planner
from fleetctl.playbook import Playbook
from fleetctl.qualys_api import Agent, ApiError, Client, api_url
from fleetctl.results import Events, ExitCode
from fleetctl.secrets import Secrets

BOOK = Playbook(Path("platform"), "status", "platform", {})  # no playbook: a stand-in
USER_SECRET, PASSWORD_SECRET = "qualys_api_user", "qualys_api_password"
# The modules a scan type needs (the guide: a scan needs the agent activated for its module), by the
# module names the Cloud Agent API documents (docs/qualys-platform-api.md, section h).
SCAN_MODULES = {"vm": ["AGENT_VM"], "pc": ["AGENT_PC"], "vmpc": ["AGENT_VM", "AGENT_PC"], "sca": ["AGENT_SCA"]}


def clients(hosts: list[Host], secrets: Secrets, say: Callable[[str], None]) -> dict[str, Client]:
    """One API client per platform the HOSTS' inventory points at: host name -> client.
    Settings (inventory vars): qualys_api_url (else from server_uri), qualys_api_ca; the API
    user's name and password are the secrets qualys_api_user and qualys_api_password."""
    by_url: dict[tuple[str, str | None], Client] = {}
    out = {}
    for host in hosts:
        url = api_url(host.vars.get("server_uri"), host.vars.get("qualys_api_url"), host.where)
        ca = host.vars.get("qualys_api_ca")
        if ca and not Path(str(ca)).expanduser().is_file():
            raise UsageError(f"{host.where}: qualys_api_ca {ca!r} is not a file; give the CA bundle (PEM) that "
                             "signed the API server's certificate, or leave it out for the system's")
        key = (url, str(Path(str(ca)).expanduser()) if ca else None)
        if key not in by_url:
            by_url[key] = Client(url, secrets.get(USER_SECRET, "Qualys API user name"),
                                 secrets.get(PASSWORD_SECRET, "Qualys API password"), key[1], say=say)
        out[host.name] = by_url[key]
    return out


def check_access(api: dict[str, Client]) -> None:
    """One cheap search per platform before any Mac is touched: credentials, URL and TLS are right."""
    for client in {id(c): c for c in api.values()}.values():
        client.agents("agentUuid", ["00000000-0000-0000-0000-000000000000"])


@dataclass
class Flag:
    kind: str  # what Macs share in the summary: one of KINDS
    detail: str  # this Mac's particulars


KINDS = ("not reached", "no agent UUID", "unknown to the platform", "duplicate record", "check-in too old",
         "module not activated", "platform not asked")


@dataclass
class MacView:
    name: str
    on_mac: str = "unreachable"  # "agent 6.1.0.28", "no agent", "unreachable"
    agent_uuid: str | None = None
    known: bool | None = None  # None: the platform was not asked
    version: str | None = None  # what the platform lists
    last_checkin: str | None = None  # ISO, UTC
    modules: list[str] = field(default_factory=list)
    asset_ids: list[str] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)

    def flag(self, kind: str, detail: str) -> None:
        self.flags.append(Flag(kind, detail))


class ReadAgentIds:
    """The Mac's side: its agent version (the probe) and the UUID in its hostid file."""

    def __init__(self) -> None:
        self.found: dict[str, str | None] = {}

    def scripts(self, plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
        return [("agent id", uninstall.agent_id_script())]

    def run(self, s: Session) -> None:
        self.found[s.result.name] = uninstall.agent_id(s)
        s.result.status, s.result.reason = "ok", s.with_notes(None)


def sweep(hosts: list[Host], secrets: Secrets, forks: int, accept_new: bool, step_timeout: int, stale: timedelta,
          needs: list[str], say: Callable[[str], None]) -> list[MacView]:
    api = clients(hosts, secrets, say)  # settings and secrets first: a mistake stops us before any Mac
    plans = [Planner(BOOK, None).host(h) for h in hosts]
    reader = ReadAgentIds()
    book = dataclasses.replace(BOOK, step_timeout=step_timeout)
    results = engine.run_all(reader, plans, book, secrets, forks, accept_new, Events(), threading.Event(),
                             threading.Event())
    views = []
    for r in results:
        v = MacView(r.name)
        if r.status == "unreachable" or r.name not in reader.found:
            v.flag("not reached", r.reason or "unreachable")
        else:
            v.on_mac = f"agent {r.version_before}" if r.version_before else "no agent"
            v.agent_uuid = reader.found[r.name]
            if r.version_before and not v.agent_uuid:
                v.flag("no agent UUID", (r.reason or "no hostid file") + ": not provisioned, or never reached "
                       "the platform")
        views.append(v)
    by_client: dict[int, list[MacView]] = defaultdict(list)
    for v in views:
        if v.agent_uuid:
            by_client[id(api[v.name])].append(v)
    for macs in by_client.values():
        _compare(api[macs[0].name], macs, stale, needs)
    return views


def _compare(client: Client, macs: list[MacView], stale: timedelta, needs: list[str]) -> None:
    try:
        found = client.agents("agentUuid", [v.agent_uuid for v in macs])
        named = client.agents("name", {a.name for a in found if a.name})
    except ApiError as e:
        for v in macs:
            v.flag("platform not asked", str(e))
        return
    by_uuid: dict[str, list[Agent]] = defaultdict(list)
    for a in found:
        by_uuid[a.agent_uuid].append(a)
    by_name: dict[str, list[Agent]] = defaultdict(list)
    for a in named:
        by_name[a.name].append(a)
    now = datetime.now(timezone.utc)
    for v in macs:
        records = sorted(by_uuid.get(v.agent_uuid, []), key=lambda a: a.last_checkin or datetime.min.replace(
            tzinfo=timezone.utc), reverse=True)
        v.known = bool(records)
        if not records:
            v.flag("unknown to the platform", f"agent {v.agent_uuid} is installed here, but the platform lists no "
                   "such agent: wrong subscription or activation, or it never checked in")
            continue
        newest = records[0]
        v.version, v.modules = newest.version, newest.modules
        v.last_checkin = newest.last_checkin.strftime("%Y-%m-%dT%H:%M:%SZ") if newest.last_checkin else None
        same = {a.asset_id: a for a in records + [a for n in {a.name for a in records} for a in by_name.get(n, [])]}
        v.asset_ids = sorted(same)
        if len(same) > 1:
            others = ", ".join(f"asset {a.asset_id} (agent {a.agent_uuid[:8]}…, last check-in "
                               f"{a.last_checkin:%Y-%m-%d %H:%M} UTC)" if a.last_checkin else f"asset {a.asset_id}"
                               for a in same.values() if a.asset_id != newest.asset_id)
            v.flag("duplicate record", f"{len(same)} platform records for this Mac: {others} besides asset "
                   f"{newest.asset_id}; uninstall the stale one on the platform (the guide's duplicate asset)")
        if not newest.last_checkin or now - newest.last_checkin > stale:
            v.flag("check-in too old", f"last check-in {v.last_checkin or 'never'}, over {_duration(stale)} ago")
        missing = [m for m in needs if m not in newest.modules]
        if missing:
            v.flag("module not activated", f"{', '.join(missing)} not activated; the scan needs it")


def _duration(d: timedelta) -> str:
    s = int(d.total_seconds())
    return f"{s // 86400}d" if s % 86400 == 0 else f"{s // 3600}h" if s % 3600 == 0 else f"{s // 60}m"


def needed_modules(scan_playbook: Path | None, extra: tuple[str, ...]) -> list[str]:
    needs = list(extra)
    if scan_playbook:
        from fleetctl import playbook

        book = playbook.load(scan_playbook)
        if book.action != "scan":
            raise UsageError(f"--scan-playbook {scan_playbook}: action is {book.action}, not scan")
        if book.scan_type not in SCAN_MODULES:
            raise UsageError(f"{scan_playbook}: the module a {book.scan_type!r} scan needs is not documented; "
                             "name it with --needs-module (e.g. AGENT_PC)")
        needs += SCAN_MODULES[book.scan_type]
    return sorted(set(needs))


def show(console: Console, views: list[MacView]) -> None:
    groups: dict[tuple[bool, str], list[str]] = defaultdict(list)
    for v in views:
        kinds = "; ".join(sorted({f.kind for f in v.flags}, key=KINDS.index))
        quiet = "no agent on the Mac" if v.on_mac == "no agent" else "known to the platform, nothing to act on"
        groups[(bool(kinds), kinds or quiet)].append(v.name)
    for (flagged, label), names in sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
        shown = ", ".join(names[:8]) + (" …" if len(names) > 8 else "")
        console.print(f"{len(names)} Mac{'s' if len(names) > 1 else ''}: {label} ({shown})",
                      style="yellow" if flagged else "green", markup=False, highlight=False)
    if report.verbosity < 0:
        return
    table = Table(title="the platform's view of each Mac")
    for col in ("Mac", "on the Mac", "platform", "version", "last check-in", "modules", "flags"):
        table.add_column(col, overflow="fold")
    for v in views:
        table.add_row(v.name, v.on_mac, {True: "known", False: "UNKNOWN", None: "-"}[v.known], v.version or "-",
                      v.last_checkin or "-", ",".join(v.modules) or "-", "; ".join(f.detail for f in v.flags) or "-")
    console.print(table)


def as_json(views: list[MacView]) -> dict:
    return {"schema": "fleetctl.platform/1", "hosts": [asdict(v) for v in views],
            "summary": {"known": sum(v.known is True for v in views), "unknown": sum(v.known is False for v in views),
                        "flagged": sum(bool(v.flags) for v in views)}}


def write_json(path: Path, views: list[MacView]) -> None:
    outfile.write(path, json.dumps(as_json(views), indent=1) + "\n")


def exit_code(views: list[MacView]) -> ExitCode:
    return ExitCode.FAILED if any(v.flags for v in views) else ExitCode.OK
