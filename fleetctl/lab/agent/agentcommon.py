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
    hostile-output HOSTILE_LINES and the HUGE_LINE_BYTES line (once per log file) after the start-up
                   line, HOSTILE_CYCLE_LINE after each contact: raw bytes (terminal escapes, HTML,
                   NUL, invalid UTF-8), written with log_bytes, not log, whatever LogLevel says
"""
import fcntl
import json
import os
import re
import sys
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _append(path: str, chunks, dir_mode: int, file_mode: int) -> None:
    """Append what CHUNKS() yields under an exclusive lock on the file: the line's time is taken
    once the lock is held, so lines stay in time order and one written in pieces (the huge
    line) is never split by another process's line."""
    os.makedirs(os.path.dirname(path), mode=dir_mode, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for chunk in chunks():
            _write_all(fd, chunk)
    finally:
        os.close(fd)


def log_path(config: dict) -> str:
    return os.path.join(config.get("LogFileDir") or "/var/log/qualys/", "qualys-cloud-agent.log")


def log(level: str, message: str, config=None, always: bool = False) -> None:
    """Log one event, if LogLevel lets this level through (ALWAYS: a chatty build ignores it)."""
    config = config or read_config()
    if not always and LEVELS.index(level) > int(config.get("LogLevel", "3")):
        return
    if config.get("LogDestType") == "syslog":
        _record(level, message)
    else:
        pid, tid = os.getpid(), threading.get_ident()
        _append(log_path(config), lambda: [log_line(level, message, time.time(), pid, tid).encode()], 0o755, 0o644)


def _record(level: str, message: str) -> None:
    """One record in the unified log (LogDestType=syslog)."""
    pid, tid = os.getpid(), threading.get_ident()
    _append(UNIFIED_LOG, lambda: [(json.dumps(unified_record(level, message, time.time(), pid, tid)) + "\n").encode()],
            0o700, 0o600)


# ---- persona hostile-output: what a broken or compromised Mac says, byte for byte ----

HOSTILE = "hostile-output"
HOSTILE_LINES = [  # (level, message): each a trick on whoever shows the text (terminal, browser, parser)
    ("Error", b"Module update failed: \x1b]0;PWNED-TITLE\x07"),  # OSC 0: the terminal's window title
    ("Error", b"Scan engine reset\x1b[2J\x1b[H"),  # clear the screen, cursor home
    ("Warning", b"Clipboard sync: \x1b]52;c;cm0gLXJmIH4=\x07"),  # OSC 52: base64("rm -rf ~") into the clipboard
    ("Error", b"Manifest check failed: \x9b2J\x9b31mC1 CSI"),  # 8-bit CSI (C1 0x9b): clear, red
    ("Error", b"Binary signature INVALID\x08\x08\x08\x08\x08\x08\x08 valid \rAll checks passed"),  # BS/CR overwrite
    ("Error", b"<script>alert('fleet')</script><img src=x onerror=alert(1)>"),  # HTML report injection
    ("Error", b"Inventory item: before\x00after NUL"),  # NUL ends C strings, not the line
    ("Error", b"Data collection output: \xff\xfe\xc3\x28 not UTF-8"),  # invalid UTF-8
]
HOSTILE_CYCLE_LINE = (b"Data collection failed for module VM: \x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[H"
                      b"<script>alert('fleet')</script>\x9b31m\x00\xff\xfe\xc3\x28")
HOSTILE_TEXT = b"".join(message + b"\n" for _, message in HOSTILE_LINES)  # what the hostile tools print
HUGE_MARKER = b"Scan engine state dump: "
HUGE_LINE_BYTES = 60 << 20  # the whole line, date to newline: 62,914,560 bytes
_HUGE_BLOCK = b"\x1b[41m" + b"Q" * 59  # 64 bytes, repeated
SYSLOG_MAX = 2048  # what the unified log keeps of one syslog(3) message (the huge line is cut)


def log_bytes(level: str, message: bytes, config: dict) -> None:
    """One line whose MESSAGE reaches the log file byte for byte, whatever LogLevel says. In the
    unified log, what syslog(3) hands it: up to the first NUL, invalid UTF-8 replaced."""
    if config.get("LogDestType") == "syslog":
        _record(level, message.split(b"\0", 1)[0][:SYSLOG_MAX].decode("utf-8", "replace"))
        return
    pid, tid = os.getpid(), threading.get_ident()
    _append(log_path(config), lambda: [_prefix(level, pid, tid) + message + b"\n"], 0o755, 0o644)


def _prefix(level: str, pid: int, tid: int) -> bytes:
    """A line's date, time, pid, level and thread id, now: all but its message."""
    return log_line(level, "", time.time(), pid, tid)[:-1].encode()


def file_contains(path: str, needle: bytes, chunk: int = 1 << 20) -> bool:
    """Whether PATH holds NEEDLE, read a chunk at a time (the log may be hundreds of MB)."""
    try:
        f = open(path, "rb")
    except OSError:
        return False
    with f:
        tail = b""
        while block := f.read(chunk):
            if needle in tail + block:
                return True
            tail = block[-(len(needle) - 1):]
    return False


def log_huge_once(level: str, config: dict) -> bool:
    """The one huge line of this log file, HUGE_LINE_BYTES long, unless the file has it already:
    written 1 MiB at a time under the log's lock. Not for syslog (see SYSLOG_MAX)."""
    path = log_path(config)
    if config.get("LogDestType") == "syslog" or file_contains(path, HUGE_MARKER):
        return False
    pid, tid = os.getpid(), threading.get_ident()

    def chunks():
        head = _prefix(level, pid, tid) + HUGE_MARKER
        left = HUGE_LINE_BYTES - len(head) - 1
        yield head
        block = _HUGE_BLOCK * ((1 << 20) // len(_HUGE_BLOCK))
        while left > 0:
            yield block[:left]
            left -= len(block)
        yield b"\n"

    _append(path, chunks, 0o755, 0o644)
    return True


def print_hostile() -> None:
    """HOSTILE_TEXT on stdout and on stderr, flushed: the hostile tools' output."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
        stream.buffer.write(HOSTILE_TEXT)
        stream.buffer.flush()


# ---- what ps and pgrep see ----

def set_process_name(argv: list, comm: str) -> None:
    """Show this process as ARGV (/proc/<pid>/cmdline: `ps ax`, `pgrep -f`) named COMM (the
    kernel's name: `ps -e`, `pgrep`; 15 bytes at most on Linux), as the program a Mac runs
    rather than the python3 running it. Call it before starting threads.

    /proc/self/comm sets the name as prctl(PR_SET_NAME) does, and /proc/self/mem writes ARGV
    over the original argument strings (padded with NULs; only if it fits): neither needs
    ctypes, which would cost every simulated Mac's daemon ~1 MB more."""
    try:
        with open("/proc/self/comm", "wb") as f:
            f.write(comm.encode()[:15])
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b") ", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (stat fields 48, 49)
        title = b"\0".join(a.encode() for a in argv) + b"\0"
        if len(title) <= end - start:
            with open("/proc/self/mem", "r+b", buffering=0) as mem:
                mem.seek(start)
                mem.write(title + b"\0" * (end - start - len(title)))
    except (OSError, IndexError, ValueError):
        pass  # a name is cosmetic: never a reason for the daemon not to start
