"""The simulated Qualys Cloud Agent, installed by the lab's fake package on simulated Macs.

One file behind the real script names (see pkgbuild.TOOLS): the configuration tool,
upgrade, restart, uninstall, cloudagentctl and the daemon itself (string-util is its own
program, stringutil.py). It does what ../../shared/spec/qualys-macos-agent.md says the
real agent does, and never more kindly. Stdlib only.

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
    chatty-agent   CHATTY_LINES every cycle, whatever LogLevel says: harmless levels whose text
                   says "error", "failed", "Fatal", "ERROR:" or even "[Error]"

The hostid is written by the daemon, not the configuration tool: after a successful
contact, whenever <HostIdSearchDir>/qualys/hostid is missing, with the id the platform
answered (it keeps the one the agent sent, or assigns one on first contact).
"""
import base64
import fcntl
import http.client
import json
import os
import plistlib
import pwd
import grp
import random
import re
import select
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.parse

try:
    import stringutil  # on a simulated Mac: shipped beside this file
except ImportError:  # on the controller (unit tests)
    from fleetctl.lab.agent import stringutil

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
UNIFIED_LOG = LAB + "/unified-log/store.jsonl"  # what `log show` (mac/macshim.py) reads; root only
DEFAULT_SERVER_URI = "https://qagpublic.qg1.fleetlab.test/CloudAgent"
LEVELS = ["Fatal", "Error", "Warning", "Information", "Debug", "Trace"]
SYSLOG_PRIORITY = {"Fatal": 2, "Error": 3, "Warning": 4, "Information": 6, "Debug": 7, "Trace": 7}
DEFAULTS = {"LogLevel": "3", "LogFileDir": "/var/log/qualys/", "LogDestType": "file", "UseSudo": "0",
            "SudoCommand": "sudo", "User": "root", "Group": "wheel", "HostIdSearchDir": "/etc/",
            "CmdMaxTimeOut": "1800", "ProcessPriority": "0", "QualysProxyOrder": "sequential"}
SCAN_TYPES = {"vm": ["vm"], "pc": ["pc"], "inv": ["inv"], "udc": ["udc"], "sca": ["sca"], "vmpc": ["vm", "pc"]}
CHECKIN_INTERVAL_S = 60
CONTACT_TIMEOUT_S = 10
MAX_CYCLES = 5000  # the daemon stops by itself after this many cycles (days at the interval)
MAX_PROXIES = 5
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
CHATTY_LINES = [
    ("Information", "Inventory delta computed: 0 errors, 0 failed items, 412 unchanged"),
    ("Debug", "HTTP client retry policy: on_error=backoff, max_failed=3"),
    ("Information", "PC module: controls with severity Fatal evaluated: 0"),
    ("Debug", "Parsed key ERROR: none (expected)"),
    ("Information", "Service health: no errors since start; last failed job: none"),
    ("Debug", 'Localized strings loaded: [Error] -> "Error", [Fatal] -> "Fatal"'),
    ("Trace", "ScanEngine tick: queue=0, errors=0"),
    ("Information", "Error reporting channel ready"),
    ("Debug", "ERROR: counter reset to 0 (not an error)"),
]
LOG_ERRORS_LINE = "Data collection failed for module INV: command timed out"


class Invalid(Exception):
    """A bad option or argument: printed, exit 1, nothing changed."""


class ProxyConfigError(Exception):
    """The proxy file breaks the guide's rules: the agent does not contact the platform at all."""


# ---- shared helpers ----

def count(name: str) -> None:
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


def version() -> str:
    with open(CONTENTS + "/Info.plist", "rb") as f:
        return plistlib.load(f)["CFBundleShortVersionString"]


def host_traits() -> list:
    try:
        with open(LAB + "/host.json") as f:
            return json.load(f)["traits"]
    except (OSError, ValueError, KeyError):
        return []


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


# ---- the log: a file, or the unified log with LogDestType=syslog ----

def log_line(level: str, message: str, when: float, pid: int, tid: int) -> str:
    """One line in the documented format."""
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


