"""qualys-cloud-agent: the simulated agent's daemon (launchd starts it from the plist).

Every CHECKIN_INTERVAL_S, or at once when woken with SIGHUP (the configuration tool and
cloudagentctl.sh send one), it checks in with the platform (the lab's pod), directly or only
through the proxies of the proxy file (proxyfile.py), then works through the queued on-demand
scans. SIGTERM stops it.

The hostid is written by the daemon, not the configuration tool: after a successful
contact, whenever <HostIdSearchDir>/qualys/hostid is missing, with the id the platform
answered (it keeps the one the agent sent, or assigns one on first contact).

Personas the platform sees (lab/personas.py):
  other-subscription  its check-ins carry OTHER_SUBSCRIPTION's CustomerId and ActivationId, whatever
                      the configuration file says: the agent was provisioned elsewhere (an MDM profile,
                      an old activation) and nothing on the Mac tells
  duplicate-record    the host id of its first contact is written outside HostIdSearchDir (the guide's
                      mismatch that makes duplicate assets), at STRAY_HOSTIDS' first other path; the agent
                      finds no hostid and checks in again as new at once, keeping the second one for good
"""
import json
import os
import select
import signal
import socket
import sys
import urllib.parse

from agentcommon import (host_traits, CA_BUNDLE, CONTENTS, DAEMON, DATA, HOSTILE, HOSTILE_CYCLE_LINE, HOSTILE_LINES,
                         LAB, ONDEMAND, PID_FILE, SCAN_TYPES, log, log_bytes, log_huge_once, read_config,
                         set_process_name, write_atomic)
from proxyfile import ProxyConfigError, bypass, load_proxy_file

# ssl, http.client, plistlib, random and base64 are imported where they are used: the
# configuration tool and the other tools import this module too (through qagent.py) and never
# contact the platform.
CHECKIN_INTERVAL_S = 60
CONTACT_TIMEOUT_S = 10
MAX_CYCLES = 5000  # the daemon stops by itself after this many cycles (days at the interval)
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
OTHER_SUBSCRIPTION = {"customer_id": "0d5e9c1b-7a3f-4e62-9b18-c4f2a6d8e301",
                      "activation_id": "5f1c7e3a-92d4-4b8e-a6f0-3d2b9c8e7a14"}
STRAY_HOSTIDS = ("/private/var/qualys/hostid", "/etc/qualys/hostid")


def version() -> str:
    import plistlib

    with open(CONTENTS + "/Info.plist", "rb") as f:
        return plistlib.load(f)["CFBundleShortVersionString"]


def hostid_path(config: dict) -> str:
    return os.path.join(config["HostIdSearchDir"], "qualys", "hostid")


# ---- contact with the platform ----

TRUSTED_BUNDLES = ("/Library/Keychains/fleetlab-root-ca.pem", CA_BUNDLE)
_context_cache: list = []  # [(the CA files' stamps, the SSLContext made from them)]


def _bundle_stamp(bundle: str):
    try:
        st = os.stat(bundle)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def _tls_context():
    """An ssl.SSLContext trusting the system's CAs plus the lab's and the app bundle's CA
    files, when present and not empty. Loading the system store costs ~27 ms of CPU, most of
    a check-in (1,000 simulated Macs checking in every minute spent half a core on it): the
    context is kept, and made again only when one of the CA files appears, changes or goes."""
    stamps = tuple(_bundle_stamp(b) for b in TRUSTED_BUNDLES)
    if _context_cache and _context_cache[0][0] == stamps:
        return _context_cache[0][1]
    import ssl

    context = ssl.create_default_context()
    for bundle, stamp in zip(TRUSTED_BUNDLES, stamps):
        if stamp is not None and stamp[0]:
            context.load_verify_locations(bundle)
    _context_cache[:] = [(stamps, context)]
    return context


