"""What every part of the simulated Qualys Cloud Agent shares: its paths, its configuration
file, the invocation counter and the log. Stdlib only; on a simulated Mac this module lies,
like all the agent's modules, top-level in the app bundle's Contents/Resources.

The log. Lines have the documented format
`<date> <time.ms> [qualys-cloud-agent][<pid>]:[<Level>]:[<thread id>]:<message>`, in
LogFileDir/qualys-cloud-agent.log, or with LogDestType=syslog as records in the simulated
unified log (UNIFIED_LOG, read with the `log show` shim). Only these messages are written:

  quoted by the vendor guide (fleetctl may depend on them):
    [Information] OnDemandRequest Params: ControlID=<id>, Action=OnDemand, Type=<TYPE>, CPUThrottle=<n>
    [Information] Interval Event of same type is in progress with state INTERVAL_EVENT_SCAN
    [Information] OnDemand request for Control ID : <id> will be delayed.
  neutral (the guide does not have them: fleetctl must ignore them, or take them only as
  patterns an admin configured):
    [Information] Heartbeat acknowledged by platform <pod hostname> (proxy: <host:port>|none)
                  after every successful contact with the platform
    [Information] Scan results uploaded for ControlID=<id>      an on-demand scan finished
    [Warning]     Proxy <host:port> failed: <reason>            one per failing proxy
    [Error]       Platform communication failed: <reasons>      every route failed
    [Error]       Proxy configuration invalid: <reason>         bad proxy file; no contact at all
    [Information] Service starting, version <v>                 the daemon starts
    [Information] Service stopping                              the daemon stops
    [Information] Options received: <keys>                      the configuration tool ran
    [Debug]       Option values: <key=value, ...>               the same, with values: at LogLevel
                  4-5 secrets reach the log in clear, as the guide warns
  personas (lab/personas.py):
    agent-crashes  [Fatal] Unhandled exception in scan engine: Segmentation fault (signal 11); agent exiting
    log-errors     [Error] Data collection failed for module INV: command timed out (after each contact)
    chatty-agent   CHATTY_LINES (agentdaemon.py) every cycle, whatever LogLevel says: harmless
                   levels whose text says "error", "failed", "Fatal", "ERROR:" or even "[Error]"
"""
import fcntl
import json
import os
import re
import threading
import time

APP = "/Applications/QualysCloudAgent.app"
CONTENTS = APP + "/Contents"
DAEMON = CONTENTS + "/MacOS/qualys-cloud-agent"
SUPPORT = "/Library/Application Support/QualysCloudAgent"
CONFIG_DIR = SUPPORT + "/Config"
CONFIG = CONFIG_DIR + "/qualys-cloud-agent.conf"
PROXY_FILE = CONFIG_DIR + "/proxy"
DATA = SUPPORT + "/Data"
PID_FILE = DATA + "/qualys-cloud-agent.pid"
ONDEMAND = DATA + "/ondemand"
PLIST = "/Library/LaunchDaemons/com.qualys.cloud-agent.plist"
LEGACY = "/usr/local/qualys/cloud-agent"
CA_BUNDLE = CONTENTS + "/Config/cert/ca-bundle.crt"
LAB = "/private/var/fleetlab"


def host_traits() -> list:
    """The personas of this simulated Mac (the lab writes them in host.json)."""
    try:
        with open(LAB + "/host.json") as f:
            return json.load(f)["traits"]
    except (OSError, ValueError, KeyError):
        return []


ODD_LOG = "odd-log" in host_traits()
UNIFIED_LOG = LAB + "/unified-log/store.jsonl"  # what `log show` (mac/logshow.py) reads; root only
LEVELS = ["Fatal", "Error", "Warning", "Information", "Debug", "Trace"]
SYSLOG_PRIORITY = {"Fatal": 2, "Error": 3, "Warning": 4, "Information": 6, "Debug": 7, "Trace": 7}
DEFAULTS = {"LogLevel": "3", "LogFileDir": "/var/log/qualys/", "LogDestType": "file", "UseSudo": "0",
            "SudoCommand": "sudo", "User": "root", "Group": "wheel", "HostIdSearchDir": "/etc/",
            "CmdMaxTimeOut": "1800", "ProcessPriority": "0", "QualysProxyOrder": "sequential"}
