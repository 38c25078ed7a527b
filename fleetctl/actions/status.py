"""status: read-only health, as the guide defines it, where fleetctl applied the agent's paths.

For a Mac with root (login or sudo -n) it is one round trip: the probe carries the records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fleetctl import agentlog, facts, render
from fleetctl.engine import Session, probe_values
from fleetctl.plan import HostPlan
from fleetctl.playbook import Playbook

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


def window(since: timedelta | str) -> list[str]:
    """`log show` arguments for the unified log: --last in minutes, or --start at a Mac time."""
    if isinstance(since, str):
        return ["--start", since]
    return ["--last", f"{max(1, -(-int(since.total_seconds()) // 60))}m"]


def _mac_since(now: str, since: timedelta | str) -> str:
    if isinstance(since, str):
        return since
    try:
        return (datetime.strptime(now, TIME_FORMAT) - since).strftime(TIME_FORMAT)
    except ValueError:
        return "0000"


class Check:
    """The status action for one sweep: what `--since` and how many records, and what it found.
    With RECORDS_SINCE (`fleetctl logs`) every record since then is read, in a second round trip
    once the Mac's clock is known, from the tail of the log that reaches back that far."""

    needs_root = False  # without root it still tells version, hostid and what the log is readable

    def __init__(self, since: timedelta | str, lines: int = 500, records_since: bool = False):
        self.since, self.lines, self.records_since = since, lines, records_since
        self.probe_values = {"log_lines": 0 if records_since else lines, "window": window(since)}
        self.found: dict[str, HostStatus] = {}

    def scripts(self, plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
        return [("status (read-only; the probe carries the agent's records)",
                 render.render("probe", **probe_values(self)))]

    def _records(self, s: Session, since: str) -> list[str]:
        if not self.records_since:
            return s.state.get("log_line", [])
        script = render.render("log_since", since=since, paths=s.paths, lines=self.lines)
        return s.step("log", script, privileged=s.has_root).out.splitlines()

    def run(self, s: Session) -> None:
        f, r = s.state, s.result
        status = self.found[r.name] = HostStatus(r.name)
        status.version = r.version_before
        status.provisioned = facts.first(f, "hostid") == "1"
        if facts.first(f, "uid") == "0":
            status.daemon_running = bool(facts.first(f, "daemon_pid"))
        status.proxy = facts.first(f, "proxy") or None
        status.hostid_file = facts.first(f, "hostid_file") or None
        status.log_source = facts.first(f, "log_source") or None
        since = _mac_since(s.since, self.since)
        events = agentlog.since(agentlog.parse("\n".join(self._records(s, since))), since)
        status.events = events
        problems = agentlog.at_least(events, "Error")
        status.errors = len(problems)
        status.warnings = len(agentlog.at_least(events, "Warning")) - status.errors
        r.status = "ok"
        if not status.version:
            status.health = "absent"
            return
        if not status.provisioned:
            status.problems.append(f"no hostid at {status.hostid_file}: not provisioned, or never reached the platform")
        if status.daemon_running is False:
            status.problems.append("daemon not running")
        if status.daemon_running is None:
            status.problems.append("daemon state unknown (no root: set fleetctl_become_secret)")
        if problems:
            status.problems.append(f"{status.errors} error(s) in the log, last: {agentlog.first_line(problems[-1])}")
        status.health = "unhealthy" if status.problems else "healthy"
        if status.problems:
            r.status, r.reason = "failed", "; ".join(status.problems)
