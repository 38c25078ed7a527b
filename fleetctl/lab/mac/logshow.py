"""log on a simulated Mac: `log show` over the simulated unified log.

The agent (agent/agentcommon.py) appends one JSON record a line to the root-only store
UNIFIED_LOG when LogDestType=syslog; `log show` selects and prints them in macOS's styles
(default, syslog, json, ndjson), with its level, time and predicate filters. Every other
subcommand is a usage error. Lies beside macshim.py in /usr/local/bin/.lib; stdlib only.
"""
import os
import sys

from shimcommon import LAB, fail, loads

UNIFIED_LOG = LAB + "/unified-log/store.jsonl"  # written by the agent (agent/agentcommon.py), root only
LOG_USAGE = """usage:
    log <command>

global options:
    -?, --help
    -q, --quiet
    -v, --verbose

commands:
    collect         gather system logs into a log archive
    config          view/change logging system settings
    erase           delete system logging data
    show            view/search system logs
    stream          watch live system logs
    stats           show system logging statistics

further help:
    log help <command>
    log help predicates"""
SHOW_USAGE = """usage:
    log show [options] <archive>
    log show [options]

description:
    Shows contents of the system log datastore, archive or a specific tracev3 file.

options:
    --style <style>                Output the content as a different style: default, syslog, json, ndjson
    --info                         Show info level messages
    --debug                        Show debug level messages
    --predicate <predicate>        Filter messages using the provided predicate
    --start <date>                 Display events from the given date: "YYYY-MM-DD [HH:MM:SS]"
    --last <num>[m|h|d]            Display events from the recent past"""
EX_USAGE = 64
STYLES = ("default", "syslog", "json", "ndjson")
PREDICATE_KEYS = {"process", "processImagePath", "processID", "subsystem", "category", "eventMessage", "messageType"}


def message_type(priority: int) -> str:
    """How macOS files a syslog(3) priority in the unified log."""
    if priority <= 2:
        return "Fault"
    return {3: "Error", 4: "Default", 5: "Default", 6: "Info"}.get(priority, "Debug")


def parse_show_args(args: list) -> dict:
    """Options of `log show`; ValueError (with the message to print) on anything else."""
    opts = {"style": "default", "info": False, "debug": False, "predicate": None, "start": None, "last": None}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--info", "--debug"):
            opts[arg[2:]] = True
        elif arg in ("--style", "--predicate", "--start", "--last") and i + 1 < len(args):
            opts[arg[2:]] = args[i + 1]
            i += 1
        else:
            raise ValueError(f"log: unrecognized option `{arg}'\n{SHOW_USAGE}")
        i += 1
    if opts["style"] not in STYLES:
        raise ValueError(f"log: invalid style `{opts['style']}'\n{SHOW_USAGE}")
    return opts


def since(opts: dict, now: float):
    """The earliest time to show, from --start or --last; None for everything."""
    import re
    import time

    if opts["start"] is not None:
        for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
            try:
                return time.mktime(time.strptime(opts["start"], form))
            except ValueError:
                pass
        raise ValueError(f"log: invalid start date `{opts['start']}'\n{SHOW_USAGE}")
    if opts["last"] is not None:
        m = re.fullmatch(r"(\d+)([smhd]?)", opts["last"])
        if not m:
            raise ValueError(f"log: invalid time `{opts['last']}'\n{SHOW_USAGE}")
        return now - int(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
    return None


def parse_predicate(text: str) -> list:
    """`key == "value"`, `key != "value"`, `key CONTAINS[c] "value"`, joined by AND or &&."""
    import re

    clause = re.compile(r'\s*(\w+)\s*(==|!=|CONTAINS\[c\]|CONTAINS|BEGINSWITH)\s*(?:"([^"]*)"|\'([^\']*)\'|(\d+))\s*',
                        re.I)
    clauses = []
    for part in re.split(r"\s+(?:AND|&&)\s+", text.strip(), flags=re.I):
        m = clause.fullmatch(part)
        if not m or m[1] not in PREDICATE_KEYS:
            raise ValueError(f"log: Cannot use predicate '{text}': unsupported or malformed")
        value = next(v for v in (m[3], m[4], m[5]) if v is not None)
        clauses.append((m[1], m[2].upper(), value))
    return clauses


def matches(event: dict, clauses: list) -> bool:
    for key, op, value in clauses:
        have = str(event.get(key, ""))
        if op == "==" and have != value or op == "!=" and have == value:
            return False
        if op == "CONTAINS" and value not in have or op == "CONTAINS[C]" and value.lower() not in have.lower():
            return False
        if op == "BEGINSWITH" and not have.startswith(value):
            return False
    return True


def event(record: dict) -> dict:
    """One stored record as macOS's ndjson shows a log event (same keys, same order)."""
    import datetime
    import uuid

    image_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, record["image"])).upper()
    stamp = datetime.datetime.fromtimestamp(record["time"]).astimezone()
    return {
        "traceID": int(record["time"] * 1e6) & 0xFFFFFFFFFFFF, "eventMessage": record["message"],
        "eventType": "logEvent", "source": None, "formatString": "%{public}s", "activityIdentifier": 0,
        "subsystem": "", "category": "", "threadID": record["tid"] & 0xFFFFFFF, "senderImageUUID": image_uuid,
        "backtrace": {"frames": []}, "bootUUID": "", "processImagePath": record["image"],
        "timestamp": stamp.strftime("%Y-%m-%d %H:%M:%S.%f%z"), "senderImagePath": "/usr/lib/system/libsystem_c.dylib",
        "machTimestamp": int(record["time"] * 1e9), "messageType": message_type(record["priority"]),
        "processImageUUID": image_uuid, "processID": record["pid"], "senderProgramCounter": 0,
        "parentActivityIdentifier": 0, "timezoneName": "", "process": record["process"],
    }