# ---- qualys-cloud-agent.sh: the configuration tool ----

def _int_in(value: str, low: int, high: int) -> bool:
    return re.fullmatch(r"-?\d+", value) is not None and low <= int(value) <= high


def validate(key: str, value: str) -> None:
    def bad(expected: str) -> Invalid:
        return Invalid(f"Invalid value for {key}: '{value}' ({expected})")

    if key in ("ActivationId", "CustomerId"):
        if not UUID.match(value):
            raise bad("expected a UUID like 1a2b3c4d-0000-4000-8000-123456789abc")
    elif key == "ServerUri":
        uri = urllib.parse.urlsplit(value)
        if uri.scheme != "https" or not uri.hostname or not uri.path.rstrip("/").endswith("/CloudAgent"):
            raise bad("expected https://<platform>/CloudAgent")
    elif key == "LogLevel":
        if not _int_in(value, 0, 5):
            raise bad("expected 0-5")
    elif key in ("LogFileDir", "HostIdSearchDir"):
        if not value.startswith("/"):
            raise bad("expected an absolute directory")
    elif key == "LogDestType":
        if value not in ("file", "syslog"):
            raise bad("expected file or syslog")
    elif key == "UseSudo":
        if value not in ("0", "1"):
            raise bad("expected 0 or 1")
    elif key == "SudoCommand":
        if not value.strip():
            raise bad("expected a command such as sudo or pbrun")
    elif key == "User":
        try:
            pwd.getpwnam(value)
        except KeyError:
            raise bad("no such user on this Mac") from None
    elif key == "Group":
        try:
            grp.getgrnam(value)
        except KeyError:
            raise bad("no such group on this Mac; create it first") from None
    elif key == "CmdMaxTimeOut":
        if not _int_in(value, 1, 10 ** 7):
            raise bad("expected a number of seconds")
    elif key == "ProcessPriority":
        if not _int_in(value, -20, 19):
            raise bad("expected a nice value from -20 to 19")
    elif key == "QualysProxyOrder":
        if value not in ("sequential", "seq", "random"):
            raise bad("expected sequential, seq or random")
    else:
        raise Invalid(f"Invalid option: {key}")


def hostid_path(config: dict) -> str:
    return os.path.join(config["HostIdSearchDir"], "qualys", "hostid")


def configure(args: list) -> None:
    """Validate, save, tell the daemon (SIGHUP). The hostid comes later, from the platform."""
    require_root("qualys-cloud-agent.sh")
    if not args:
        raise Invalid("Usage: qualys-cloud-agent.sh ActivationId=<uuid> CustomerId=<uuid> "
                      "[ServerUri=<url>/CloudAgent] [Option=Value ...]")
    changes = key_values(args, "qualys-cloud-agent.sh")
    for key, value in changes.items():
        validate(key, value)
    settings = {**read_settings(), **changes}
    provisioning = "ActivationId" in changes or "CustomerId" in changes
    if provisioning and not ("ActivationId" in settings and "CustomerId" in settings):
        raise Invalid("ActivationId and CustomerId are both required to provision the agent")
    settings.setdefault("ServerUri", DEFAULT_SERVER_URI)  # a package is built for one platform
    write_atomic(CONFIG, "".join(f"{k}={v}\n" for k, v in sorted(settings.items())), 0o600)
    config = {**DEFAULTS, **settings}
    if provisioning or "HostIdSearchDir" in changes:
        print(f"Setting permission for user: {config['User']}")
        print(f"Setting permission for group: {config['Group']}")
        print(f"hostid search path: {config['HostIdSearchDir'].rstrip('/') or '/'}")
    log("Information", "Options received: " + ", ".join(sorted(changes)), config)
    log("Debug", "Option values: " + ", ".join(f"{k}={v}" for k, v in sorted(changes.items())), config)
    pid = daemon_pid()
    if pid:
        os.kill(pid, signal.SIGHUP)


# ---- the proxy file, as strictly as the guide defines it ----

