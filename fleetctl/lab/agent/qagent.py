"""The simulated Qualys Cloud Agent, installed by the lab's fake package on simulated Macs.

One file behind the real script names (see pkgbuild.TOOLS): the configuration tool,
upgrade, restart, uninstall, cloudagentctl, string-util and the daemon itself. It does
what ../../shared/spec/qualys-macos-agent.md says the real agent does. Stdlib only.
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
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

APP = "/Applications/QualysCloudAgent.app"
CONTENTS = APP + "/Contents"
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
DEFAULT_SERVER_URI = "https://qagpublic.qg1.fleetlab.test/CloudAgent"
LEVELS = ["Fatal", "Error", "Warning", "Information", "Debug", "Trace"]
DEFAULTS = {"LogLevel": "3", "LogFileDir": "/var/log/qualys/", "LogDestType": "file", "UseSudo": "0",
            "SudoCommand": "sudo", "User": "root", "Group": "wheel", "HostIdSearchDir": "/etc/",
            "CmdMaxTimeOut": "1800", "ProcessPriority": "0", "QualysProxyOrder": "sequential"}
SCAN_TYPES = {"vm": ["vm"], "pc": ["pc"], "inv": ["inv"], "udc": ["udc"], "sca": ["sca"], "vmpc": ["vm", "pc"]}
CHECKIN_INTERVAL_S = 60
MAX_CYCLES = 5000  # the daemon stops by itself after this many cycles (days at the interval)
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class Invalid(Exception):
    """A bad option or argument: printed, exit 1, nothing changed."""


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
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        f.write(text)
    os.replace(tmp, path)


def log(level: str, message: str, config=None) -> None:
    """Append one line in the agent's format, if LogLevel lets this level through."""
    config = config or read_config()
    if LEVELS.index(level) > int(config.get("LogLevel", "3")):
        return
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    line = f"{stamp} [qualys-cloud-agent][{os.getpid()}]:[{level}]:[{threading.get_ident()}]:{message}\n"
    if config.get("LogDestType") == "syslog":
        path = "/private/var/log/system.log"
    else:
        path = os.path.join(config.get("LogFileDir") or "/var/log/qualys/", "qualys-cloud-agent.log")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write(line)


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
        path = hostid_path(config)
        if not os.path.exists(path):
            write_atomic(path, str(uuid.uuid4()) + "\n", 0o644)
    log("Information", "Configuration updated: " + ", ".join(sorted(changes)), config)
    log("Debug", "Configuration values: " + ", ".join(f"{k}={v}" for k, v in sorted(changes.items())), config)
    pid = daemon_pid()
    if pid:
        os.kill(pid, signal.SIGHUP)


# ---- check-in (daemon) ----

def parse_proxy_file(text: str):
    """Return (proxy URLs, no_proxy domains); qualys_https_proxy wins over https_proxy."""
    found, no_proxy = {}, []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("export "):
            line = line[len("export "):].strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if key in ("qualys_https_proxy", "https_proxy"):
            found[key] = [u.strip() for u in value.split(";") if u.strip()]
        elif key == "no_proxy":
            no_proxy = [d.strip() for d in value.split(",") if d.strip()]
    return found.get("qualys_https_proxy") or found.get("https_proxy") or [], no_proxy


def _credential(text: str) -> str:
    if text.startswith("#"):  # pre-encrypted with string-util
        return base64.b64decode(text[1:]).decode()
    return urllib.parse.unquote(text)


def _bypass(host: str, no_proxy: list) -> bool:
    return any(host == d.lstrip(".") or host.endswith("." + d.lstrip(".")) or d == "*" for d in no_proxy)