def stored_records() -> list:
    """Every record in the store; nothing for a non-root caller (the records are private)."""
    if os.geteuid() != 0:
        return []
    try:
        with open(UNIFIED_LOG) as f:
            return [loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def select_events(opts: dict, records: list, now: float) -> list:
    start = since(opts, now)
    clauses = parse_predicate(opts["predicate"]) if opts["predicate"] else []
    shown = {"Default", "Error", "Fault"} | ({"Info"} if opts["info"] else set()) | ({"Debug"} if opts["debug"] else set())
    events = [event(r) for r in records if start is None or r["time"] >= start]
    return [e for e in events if e["messageType"] in shown and matches(e, clauses)]


def _skipping(opts: dict) -> str:
    if opts["info"] and opts["debug"]:
        return ""
    if opts["info"]:
        return "Skipping debug messages, pass --debug to include.\n"
    if opts["debug"]:
        return "Skipping info messages, pass --info to include.\n"
    return "Skipping info and debug messages, pass --info and/or --debug to include.\n"


def render(opts: dict, events: list) -> str:
    """The text `log show` prints in the chosen style."""
    public = [{k: v for k, v in e.items() if k != "process"} for e in events]
    if opts["style"] in ("ndjson", "json"):
        import json
    if opts["style"] == "ndjson":
        compact = {"separators": (",", ":")}  # as macOS prints it
        return "".join(json.dumps(e, **compact) + "\n" for e in public) + \
            json.dumps({"count": len(events), "finished": 1}, **compact) + "\n"
    if opts["style"] == "json":
        return json.dumps(public, indent=2) + "\n"
    out = f'Filtering the log data using "{opts["predicate"]}"\n' if opts["predicate"] else ""
    out += _skipping(opts)
    if opts["style"] == "syslog":
        out += "Timestamp                       (process)[PID]    \n"
        for e in events:
            out += f"{e['timestamp']}  localhost {e['process']}[{e['processID']}]: {e['eventMessage']}\n"
        return out
    out += "Timestamp                       Thread     Type        Activity             PID    TTL  \n"
    for e in events:
        out += (f"{e['timestamp']} {hex(e['threadID']):<10} {e['messageType']:<11} 0x0                  "
                f"{e['processID']:<6} 0    {e['process']}: {e['eventMessage']}\n")
    kinds = {t: sum(e["messageType"] == t for e in events) for t in ("Default", "Info", "Debug", "Error", "Fault")}
    out += "-" * 116 + "\n"
    out += (f"Log      - Default: {kinds['Default']:>10}, Info: {kinds['Info']:>16}, Debug: {kinds['Debug']:>13}, "
            f"Error: {kinds['Error']:>10}, Fault: {kinds['Fault']:>10}\n")
    out += f"Activity - Create: {0:>11}, Transition: {0:>10}, Actions: {0:>11}\n"
    return out


def log_cmd(args: list) -> None:
    """`log show ...` like macOS; every other subcommand or option is a usage error (exit 64)."""
    import time

    if not args or args[0] != "show":
        fail(f"log: unrecognized command `{args[0]}'\n{LOG_USAGE}" if args else LOG_USAGE, EX_USAGE)
    try:
        opts = parse_show_args(args[1:])
        events = select_events(opts, stored_records(), time.time())
    except ValueError as e:
        fail(str(e), EX_USAGE)
    sys.stdout.write(render(opts, events))