CRED_TEXT = r"(?:[A-Za-z0-9\-._~!&'()*+,=]|%[0-9A-Fa-f]{2})+"  # ':' '@' '$' ';' must be percent-encoded
CREDENTIAL = rf"(?:#[A-Za-z0-9_-]+|{CRED_TEXT})"  # '#...': encrypted with string-util
PROXY_URL = re.compile(rf"https://(?:(?P<user>{CREDENTIAL}):(?P<password>{CREDENTIAL})@)?"
                       r"(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?")
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
FQDN = re.compile(rf"(?=.{{1,253}}$){LABEL}(?:\.{LABEL})*\.(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9-]+")
IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
DOMAIN = re.compile(rf"\.?{LABEL}(?:\.{LABEL})*")


def credential(text: str) -> str:
    """A user or password as written in the proxy file: percent-encoded, and maybe encrypted
    with string-util ('#<its output>'): decrypted first, then percent-decoded like any other."""
    if text.startswith("#"):
        try:
            text = stringutil.decode(text[1:])
        except ValueError:
            raise ProxyConfigError("a credential starting with '#' is not string-util output") from None
    try:
        return urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ProxyConfigError("a percent-encoded credential is not UTF-8") from None


def parse_proxy_url(text: str, n: int) -> dict:
    """One proxy: https://[user:password@]host[:port], host an IPv4 address or an FQDN."""
    m = PROXY_URL.fullmatch(text)
    if not m:
        raise ProxyConfigError(f"proxy {n} is not https://[user:password@]host[:port] "
                               "(special characters in credentials must be percent-encoded)")
    host, port = m["host"], int(m["port"] or 443)
    if not (IPV4.fullmatch(host) or FQDN.fullmatch(host)):
        raise ProxyConfigError(f"proxy {n}: host {host!r} is neither an IPv4 address nor a fully qualified name")
    if not 1 <= port <= 65535:
        raise ProxyConfigError(f"proxy {n}: port {port} is out of range")
    user = credential(m["user"]) if m["user"] else None
    password = credential(m["password"]) if m["password"] else None
    return {"host": host, "port": port, "user": user, "password": password}


def parse_proxy_value(value: str) -> list:
    """One URL, or 1-5 URLs separated by ';' inside double quotes."""
    if '"' in value:
        if len(value) < 2 or value[0] != '"' or value[-1] != '"' or '"' in value[1:-1]:
            raise ProxyConfigError("the value has stray double quotes")
        urls = value[1:-1].split(";")
    elif ";" in value:
        raise ProxyConfigError("several proxies must be written inside double quotes")
    else:
        urls = [value]
    if len(urls) > MAX_PROXIES:
        raise ProxyConfigError(f"{len(urls)} proxies listed; at most {MAX_PROXIES} are allowed")
    return [parse_proxy_url(url, n) for n, url in enumerate(urls, start=1)]


def parse_proxy_file(text: str):
    """Return (proxies, no_proxy domains), or raise ProxyConfigError with the reason.

    Either exactly one line `qualys_https_proxy=<value>` or `https_proxy=<value>`, or the
    bypass form: `export qualys_https_proxy=<value>` and `export no_proxy=<domains>`.
    """
    lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    if lines == [""]:
        raise ProxyConfigError("the file is empty")
    if len(lines) == 1 and not lines[0].startswith("export "):
        key, sep, value = lines[0].partition("=")
        if not sep or key not in ("qualys_https_proxy", "https_proxy"):
            raise ProxyConfigError("expected one line qualys_https_proxy=<url> or https_proxy=<url>")
        return parse_proxy_value(value), []
    blank = next((n for n, line in enumerate(lines, start=1) if not line.strip()), None)
    if blank:
        raise ProxyConfigError(f"line {blank} is blank")
    found = {}
    for n, line in enumerate(lines, start=1):
        key, sep, value = line.partition("=")
        if not sep or key not in ("export qualys_https_proxy", "export no_proxy") or key in found:
            raise ProxyConfigError(f"line {n}: expected one line qualys_https_proxy=<url>, or the two lines "
                                   "export qualys_https_proxy=<url> and export no_proxy=<domain>")
        found[key] = value
    if len(found) != 2:
        raise ProxyConfigError("the bypass form needs both export qualys_https_proxy= and export no_proxy= lines")
    domains = found["export no_proxy"].split(",")
    if not all(DOMAIN.fullmatch(d) for d in domains):
        raise ProxyConfigError("no_proxy must be a domain name such as qualys.com")
    return parse_proxy_value(found["export qualys_https_proxy"]), domains