def checkin(config: dict, hostid: str) -> None:
    uri = urllib.parse.urlsplit(config["ServerUri"])
    context = ssl.create_default_context()
    for bundle in ("/Library/Keychains/fleetlab-root-ca.pem", CA_BUNDLE):
        if os.path.exists(bundle) and os.path.getsize(bundle):
            context.load_verify_locations(bundle)
    body = json.dumps({
        "hostid": hostid, "agent_version": version(), "customer_id": config["CustomerId"],
        "activation_id": config["ActivationId"], "hostname": socket.gethostname(),
    }).encode()
    proxies, no_proxy = [], []
    if os.path.exists(PROXY_FILE):
        with open(PROXY_FILE) as f:
            proxies, no_proxy = parse_proxy_file(f.read())
        if len(proxies) > 5:
            log("Warning", f"Proxy file lists {len(proxies)} proxies; only the first 5 are used", config)
            proxies = proxies[:5]
        if config.get("QualysProxyOrder") == "random":
            random.shuffle(proxies)
    if _bypass(uri.hostname, no_proxy):
        proxies = []
    attempts = proxies or [None]
    errors = []
    for proxy in attempts:  # fail-closed: with proxies configured, never try a direct connection
        shown = "none"
        try:
            if proxy:
                p = urllib.parse.urlsplit(proxy if "://" in proxy else "https://" + proxy)
                shown = f"{p.hostname}:{p.port or 443}"
                conn = http.client.HTTPSConnection(p.hostname, p.port or 443, context=context, timeout=10)
                headers = {}
                if p.username is not None:
                    creds = f"{_credential(p.username)}:{_credential(p.password or '')}"
                    headers["Proxy-Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
                conn.set_tunnel(uri.hostname, uri.port or 443, headers=headers)
            else:
                conn = http.client.HTTPSConnection(uri.hostname, uri.port or 443, context=context, timeout=10)
            conn.request("POST", uri.path.rstrip("/") + "/checkin", body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            answer = json.loads(reply.read() or b"{}")
            conn.close()
            if reply.status != 200:
                raise OSError(f"HTTP {reply.status}")
        except (OSError, ValueError, http.client.HTTPException) as e:
            errors.append(f"{shown if proxy else 'direct'}: {e}")
            if proxy:
                log("Warning", f"Proxy {shown} failed: {e}", config)
            continue
        for module in answer.get("modules", []):
            manifest = f"{DATA}/manifests/{module}.db"
            if not os.path.exists(manifest):
                os.makedirs(os.path.dirname(manifest), exist_ok=True)
                open(manifest, "w").close()
                log("Information", f"Manifest downloaded for module {module.upper()}", config)
        log("Information", f"Agent check-in succeeded: ServerUri={config['ServerUri']}, Proxy={shown}", config)
        return
    reason = "; ".join(errors)
    log("Error", f"Agent check-in failed: ServerUri={config['ServerUri']}, Reason={reason}", config)


def run_ondemand(config: dict) -> None:
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
            req["logged"] = True
            write_atomic(path, json.dumps(req), 0o600)
        missing = [m for m in SCAN_TYPES[kind] if not os.path.exists(f"{DATA}/manifests/{m}.db")]
        if missing:
            log("Error", f"Manifest not found for Type={kind.upper()}: agent is not activated for module "
                f"{missing[0].upper()}; OnDemand request for Control ID : {cid} failed", config)
            os.unlink(path)
        elif kind in interval:
            if not req.get("delayed"):
                log("Information", "Interval Event of same type is in progress with state INTERVAL_EVENT_SCAN", config)
                log("Information", f"OnDemand request for Control ID : {cid} will be delayed.", config)
                req["delayed"] = True
                write_atomic(path, json.dumps(req), 0o600)
        else:
            log("Information", f"OnDemand scan started for Control ID : {cid}", config)
            log("Information", f"OnDemand scan completed for Control ID : {cid}", config)
            os.unlink(path)


class Wake(Exception):
    pass


def daemon(args: list) -> None:
    def on_hup(*_):
        raise Wake()

    def on_term(*_):
        log("Information", "Qualys Cloud Agent stopping (SIGTERM)")
        try:
            os.unlink(PID_FILE)
        except FileNotFoundError:
            pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    write_atomic(PID_FILE, f"{os.getpid()}\n", 0o644)
    log("Information", f"Qualys Cloud Agent {version()} started (pid {os.getpid()})")
    if "agent-crashes" in host_traits():
        log("Fatal", "Unhandled exception in scan engine: Segmentation fault (signal 11); agent exiting")
        with open(f"{LAB}/launchd/com.qualys.cloud-agent.exit", "w") as f:
            f.write("139\n")
        os.unlink(PID_FILE)
        sys.exit(139)
    announced = False
    signal.signal(signal.SIGHUP, on_hup)
    for _ in range(MAX_CYCLES):
        try:
            config = read_config()
            if "ActivationId" in config and "CustomerId" in config:
                path = hostid_path(config)
                hostid = open(path).read().strip() if os.path.exists(path) else ""
                checkin(config, hostid)
                run_ondemand(config)
            elif not announced:
                log("Warning", "Agent is not provisioned: run qualys-cloud-agent.sh with ActivationId and CustomerId",
                    config)
                announced = True
            time.sleep(CHECKIN_INTERVAL_S)
        except Wake:
            continue
    log("Information", "Qualys Cloud Agent stopping (cycle limit reached)")


# ---- the other tools ----

def upgrade(args: list) -> None:
    require_root("qagent_upgrade.sh")
    if len(args) != 1 or not os.path.isfile(args[0]):
        raise Invalid("Usage: qagent_upgrade.sh <path to new QualysCloudAgent.pkg>")
    log("Information", f"Upgrade requested from {version()} with package {os.path.basename(args[0])}")
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
    require_root("qagent_uninstall.sh")
    config = read_config()
    subprocess.run(["/usr/local/bin/launchctl", "unload", PLIST], stderr=subprocess.DEVNULL)
    log("Information", "Qualys Cloud Agent uninstalled", config)
    for path in (PLIST, hostid_path(config)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    subprocess.run(["rm", "-rf", APP, SUPPORT, LEGACY, os.path.dirname(hostid_path(config))])
    subprocess.run(["/usr/local/bin/pkgutil", "--forget", "com.qualys.cloud-agent"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    print("Qualys Cloud Agent uninstalled successfully")


def ctl(args: list) -> None:
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
    os.makedirs(ONDEMAND, exist_ok=True)
    stamp, n = time.strftime("%Y%m%d%H%M%S"), 0
    while os.path.exists(f"{ONDEMAND}/{stamp}.{n}.json"):
        n += 1
    control_id = f"{stamp}.{n}"
    write_atomic(f"{ONDEMAND}/{control_id}.json",
                 json.dumps({"control_id": control_id, "type": values["type"], "cputhrottle": int(throttle)}), 0o600)
    os.kill(pid, signal.SIGHUP)
    print(f"On-Demand-Request ControlId: {control_id}")


def string_util(args: list) -> None:
    require_root("string-util")
    if len(args) != 2 or args[0] != "encrypt":
        raise Invalid("Usage: string-util encrypt <text>")
    print("#" + base64.b64encode(args[1].encode()).decode())


COMMANDS = {"configure": configure, "daemon": daemon, "upgrade": upgrade, "restart": restart,
            "uninstall": uninstall, "ctl": ctl, "string-util": string_util}
SCRIPT_NAMES = {"configure": "qualys-cloud-agent.sh", "upgrade": "qagent_upgrade.sh", "restart": "qagent_restart.sh",
                "uninstall": "qagent_uninstall.sh", "ctl": "cloudagentctl.sh", "daemon": "qualys-cloud-agent",
                "string-util": "string-util"}

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