SCAN_TYPES = {"vm": ["vm"], "pc": ["pc"], "inv": ["inv"], "udc": ["udc"], "sca": ["sca"], "vmpc": ["vm", "pc"]}


class Invalid(Exception):
    """A bad option or argument: printed, exit 1, nothing changed."""


def count(name: str) -> None:
    """Add one to NAME's invocation counter (tests read /private/var/fleetlab/counts).

    One copy per place it is installed: this one for the agent's modules; the macOS shims in
    /usr/local/bin/.lib have theirs (mac/shimcommon.py), and string-util keeps its own so it
    runs standalone, out of an extracted payload too."""
    try:
        fd = os.open(f"{LAB}/counts/{name}", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        n = int(os.read(fd, 32) or b"0")
        os.lseek(fd, 0, 0)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % (n + 1))
    finally:
        os.close(fd)


def read_settings() -> dict:
    """Only what was set with the configuration tool."""
    settings = {}
    try:
        with open(CONFIG) as f:
            for line in f:
                key, sep, value = line.rstrip("\n").partition("=")
                if sep:
                    settings[key] = value
    except FileNotFoundError:
        pass
    return settings


def read_config() -> dict:
    return {**DEFAULTS, **read_settings()}


def write_atomic(path: str, text: str, mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # whatever the umask
    with open(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def daemon_pid():
    try:
        with open(PID_FILE) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def require_root(tool: str) -> None:
    if os.geteuid() != 0:
        raise Invalid(f"{tool}: must be run as root (use sudo)")


def key_values(args: list, tool: str) -> dict:
    values = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise Invalid(f"{tool}: invalid argument '{arg}': expected Key=Value")
        values[key] = value
    return values


def int_in(value: str, low: int, high: int) -> bool:
    return re.fullmatch(r"-?\d+", value) is not None and low <= int(value) <= high


# ---- the log: a file, or the unified log with LogDestType=syslog ----

def log_line(level: str, message: str, when: float, pid: int, tid: int) -> str:
    """One line in the documented format (persona odd-log: a syslog-like one fleetctl must notice)."""
    if ODD_LOG:
        return f"{time.strftime('%b %d %H:%M:%S', time.localtime(when))} qualys-cloud-agent[{pid}] <{level}>: {message}\n"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d}"
    return f"{stamp} [qualys-cloud-agent][{pid}]:[{level}]:[{tid}]:{message}\n"


def unified_record(level: str, message: str, when: float, pid: int, tid: int) -> dict:
    """What syslog(3) hands macOS: a priority and the bare message (no date or level prefix)."""
    return {"time": when, "priority": SYSLOG_PRIORITY[level], "message": message, "pid": pid, "tid": tid,
            "process": "qualys-cloud-agent", "image": DAEMON}


def _append(path: str, text: str, dir_mode: int, file_mode: int) -> None:
    os.makedirs(os.path.dirname(path), mode=dir_mode, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def log(level: str, message: str, config=None, always: bool = False) -> None:
    """Log one event, if LogLevel lets this level through (ALWAYS: a chatty build ignores it)."""
    config = config or read_config()
    if not always and LEVELS.index(level) > int(config.get("LogLevel", "3")):
        return
    when, pid, tid = time.time(), os.getpid(), threading.get_ident()
    if config.get("LogDestType") == "syslog":
        record = unified_record(level, message, when, pid, tid)
        _append(UNIFIED_LOG, json.dumps(record) + "\n", 0o700, 0o600)
    else:
        path = os.path.join(config.get("LogFileDir") or "/var/log/qualys/", "qualys-cloud-agent.log")
        _append(path, log_line(level, message, when, pid, tid), 0o755, 0o644)