def load_proxy_file(path: str = PROXY_FILE):
    """(proxies, no_proxy) from PATH; ([], []) when there is no file. Owner root, mode 660 only."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [], []
    if not stat.S_ISREG(st.st_mode):
        raise ProxyConfigError("the proxy file is not a regular file")
    if st.st_uid != 0 or stat.S_IMODE(st.st_mode) != 0o660:
        raise ProxyConfigError(f"the proxy file must be owned by root with mode 660 "
                               f"(found uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ProxyConfigError(f"the proxy file cannot be read: {e}") from None
    return parse_proxy_file(text)


def bypass(host: str, no_proxy: list) -> bool:
    return any(host == d.lstrip(".") or host.endswith("." + d.lstrip(".")) for d in no_proxy)


# ---- contact with the platform (daemon) ----

def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    for bundle in ("/Library/Keychains/fleetlab-root-ca.pem", CA_BUNDLE):
        if os.path.exists(bundle) and os.path.getsize(bundle):
            context.load_verify_locations(bundle)
    return context


def _connection(uri, proxy, context) -> http.client.HTTPSConnection:
    """A connection to the pod, tunnelled (CONNECT) through PROXY with its own credentials."""
    if proxy is None:
        return http.client.HTTPSConnection(uri.hostname, uri.port or 443, context=context, timeout=CONTACT_TIMEOUT_S)
    conn = http.client.HTTPSConnection(proxy["host"], proxy["port"], context=context, timeout=CONTACT_TIMEOUT_S)
    headers = {}
    if proxy["user"] is not None:
        creds = f"{proxy['user']}:{proxy['password']}".encode()
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(creds).decode()
    conn.set_tunnel(uri.hostname, uri.port or 443, headers=headers)
    return conn


def _check_in(conn, uri, body: bytes) -> dict:
    try:
        conn.request("POST", uri.path.rstrip("/") + "/checkin", body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        answer = json.loads(reply.read() or b"{}")
    finally:
        conn.close()
    if reply.status != 200 or not isinstance(answer, dict):
        raise OSError(f"HTTP {reply.status}")
    return answer


def contact(config: dict, hostid: str):
    """Check in once; return the platform's answer, or None (the failure is logged)."""
    uri = urllib.parse.urlsplit(config["ServerUri"])
    try:
        proxies, no_proxy = load_proxy_file()
    except ProxyConfigError as e:  # fail-closed: no contact at all, not even direct
        log("Error", f"Proxy configuration invalid: {e}", config)
        return None
    if bypass(uri.hostname, no_proxy):
        proxies = []
    if config.get("QualysProxyOrder") == "random":
        random.shuffle(proxies)
    body = json.dumps({
        "hostid": hostid, "agent_version": version(), "customer_id": config["CustomerId"],
        "activation_id": config["ActivationId"], "hostname": socket.gethostname(),
    }).encode()
    context = _tls_context()
    failures = []
    for proxy in proxies or [None]:  # with proxies configured, never a direct connection
        shown = f"{proxy['host']}:{proxy['port']}" if proxy else "none"
        try:
            answer = _check_in(_connection(uri, proxy, context), uri, body)
        except (OSError, ValueError, http.client.HTTPException) as e:
            failures.append(f"proxy {shown}: {e}" if proxy else f"{uri.hostname}:{uri.port or 443}: {e}")
            if proxy:
                log("Warning", f"Proxy {shown} failed: {e}", config)
            continue
        log("Information", f"Heartbeat acknowledged by platform {uri.hostname} (proxy: {shown})", config)
        return answer
    log("Error", "Platform communication failed: " + "; ".join(failures), config)
    return None


