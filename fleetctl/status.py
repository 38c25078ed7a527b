"""`fleetctl status` and `fleetctl logs`: read-only, one round trip per Mac, safe to run hourly."""
from __future__ import annotations

import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fleetctl import agent, agentlog, facts, inventory, outfile, render, report, ssh, sshconfig
from fleetctl.errors import UsageError
from fleetctl.plan import APPLIED_FILE
from fleetctl.inventory import Host
from fleetctl.sshconfig import Endpoint
from fleetctl.secrets import Secrets

MARKER = "---log---\n"
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass
class HostStatus:
    name: str
    health: str = "unreachable"  # healthy | unhealthy | absent | unreachable
    problems: list[str] = field(default_factory=list)
    version: str | None = None
    provisioned: bool | None = None
    daemon_running: bool | None = None  # None: not known without root
    errors: int = 0
    warnings: int = 0
    proxy: str | None = None  # the proxy file in force (credentials hidden), "none": direct
    hostid_file: str | None = None  # where fleetctl applied HostIdSearchDir (default /etc/qualys/hostid)
    log_source: str | None = None  # file or syslog (the macOS unified log)
    events: list[agentlog.Event] = field(default_factory=list, repr=False)


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


def _mac_since(now: str, since: timedelta | str) -> str:
    if isinstance(since, str):
        return since
    try:
        return (datetime.strptime(now, TIME_FORMAT) - since).strftime(TIME_FORMAT)
    except ValueError:
        return "0000"


def _window(since: timedelta | str) -> list[str]:
    """`log show` arguments for the unified log: --last in minutes, or --start at a Mac time."""
    if isinstance(since, str):
        return ["--start", since]
    return ["--last", f"{max(1, -(-int(since.total_seconds()) // 60))}m"]


def _mode(conn: ssh.Connection, host: Host, secrets: Secrets, script: str) -> ssh.Result:
    """Run as root where we can (sudo -n, or the stored sudo password), else as the login user."""
    result = conn.run(script, ssh.SUDO_NOPASSWD)
    if result.rc == 0:
        return result
    secret = host.vars.get("fleetctl_become_secret")
    if "password is required" in result.err and secret and secret in secrets.values:
        result = conn.run(script, ssh.SUDO_PASSWORD, secrets.values[secret])
        if result.rc == 0:
            return result
    return conn.run(script, ssh.SHELL)


def check(host: Host, where: Endpoint, secrets: Secrets, since: timedelta | str, accept_new: bool,
          lines: int = 500) -> HostStatus:
    status = HostStatus(host.name)
    script = render.render(
        "status", package_id=agent.PACKAGE_ID, label=agent.LABEL, proxy_file=agent.PROXY_FILE, lines=lines,
        applied_file=APPLIED_FILE, defaults=agent.Paths(), window=_window(since))
    try:
        conn = ssh.Connection(where, host.known_hosts, accept_new)
    except ssh.Unreachable as e:
        status.problems = [str(e)]
        return status
    try:
        result = _mode(conn, host, secrets, script)
    except ssh.Unreachable as e:
        status.problems = [str(e)]
        return status
    finally:
        conn.close()
    head, _, log = result.out.partition(MARKER)
    f = facts.parse(head)
    status.version = facts.first(f, "version") or None
    status.provisioned = facts.first(f, "hostid") == "1"
    if facts.first(f, "uid") == "0":
        status.daemon_running = bool(facts.first(f, "daemon_pid"))
    status.proxy = facts.first(f, "proxy") or None
    status.hostid_file, status.log_source = facts.first(f, "hostid_file") or None, facts.first(f, "log_source") or None
    events = agentlog.since(agentlog.parse(log), _mac_since(facts.first(f, "now"), since))
    status.events = events
    status.errors = len(agentlog.at_least(events, "Error"))
    status.warnings = len(agentlog.at_least(events, "Warning")) - status.errors
    if not status.version:
        status.health = "absent"
        return status
    if not status.provisioned:
        status.problems.append(f"no hostid at {status.hostid_file}: not provisioned, or never reached the platform")
    if status.daemon_running is False:
        status.problems.append("daemon not running")
    if status.daemon_running is None:
        status.problems.append("daemon state unknown (no root: set fleetctl_become_secret)")
    if status.errors:
        last = agentlog.at_least(events, "Error")[-1]
        status.problems.append(f"{status.errors} error(s) in the log, last: {agentlog.first_line(last)}")
    status.health = "unhealthy" if status.problems else "healthy"
    return status


def sweep(hosts: list[Host], secrets: Secrets, since: timedelta | str, forks: int, accept_new: bool,
          lines: int = 500) -> list[HostStatus]:
    endpoints = [sshconfig.endpoint(h) for h in hosts]  # a bad ssh config stops us before any connection
    with ThreadPoolExecutor(max_workers=max(1, forks)) as pool:
        return list(pool.map(lambda h, e: check(h, e, secrets, since, accept_new, lines), hosts, endpoints))


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
         console: Console) -> int:
    if level not in agentlog.LEVELS:
        raise UsageError(f"--level {level!r}: use one of {', '.join(agentlog.LEVELS)}")
    results = sweep(hosts, secrets, since, forks=20, accept_new=accept_new, lines=5000)
    failed = 0
    for r in results:
        if r.health == "unreachable":
            console.print(f"{r.name}: unreachable: {'; '.join(r.problems)}", markup=False, highlight=False)
            failed += 1
            continue
        for e in r.events:
            if e.level is None or e.level in agentlog.LEVELS[: agentlog.LEVELS.index(level) + 1]:
                console.print(f"{r.name} {e.time or '-'} [{e.level or '?'}] {e.message}", markup=False,
                              highlight=False)
    return 3 if failed else 0


def select(inventory_path: Path, limit: str | None) -> list[Host]:
    return inventory.load(inventory_path).select(limit)