def _connection(uri, proxy, context):
    """A connection to the pod, tunnelled (CONNECT) through PROXY with its own credentials."""
    import http.client

    if proxy is None:
        return http.client.HTTPSConnection(uri.hostname, uri.port or 443, context=context, timeout=CONTACT_TIMEOUT_S)
    conn = http.client.HTTPSConnection(proxy["host"], proxy["port"], context=context, timeout=CONTACT_TIMEOUT_S)
    headers = {}
    if proxy["user"] is not None:
        import base64

        creds = f"{proxy['user']}:{proxy['password']}".encode()
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(creds).decode()
    conn.set_tunnel(uri.hostname, uri.port or 443, headers=headers)
    return conn


def _os_name() -> str:
    """What the agent reports as the Mac's system (sw_vers' ProductVersion, from the lab's host facts)."""
    try:
        with open(LAB + "/host.json") as f:
            return "macOS " + json.load(f)["product_version"]
    except (OSError, ValueError, KeyError):
        return "macOS"


def _check_in(conn, uri, fields: dict) -> dict:
    try:
        conn.connect()  # the inventory it sends names the Mac's own address on this route
        body = json.dumps({**fields, "address": conn.sock.getsockname()[0]}).encode()
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
    import http.client

    uri = urllib.parse.urlsplit(config["ServerUri"])
    try:
        proxies, no_proxy = load_proxy_file()
    except ProxyConfigError as e:  # fail-closed: no contact at all, not even direct
        log("Error", f"Proxy configuration invalid: {e}", config)
        return None
    if bypass(uri.hostname, no_proxy):
        proxies = []
    if config.get("QualysProxyOrder") == "random":
        import random

        random.shuffle(proxies)
    fields = {"hostid": hostid, "agent_version": version(), "customer_id": config["CustomerId"],
              "activation_id": config["ActivationId"], "hostname": socket.gethostname(), "os": _os_name()}
    if "other-subscription" in host_traits():
        fields.update(OTHER_SUBSCRIPTION)
    context = _tls_context()
    failures = []
    for proxy in proxies or [None]:  # with proxies configured, never a direct connection
        shown = f"{proxy['host']}:{proxy['port']}" if proxy else "none"
        try:
            answer = _check_in(_connection(uri, proxy, context), uri, fields)
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
    if answer is not None and not hostid and "duplicate-record" in host_traits():
        answer = _lose_first_hostid(config, path, answer)
    if HOSTILE in host_traits():
        log_bytes("Error", HOSTILE_CYCLE_LINE, config)
    if answer is not None:
        if "log-errors" in host_traits():  # logged before the hostid appears, as one cycle's work
            log("Error", LOG_ERRORS_LINE, config)
        save_manifests(answer.get("modules", []))
        hostid = answer.get("hostid") or hostid
        if hostid and not read_hostid(path):
            write_atomic(path, hostid + "\n", 0o644)
    run_ondemand(config, online=answer is not None)
    return hostid


def _lose_first_hostid(config: dict, path: str, answer: dict):
    """duplicate-record: the first host id goes where HostIdSearchDir does not look; the agent,
    finding none, checks in again as a new agent. Once per Mac: the stray file stays."""
    stray = next(p for p in STRAY_HOSTIDS if p != path)
    if os.path.exists(stray) or not answer.get("hostid"):
        return answer
    write_atomic(stray, answer["hostid"] + "\n", 0o644)
    return contact(config, "")


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


def hostile_start(config: dict) -> None:
    """The hostile-output persona's start-up: HOSTILE_LINES with the huge line among them."""
    for level, message in HOSTILE_LINES[:4]:
        log_bytes(level, message, config)
    log_huge_once("Error", config)
    for level, message in HOSTILE_LINES[4:]:
        log_bytes(level, message, config)


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

    # As launchd runs it on a Mac: argv is the plist's ProgramArguments, the name the binary's
    # (cut to 15 bytes by Linux: qualys-cloud-ag); not python3 and the wrapper's -c code.
    set_process_name([DAEMON], os.path.basename(DAEMON))
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
    if HOSTILE in host_traits():
        hostile_start(read_config())
    hostid = ""
    for _ in range(MAX_CYCLES):
        config = read_config()
        if "chatty-agent" in host_traits():
            chatter(config)
        if "ActivationId" in config and "CustomerId" in config:
            hostid = cycle(config, hostid)
        _wait(wake_r, CHECKIN_INTERVAL_S)
    log("Information", "Service stopping")