def read_hostid(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def save_manifests(modules: list) -> None:
    for module in modules:
        manifest = f"{DATA}/manifests/{module}.db"
        if not os.path.exists(manifest):
            os.makedirs(os.path.dirname(manifest), exist_ok=True)
            open(manifest, "w").close()


def cycle(config: dict, known_hostid: str) -> str:
    """One check-in and what follows it; returns the hostid the agent now knows."""
    path = hostid_path(config)
    hostid = read_hostid(path) or known_hostid
    answer = contact(config, hostid)
    if answer is not None:
        if "log-errors" in host_traits():  # logged before the hostid appears, as one cycle's work
            log("Error", LOG_ERRORS_LINE, config)
        save_manifests(answer.get("modules", []))
        hostid = answer.get("hostid") or hostid
        if hostid and not read_hostid(path):
            write_atomic(path, hostid + "\n", 0o644)
    run_ondemand(config, online=answer is not None)
    return hostid


def _update(path: str, req: dict, key: str) -> None:
    req[key] = True
    write_atomic(path, json.dumps(req), 0o600)


def run_ondemand(config: dict, online: bool) -> None:
    """Pending on-demand requests: logged once, delayed by an interval scan, uploaded when online."""
    try:
        requests = sorted(os.listdir(ONDEMAND))
    except FileNotFoundError:
        return
    try:
        with open(LAB + "/interval-scan") as f:
            interval = f.read().split()
    except FileNotFoundError:
        interval = []
    for name in requests:
        path = os.path.join(ONDEMAND, name)
        with open(path) as f:
            req = json.load(f)
        cid, kind = req["control_id"], req["type"]
        if not req.get("logged"):
            log("Information", f"OnDemandRequest Params: ControlID={cid}, Action=OnDemand, Type={kind.upper()}, "
                f"CPUThrottle={req['cputhrottle']}", config)
            _update(path, req, "logged")
        if not all(os.path.exists(f"{DATA}/manifests/{m}.db") for m in SCAN_TYPES[kind]):
            os.unlink(path)  # cloudagentctl.sh refused it already; nothing the guide documents to log
        elif kind in interval:
            if not req.get("delayed"):
                log("Information", "Interval Event of same type is in progress with state INTERVAL_EVENT_SCAN", config)
                log("Information", f"OnDemand request for Control ID : {cid} will be delayed.", config)
                _update(path, req, "delayed")
        elif online:
            log("Information", f"Scan results uploaded for ControlID={cid}", config)
            os.unlink(path)


def chatter(config: dict) -> None:
    """The chatty-agent persona: lines fleetctl does not know, some with alarming words."""
    for level, message in CHATTY_LINES:
        log(level, message, config, always=True)


def _wait(wake_fd: int, seconds: float) -> None:
    """Sleep until the interval ends or a SIGHUP arrives (its byte lands on WAKE_FD)."""
    if select.select([wake_fd], [], [], seconds)[0]:
        try:
            while os.read(wake_fd, 512):
                pass
        except BlockingIOError:
            pass


def daemon(args: list) -> None:
    def on_term(*_):
        log("Information", "Service stopping")
        try:
            os.unlink(PID_FILE)
        except FileNotFoundError:
            pass
        sys.exit(0)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGHUP, lambda *_: None)  # a wake-up: the byte on the pipe ends _wait
    signal.signal(signal.SIGTERM, on_term)
    write_atomic(PID_FILE, f"{os.getpid()}\n", 0o644)
    log("Information", f"Service starting, version {version()}")
    if "agent-crashes" in host_traits():
        log("Fatal", "Unhandled exception in scan engine: Segmentation fault (signal 11); agent exiting")
        with open(f"{LAB}/launchd/com.qualys.cloud-agent.exit", "w") as f:
            f.write("139\n")
        os.unlink(PID_FILE)
        sys.exit(139)
    hostid = ""
    for _ in range(MAX_CYCLES):
        config = read_config()
        if "chatty-agent" in host_traits():
            chatter(config)
        if "ActivationId" in config and "CustomerId" in config:
            hostid = cycle(config, hostid)
        _wait(wake_r, CHECKIN_INTERVAL_S)
    log("Information", "Service stopping")


