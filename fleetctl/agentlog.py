"""Turn qualys-cloud-agent.log lines into typed events, so reports can say what the agent did.

Format: `YYYY-MM-DD HH:MM:SS.mmm [qualys-cloud-agent][pid]:[Level]:[tid]:message`. A line
that does not start like that continues the previous event's message (multi-line output);
one before any event is kept as a malformed event rather than dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

LEVELS = ("Fatal", "Error", "Warning", "Information", "Debug", "Trace")
LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?) \[qualys-cloud-agent\]\[(?P<pid>\d+)\]:"
    r"\[(?P<level>[A-Za-z]+)\]:\[(?P<tid>\d+)\]:(?P<message>.*)$"
)
# (kind, pattern) checked in order on the message
KINDS = [
    ("checkin_ok", re.compile(r"check-in succeeded", re.I)),
    ("checkin_failed", re.compile(r"check-in failed", re.I)),
    ("proxy_failed", re.compile(r"^Proxy .* failed")),
    ("started", re.compile(r"^Qualys Cloud Agent \S+ started")),
    ("stopping", re.compile(r"^Qualys Cloud Agent stopping")),
    ("not_provisioned", re.compile(r"not provisioned", re.I)),
    ("scan_request", re.compile(r"^OnDemandRequest Params: ControlID=(?P<control_id>[\d.]+)")),
    ("scan_delayed", re.compile(r"^OnDemand request for Control ID : (?P<control_id>[\d.]+) will be delayed")),
    ("scan_started", re.compile(r"^OnDemand scan started for Control ID : (?P<control_id>[\d.]+)")),
    ("scan_completed", re.compile(r"^OnDemand scan completed for Control ID : (?P<control_id>[\d.]+)")),
    ("manifest_missing", re.compile(r"Manifest not found.*Control ID : (?P<control_id>[\d.]+)")),
    ("interval_scan", re.compile(r"^Interval Event of same type is in progress")),
    ("config_updated", re.compile(r"^Configuration updated")),
    ("upgrade", re.compile(r"^Upgrade requested")),
    ("uninstalled", re.compile(r"uninstalled", re.I)),
]


@dataclass
class Event:
    time: str | None  # Mac local time, as written
    level: str | None
    pid: int | None
    message: str
    kind: str
    control_id: str | None = None

    @property
    def is_problem(self) -> bool:
        return self.level in ("Fatal", "Error")


def classify(message: str) -> tuple[str, str | None]:
    for kind, pattern in KINDS:
        match = pattern.search(message)
        if match:
            return kind, match.groupdict().get("control_id")
    return "other", None


def parse(text: str) -> list[Event]:
    events: list[Event] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        match = LINE.match(line)
        if match and match["level"] in LEVELS:
            kind, control_id = classify(match["message"])
            events.append(Event(match["time"], match["level"], int(match["pid"]), match["message"], kind, control_id))
        elif events and events[-1].kind != "malformed" and line.strip():
            events[-1].message += "\n" + line
        elif line.strip():
            events.append(Event(None, None, None, line, "malformed"))
    return events


def since(events: list[Event], when: str) -> list[Event]:
    """Events at or after WHEN ('YYYY-MM-DD HH:MM:SS', Mac local time); malformed ones are kept."""
    return [e for e in events if e.time is None or e.time[:19] >= when]


def at_least(events: list[Event], level: str) -> list[Event]:
    """Events as severe as LEVEL or more (Error -> Fatal and Error)."""
    limit = LEVELS.index(level)
    return [e for e in events if e.level is not None and LEVELS.index(e.level) <= limit]
