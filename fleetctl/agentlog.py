"""Turn the agent's log into typed events, knowing only what the vendor guide documents.

File format (LogDestType=file): `YYYY-MM-DD HH:MM:SS.mmm [qualys-cloud-agent][pid]:[Level]:[tid]:message`.
A line that does not start like that continues the previous event's message (multi-line
output); one before any event is kept as a malformed event rather than dropped.

With LogDestType=syslog macOS keeps the lines in its unified log; `log show --style ndjson`
gives one JSON object per record, whose messageType stands in for the level (Error, Fault).

The guide quotes only three messages (a scan request and the two scan-delay lines): those
are the only kinds recognised. Anything else is `other`, whatever words it contains.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

LEVELS = ("Fatal", "Error", "Warning", "Information", "Debug", "Trace")
LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?) \[qualys-cloud-agent\]\[(?P<pid>\d+)\]:"
    r"\[(?P<level>[A-Za-z]+)\]:\[(?P<tid>\d+)\]:(?P<message>.*)$"
)
# unified log messageType -> the agent's level (syslog priorities as macOS records them)
UNIFIED_LEVELS = {"Fault": "Fatal", "Error": "Error", "Default": "Warning", "Info": "Information", "Debug": "Debug"}
# (kind, pattern) checked in order on the message: the guide's own wording only
KINDS = [
    ("scan_request", re.compile(r"^OnDemandRequest Params: ControlID=(?P<control_id>[\d.]+)")),
    ("scan_delayed", re.compile(r"^OnDemand request for Control ID : (?P<control_id>[\d.]+) will be delayed")),
    ("interval_scan", re.compile(r"^Interval Event of same type is in progress")),
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


def _unified(line: str) -> Event | None:
    """One `log show --style ndjson` record; None for the closing count line or a stray one."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or "eventMessage" not in record:
        return None
    message = str(record["eventMessage"])
    inner = LINE.match(message)  # the agent may send its own formatted line to syslog
    if inner and inner["level"] in LEVELS:
        kind, control_id = classify(inner["message"])
        return Event(inner["time"], inner["level"], int(inner["pid"]), inner["message"], kind, control_id)
    kind, control_id = classify(message)
    pid = record.get("processID")
    return Event(str(record.get("timestamp", ""))[:23] or None, UNIFIED_LEVELS.get(str(record.get("messageType"))),
                 pid if isinstance(pid, int) else None, message, kind, control_id)


def parse(text: str) -> list[Event]:
    events: list[Event] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        match = LINE.match(line)
        if match and match["level"] in LEVELS:
            kind, control_id = classify(match["message"])
            events.append(Event(match["time"], match["level"], int(match["pid"]), match["message"], kind, control_id))
        elif line.startswith("{"):
            event = _unified(line)
            if event:
                events.append(event)
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


def first_line(event: Event) -> str:
    """How a problem is quoted in a reason: level and the message's first line."""
    return f"[{event.level}] {event.message.splitlines()[0][:200]}"