# ---- the other tools ----

def upgrade(args: list) -> None:
    require_root("qagent_upgrade.sh")
    if len(args) != 1 or not os.path.isfile(args[0]):
        raise Invalid("Usage: qagent_upgrade.sh <path to new QualysCloudAgent.pkg>")
    done = subprocess.run(["/usr/local/bin/installer", "-pkg", args[0], "-target", "/"])
    sys.exit(done.returncode)


def restart(args: list) -> None:
    require_root("qagent_restart.sh")
    subprocess.run(["/usr/local/bin/launchctl", "unload", PLIST], stderr=subprocess.DEVNULL)
    done = subprocess.run(["/usr/local/bin/launchctl", "load", PLIST])
    if done.returncode == 0:
        print("Qualys Cloud Agent restarted")
    sys.exit(done.returncode)


def uninstall(args: list) -> None:
    """Stop the daemon, remove the agent and its receipt. The hostid stays: it is also the
    Agentless Tracking file, and the guide does not say uninstall removes it."""
    require_root("qagent_uninstall.sh")
    subprocess.run(["/usr/local/bin/launchctl", "unload", PLIST], stderr=subprocess.DEVNULL)
    try:
        os.unlink(PLIST)
    except FileNotFoundError:
        pass
    subprocess.run(["rm", "-rf", APP, SUPPORT, LEGACY])
    subprocess.run(["/usr/local/bin/pkgutil", "--forget", "com.qualys.cloud-agent"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    print("Qualys Cloud Agent uninstalled successfully")


def ctl(args: list) -> None:
    """Queue an on-demand scan and return at once; refused when the module has no manifest."""
    require_root("cloudagentctl.sh")
    usage = "Usage: cloudagentctl.sh action=demand type=<vm|pc|inv|udc|sca|vmpc> [cputhrottle=0..1000]"
    values = key_values(args, "cloudagentctl.sh")
    unknown = set(values) - {"action", "type", "cputhrottle"}
    if unknown or values.get("action") != "demand" or values.get("type") not in SCAN_TYPES:
        raise Invalid(usage)
    throttle = values.get("cputhrottle", "0")
    if not _int_in(throttle, 0, 1000):
        raise Invalid(f"Invalid cputhrottle '{throttle}': expected 0..1000\n{usage}")
    pid = daemon_pid()
    if not pid:
        raise Invalid("cloudagentctl.sh: the qualys-cloud-agent daemon is not running")
    for module in SCAN_TYPES[values["type"]]:
        if not os.path.exists(f"{DATA}/manifests/{module}.db"):
            raise Invalid(f"Manifest not found for module {module.upper()}: "
                          "the agent is not activated for this module")
    os.makedirs(ONDEMAND, exist_ok=True)
    stamp, n = time.strftime("%Y%m%d%H%M%S"), 0
    while os.path.exists(f"{ONDEMAND}/{stamp}.{n}.json"):
        n += 1
    control_id = f"{stamp}.{n}"
    write_atomic(f"{ONDEMAND}/{control_id}.json",
                 json.dumps({"control_id": control_id, "type": values["type"], "cputhrottle": int(throttle)}), 0o600)
    os.kill(pid, signal.SIGHUP)
    print(f"On-Demand-Request ControlId: {control_id}")


COMMANDS = {"configure": configure, "daemon": daemon, "upgrade": upgrade, "restart": restart,
            "uninstall": uninstall, "ctl": ctl}
SCRIPT_NAMES = {"configure": "qualys-cloud-agent.sh", "upgrade": "qagent_upgrade.sh", "restart": "qagent_restart.sh",
                "uninstall": "qagent_uninstall.sh", "ctl": "cloudagentctl.sh", "daemon": "qualys-cloud-agent"}


def main(argv: list) -> None:
    command = argv[0]
    count(SCRIPT_NAMES[command])
    try:
        COMMANDS[command](argv[1:])
    except Invalid as e:
        print(e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
