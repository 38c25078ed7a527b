"""`fleetctl status` and `fleetctl logs`: read-only, one round trip per Mac, safe to run hourly.

The checking is the status action's (actions/status.py), run by the same engine as every action.
"""
from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fleetctl import agentlog, engine, inventory, outfile, report
from fleetctl.actions.status import TIME_FORMAT, Check, HostStatus
from fleetctl.errors import UsageError
from fleetctl.inventory import Host
from fleetctl.plan import HostPlan, Planner
from fleetctl.playbook import Playbook
from fleetctl.results import Events, ExitCode
from fleetctl.secrets import Secrets

BOOK = Playbook(Path("status"), "status", "status", {})  # status needs no playbook: a stand-in
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
STEP_TIMEOUT = 120  # seconds a read-only look at one Mac may take (--step-timeout)
LOG_RECORDS = 5000  # `fleetctl logs`: the newest records since --since, at most


def parse_since(text: str) -> timedelta | str:
    """'24h', '30m', '2d' (relative to each Mac's clock) or 'YYYY-MM-DD[ HH:MM[:SS]]' (Mac local time)."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if match:
        return timedelta(**{UNITS[match[2]]: int(match[1])})
    for fmt in (TIME_FORMAT, "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), fmt).strftime(TIME_FORMAT)
        except ValueError:
            pass
    raise UsageError(f"--since {text!r}: use a duration like 24h, 30m, 2d or a time like '2026-11-26 08:00'")


def sweep(hosts: list[Host], secrets: Secrets, since: timedelta | str, forks: int, accept_new: bool,
          step_timeout: int = STEP_TIMEOUT, check: Check | None = None) -> list[HostStatus]:
    """The status action on HOSTS; a bad ssh config or inventory stops us before any connection."""
    planner = Planner(BOOK, None)  # no secret but the sudo passwords is read
    plans = [planner.host(h) for h in hosts]
    return run_check(check or Check(since), plans, secrets, forks, accept_new, step_timeout)


def check(plans: list[HostPlan], secrets: Secrets, since: timedelta | str, forks: int, accept_new: bool,
          step_timeout: int = STEP_TIMEOUT) -> list[HostStatus]:
    """The health of PLANS' Macs now (the health gate of a wave)."""
    return run_check(Check(since), plans, secrets, forks, accept_new, step_timeout)


def run_check(check: Check, plans: list[HostPlan], secrets: Secrets, forks: int, accept_new: bool,
              step_timeout: int) -> list[HostStatus]:
    """Through the engine, FORKS Macs at a time, with the sudo handling of every action."""
    book = dataclasses.replace(BOOK, step_timeout=step_timeout)
    results = engine.run_all(check, plans, book, secrets, forks, accept_new, Events(), threading.Event(),
                             threading.Event())
    out = []
    for result in results:
        found = check.found.get(result.name)
        out.append(found or HostStatus(result.name, problems=[result.reason or "unreachable"]))
    return out


def collect_secrets(hosts: list[Host], prompt) -> Secrets:
    """Sudo passwords a status needs, asked once up front; a missing one only limits what we see."""
    secrets = Secrets(prompt)
    for name in sorted({str(h.vars["fleetctl_become_secret"]) for h in hosts if h.vars.get("fleetctl_become_secret")}):
        try:
            secrets.get(name, "sudo password")
        except UsageError:
            pass
    return secrets


def show(console: Console, results: list[HostStatus], since_text: str) -> None:
    by = Counter((r.version or "-", r.health) for r in results)
    table = Table(title=f"agent status (log since {since_text})")
    for col in ("hosts", "version", "health"):
        table.add_column(col)
    for (version, health), n in sorted(by.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(str(n), version, health)
    if report.verbosity >= 0:  # -q: only what needs attention
        console.print(table)
    trouble = [r for r in results if r.health in ("unhealthy", "unreachable")]
    if trouble:
        detail = Table(title="needs attention")
        for col in ("host", "version", "health", "proxy", "errors", "problems"):
            detail.add_column(col, overflow="fold")
        for r in trouble[:200]:
            detail.add_row(r.name, r.version or "-", r.health, r.proxy or "-", str(r.errors), "; ".join(r.problems))
        console.print(detail)


def write_json(path: Path, results: list[HostStatus], since_text: str) -> None:
    outfile.write(path, json.dumps(as_json(results, since_text), indent=1) + "\n")


def as_json(results: list[HostStatus], since_text: str) -> dict:
    hosts = []
    for r in results:
        d = asdict(r)
        d.pop("events")
        hosts.append(d)
    return {
        "since": since_text,
        "hosts": hosts,
        "summary": {
            "by_version": dict(Counter(r.version or "none" for r in results)),
            "by_health": dict(Counter(r.health for r in results)),
        },
    }


def logs(hosts: list[Host], secrets: Secrets, since: timedelta | str, level: str, accept_new: bool,
         console: Console, step_timeout: int = STEP_TIMEOUT) -> int:
    if level not in agentlog.LEVELS:
        raise UsageError(f"--level {level!r}: use one of {', '.join(agentlog.LEVELS)}")
    results = sweep(hosts, secrets, since, 20, accept_new, step_timeout, Check(since, LOG_RECORDS, records_since=True))
    failed = 0
    for r in results:
        if r.health == "unreachable":
            console.print(f"{r.name}: unreachable: {'; '.join(r.problems)}")
            failed += 1
            continue
        for e in r.events:
            if e.level is None or e.level in agentlog.LEVELS[: agentlog.LEVELS.index(level) + 1]:
                console.print(f"{r.name} {e.time or '-'} [{e.level or '?'}] {e.message}")
    return ExitCode.FAILED if failed else ExitCode.OK


def select(inventory_path: Path, limit: str | None) -> list[Host]:
    return inventory.load(inventory_path).select(limit)
