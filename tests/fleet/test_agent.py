"""The simulated agent, installed from the lab package, behaves as the spec says."""
import json
import re
from urllib.parse import quote

import pytest

from conftest import ACTIVATION, APP_BIN, CUSTOMER, HOSTID, LOG, Lab, fleetctl

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[qualys-cloud-agent\]\[\d+\]:"
    r"\[(Fatal|Error|Warning|Information|Debug|Trace)\]:\[\d+\]:(.+)$"
)
# What the simulated agent may say by default: the guide's own lines, then the neutral ones.
MESSAGES = [re.compile(p) for p in (
    r"OnDemandRequest Params: ControlID=\S+, Action=OnDemand, Type=[A-Z]+, CPUThrottle=\d+",
    r"Interval Event of same type is in progress with state INTERVAL_EVENT_SCAN",
    r"OnDemand request for Control ID : \S+ will be delayed\.",
    r"Heartbeat acknowledged by platform \S+ \(proxy: \S+\)",
    r"Scan results uploaded for ControlID=\S+",
    r"Proxy \S+ failed: .+", r"Platform communication failed: .+", r"Proxy configuration invalid: .+",
    r"Service starting, version [\d.]+", r"Service stopping", r"Options received: .+", r"Option values: .+",
)]
CONF = "'/Library/Application Support/QualysCloudAgent/Config/qualys-cloud-agent.conf'"
PROXY = "'/Library/Application Support/QualysCloudAgent/Config/proxy'"
POD = "qagpublic.qg1.fleetlab.test"
HEARTBEAT_DIRECT = f"Heartbeat acknowledged by platform {POD} (proxy: none)"


def unknown_lines(log: str) -> list[str]:
    """Lines outside the documented format, or saying something neither documented nor neutral."""
    bad = []
    for line in log.splitlines():
        m = LOG_LINE.match(line)
        if not m or not any(p.fullmatch(m[2]) for p in MESSAGES):
            bad.append(line)
    return bad


def write_proxy_file(mac, text: str, mode: str = "660") -> None:
    """The agent's proxy file, owned by root (the text goes over stdin: no shell quoting)."""
    mac.ok(f"sudo tee {PROXY} >/dev/null && sudo chmod {mode} {PROXY}", stdin=text)


def wait_error(mac, message: str, after: str = "", timeout: float = 15) -> str:
    """The new log text once an [Error] line with MESSAGE appeared."""
    text = mac.wait_log("]:" + message, timeout=timeout, after=after)
    assert re.search(r"\]:\[Error\]:\[\d+\]:" + re.escape(message), text), text
    return text


def ensure_installed(mac) -> None:
    if mac.run(f"test -x {APP_BIN}/qualys-cloud-agent.sh").returncode:
        mac.install()


def test_install_provision_check_in(lab: Lab):
    mac = lab.mac("mac-001")
    out = mac.install()
    assert out == ("installer: Package name is Qualys Cloud Agent\n"
                   "installer: Installing at base path /\n"
                   "installer: The install was successful.\n")
    info = mac.ok("pkgutil --pkg-info com.qualys.cloud-agent").splitlines()
    assert info[:4] == ["package-id: com.qualys.cloud-agent", "version: 6.1.0.20", "volume: /", "location: /"]
    assert re.fullmatch(r"install-time: \d+", info[4])
    assert "com.qualys.cloud-agent" in mac.ok("pkgutil --pkgs")
    assert "Applications/QualysCloudAgent.app/Contents/MacOS/qualys-cloud-agent.sh" in mac.ok(
        "pkgutil --files com.qualys.cloud-agent")
    for tool in ["qualys-cloud-agent.sh", "qagent_upgrade.sh", "qagent_restart.sh", "qagent_uninstall.sh",
                 "cloudagentctl.sh", "qualys-cloud-agent", "string-util"]:
        mac.ok(f"test -x {APP_BIN}/{tool}")
    mac.ok("test -f /Library/LaunchDaemons/com.qualys.cloud-agent.plist")
    assert "state = running" in mac.ok("sudo launchctl print system/com.qualys.cloud-agent")
    assert re.search(r"^\d+\t0\tcom.qualys.cloud-agent$", mac.ok("sudo launchctl list"), re.M)
    mac.wait_log("]:Service starting, version 6.1.0.20")
    mac.ok(f"test ! -e {HOSTID}")  # not provisioned, never reached the platform: no hostid

    provisioned = mac.provision()
    assert provisioned == ("Setting permission for user: root\nSetting permission for group: wheel\n"
                           "hostid search path: /etc\n")
    hostid = mac.wait_hostid()  # written by the daemon once the platform answered
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", hostid)
    assert mac.ok(f"stat -c '%a %U' {HOSTID}") == "644 root\n"
    checkin = lab.wait_checkin(hostid)
    assert checkin["sent_hostid"] == ""  # the pod assigned it on the first contact
    assert checkin["customer_id"] == CUSTOMER and checkin["agent_version"] == "6.1.0.20"
    log = mac.wait_log(HEARTBEAT_DIRECT)
    assert unknown_lines(log) == []
    assert "]:[Error]:" not in log and "]:[Fatal]:" not in log
    assert mac.count("installer") == 1


@pytest.mark.parametrize("option", [
    "ActivationId=not-a-uuid", "CustomerId=1234", "ServerUri=http://qagpublic.qg1.fleetlab.test/CloudAgent",
    "ServerUri=https://qagpublic.qg1.fleetlab.test/", "LogLevel=6", "LogLevel=-1", "LogLevel=x",
    "LogDestType=stdout", "UseSudo=2", "User=nosuchuser", "Group=nosuchgroup", "ProcessPriority=20",
    "ProcessPriority=-21", "QualysProxyOrder=roundrobin", "CmdMaxTimeOut=soon", "HostIdSearchDir=etc",
    "LogFileDir=logs", "NoSuchOption=1", "LogLevel",
])
def test_configuration_tool_rejects_bad_options(lab: Lab, option):
    mac = lab.mac("mac-017")
    ensure_installed(mac)
    before = mac.run(f"sudo cat {CONF}").stdout
    done = mac.run(f"sudo {APP_BIN}/qualys-cloud-agent.sh {option}")
    assert done.returncode != 0 and done.stderr.strip(), done
    assert mac.run(f"sudo cat {CONF}").stdout == before  # nothing half-changed


def test_configuration_tool_accepts_every_good_option_and_needs_root(lab: Lab):
    mac = lab.mac("mac-017")
    ensure_installed(mac)
    assert mac.run(f"{APP_BIN}/qualys-cloud-agent.sh LogLevel=4").returncode != 0  # not root
    mac.provision("LogLevel=5", "LogDestType=file", "UseSudo=1", '"SudoCommand=sudo -n"', "User=admin",
                  "Group=staff", "HostIdSearchDir=/private/var/", "CmdMaxTimeOut=600", "ProcessPriority=-5",
                  "QualysProxyOrder=random", "LogFileDir=/var/log/qualys/")
    conf = mac.ok(f"sudo cat {CONF}")
    assert "LogLevel=5\n" in conf and "SudoCommand=sudo -n\n" in conf and "User=admin\n" in conf
    assert mac.ok(f"stat -c %a {CONF}") == "600\n"
    lab.wait_checkin(mac.wait_hostid("/private/var/qualys/hostid"))
    mac.ok(f"test ! -e {HOSTID}")
    log = mac.wait_log(HEARTBEAT_DIRECT)
    assert "]:[Debug]:[" in log and f"ActivationId={ACTIVATION}" in log  # level 5: values in clear


def test_wrong_architecture_is_refused_and_intel_gets_legacy_path(lab: Lab):
    mac = lab.mac("mac-015")
    mac.put(lab.pkg("arm64"), "/private/var/tmp/arm.pkg")
    refused = mac.run("sudo installer -pkg /private/var/tmp/arm.pkg -target /")
    assert refused.returncode != 0
    assert refused.stderr.splitlines()[-1].startswith("installer: The install failed. (")
    mac.ok("test ! -e /Applications/QualysCloudAgent.app")
    mac.install()
    out = mac.ok(f"sudo /usr/local/qualys/cloud-agent/bin/qualys-cloud-agent.sh ActivationId={ACTIVATION} "
                 f"CustomerId={CUSTOMER}")
    assert "hostid search path: /etc" in out
    lab.wait_checkin(mac.wait_hostid())


def test_installer_fails_persona_changes_nothing(lab: Lab):
    mac = lab.mac("mac-008")
    mac.put(lab.pkg("arm64"), "/private/var/tmp/agent.pkg")
    done = mac.run("sudo installer -pkg /private/var/tmp/agent.pkg -target /")
    assert done.returncode != 0
    assert done.stdout == "installer: Package name is Qualys Cloud Agent\ninstaller: Installing at base path /\n"
    assert done.stderr.startswith("installer: The install failed. (")
    mac.ok("test ! -e /Applications/QualysCloudAgent.app && test ! -e /Library/LaunchDaemons/com.qualys.cloud-agent.plist")
    assert mac.run("pkgutil --pkg-info com.qualys.cloud-agent").returncode == 1
    assert mac.count("installer") == 1


def test_installer_needs_root_and_a_valid_package(lab: Lab):
    mac = lab.mac("mac-017")
    assert "Must be run as root" in mac.run("installer -pkg /x.pkg -target /").stderr
    bad = mac.run("echo junk > /private/var/tmp/junk.pkg; sudo installer -pkg /private/var/tmp/junk.pkg -target /")
    assert bad.returncode != 0 and "invalid" in bad.stderr


def test_agent_crashes_persona(lab: Lab):
    mac = lab.mac("mac-013")
    mac.install()
    log = mac.wait_log("]:[Fatal]:")
    assert "]:Service starting, version " in log
    assert re.search(r"^-\t139\tcom.qualys.cloud-agent$", mac.ok("sudo launchctl list"), re.M)
    assert "state = not running" in mac.ok("sudo launchctl print system/com.qualys.cloud-agent")


def test_proxy_only_fails_closed_then_checks_in_through_the_proxy(lab: Lab):
    mac = lab.mac("mac-012")
    mac.install()
    mac.provision()
    wait_error(mac, "Platform communication failed: ")
    mac.ok(f"test ! -e {HOSTID}")  # never reached the platform
    assert lab.checkins_from(mac) == []
    write_proxy_file(mac, f"qualys_https_proxy={lab.proxy_url('fleetproxy')}\n", mode="644")
    before = mac.ok(f"cat {LOG}")
    mac.provision()  # any run of the tool wakes the agent
    after = wait_error(mac, "Proxy configuration invalid: the proxy file must be owned by root with mode 660",
                         after=before)
    assert "Platform communication failed" not in after  # no attempt at all, not even direct
    mac.ok(f"sudo chmod 660 {PROXY}")
    mac.provision()
    proxy = lab.proxy_url().split("//")[1]
    mac.wait_log(f"Heartbeat acknowledged by platform {POD} (proxy: {proxy})")
    assert lab.wait_checkin(mac.wait_hostid())["peer"] != mac.address  # it came through the proxy
    mine = [(a["user"], a["outcome"]) for a in lab.proxy_access() if a["client"] == mac.address]
    assert mine[-1] == ("fleetproxy", "allowed")


def test_several_proxies_are_tried_in_order_and_never_direct(lab: Lab):
    mac = lab.mac("mac-016")
    mac.install()
    proxy = lab.proxy_url().split("//")[1]
    write_proxy_file(mac, f'qualys_https_proxy="{lab.proxy_url("fleetproxy", "wrong@pass")};https://198.18.0.2:3128"\n')
    mac.provision()
    log = wait_error(mac, "Platform communication failed: ", timeout=30)
    warnings = re.findall(r"\]:\[Warning\]:\[\d+\]:Proxy (\S+) failed: ", log)
    assert warnings[:2] == [proxy, "198.18.0.2:3128"]  # in the file's order
    assert "407" in log and POD + ":443" not in log  # never direct
    assert lab.checkins_from(mac) == []
    mac.ok(f"test ! -e {HOSTID}")
    write_proxy_file(mac, f'qualys_https_proxy="https://198.18.0.2:3128;{lab.proxy_url("fleetproxy")}"\n')
    mac.provision()
    mac.wait_log(f"Heartbeat acknowledged by platform {POD} (proxy: {proxy})", timeout=30)
    lab.wait_checkin(mac.wait_hostid())


def test_no_proxy_bypasses_the_proxy_for_the_pod(lab: Lab):
    mac = lab.mac("mac-014")
    mac.install()
    write_proxy_file(mac, "export qualys_https_proxy=https://198.18.0.2:3128\nexport no_proxy=fleetlab.test\n")
    before = mac.ok(f"cat {LOG}")
    mac.provision()
    log = mac.wait_log(HEARTBEAT_DIRECT, after=before)
    assert "Proxy " not in log
    mac.ok(f"sudo rm {PROXY}")


def test_upgrade_restart_and_uninstall_keeps_the_hostid(lab: Lab, tmp_path):
    mac = lab.mac("mac-014")
    ensure_installed(mac)
    mac.provision()
    hostid = mac.wait_hostid()
    conf = mac.ok(f"sudo cat {CONF}")
    newer = tmp_path / "QualysCloudAgent.pkg"
    fleetctl("lab", "pkg", "--version", "6.2.0.7", "--arch", "arm64", "--size-mb", "3", "--out", str(newer))
    mac.put(newer, "/private/var/tmp/new.pkg")
    upgraded = mac.ok(f"sudo {APP_BIN}/qagent_upgrade.sh /private/var/tmp/new.pkg")
    assert upgraded.endswith("installer: The install was successful.\n")
    assert "version: 6.2.0.7" in mac.ok("pkgutil --pkg-info com.qualys.cloud-agent")
    pid_before = mac.ok("sudo launchctl list com.qualys.cloud-agent")
    assert mac.ok(f"sudo {APP_BIN}/qagent_restart.sh") == "Qualys Cloud Agent restarted\n"
    assert mac.ok("sudo launchctl list com.qualys.cloud-agent") != pid_before
    assert mac.ok(f"cat {HOSTID}").strip() == hostid and mac.ok(f"sudo cat {CONF}") == conf
    assert lab.wait_checkin(hostid, agent_version="6.2.0.7")["sent_hostid"] == hostid
    assert mac.count("qagent_upgrade.sh") == 1

    assert mac.ok(f"sudo {APP_BIN}/qagent_uninstall.sh") == "Qualys Cloud Agent uninstalled successfully\n"
    for path in ["/Applications/QualysCloudAgent.app", "/Library/LaunchDaemons/com.qualys.cloud-agent.plist",
                 "/Library/Application Support/QualysCloudAgent"]:
        mac.ok(f"test ! -e '{path}'")
    assert mac.ok(f"cat {HOSTID}").strip() == hostid  # also the Agentless Tracking file: it stays
    assert mac.run("pkgutil --pkg-info com.qualys.cloud-agent").returncode == 1
    assert mac.run("sudo launchctl print system/com.qualys.cloud-agent").returncode == 113
    assert "qagent" not in mac.ok("ps -eo args")
    assert mac.ok(f"tail -n 1 {LOG}").rstrip().endswith("]:Service stopping")
    assert unknown_lines(mac.ok(f"cat {LOG}")) == []


def test_on_demand_scans(lab: Lab):
    mac = lab.mac("mac-018")
    mac.install()
    mac.wait_log("]:Service starting")
    refused = mac.run(f"sudo {APP_BIN}/cloudagentctl.sh action=demand type=vm")  # no manifests before contact
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr == "Manifest not found for module VM: the agent is not activated for this module\n"
    mac.provision()
    mac.wait_manifests()
    out = mac.ok(f"sudo {APP_BIN}/cloudagentctl.sh action=demand type=vm cputhrottle=0")
    control_id = re.fullmatch(r"On-Demand-Request ControlId: (\d{14}\.\d+)\n", out).group(1)
    log = mac.wait_log(f"Scan results uploaded for ControlID={control_id}")
    assert f"OnDemandRequest Params: ControlID={control_id}, Action=OnDemand, Type=VM, CPUThrottle=0" in log

    udc = mac.run(f"sudo {APP_BIN}/cloudagentctl.sh action=demand type=udc")
    assert udc.returncode != 0 and "Manifest not found for module UDC" in udc.stderr

    mac.ok("echo pc | sudo tee /private/var/fleetlab/interval-scan >/dev/null")
    pc = mac.ok(f"sudo {APP_BIN}/cloudagentctl.sh action=demand type=pc cputhrottle=100").split()[-1]
    log = mac.wait_log(f"OnDemand request for Control ID : {pc} will be delayed.")
    assert "]:Interval Event of same type is in progress with state INTERVAL_EVENT_SCAN" in log
    assert f"ControlID={pc}, Action=OnDemand, Type=PC, CPUThrottle=100" in log
    assert f"Scan results uploaded for ControlID={pc}" not in log
    mac.ok("sudo rm /private/var/fleetlab/interval-scan")
    mac.provision()  # wakes the agent, which now runs the delayed scan
    log = mac.wait_log(f"Scan results uploaded for ControlID={pc}")
    assert unknown_lines(log) == []

    for bad in ["action=demand type=xyz", "type=vm", "action=demand type=vm cputhrottle=1001", "action=demand"]:
        assert mac.run(f"sudo {APP_BIN}/cloudagentctl.sh {bad}").returncode != 0


def test_log_level_filters_lines(lab: Lab):
    mac = lab.mac("mac-018")
    ensure_installed(mac)
    mac.ok(f"sudo {APP_BIN}/qualys-cloud-agent.sh LogLevel=0")
    before = mac.ok(f"cat {LOG}")
    mac.ok(f"sudo {APP_BIN}/qualys-cloud-agent.sh LogLevel=0")  # its Information line is filtered out
    assert mac.ok(f"cat {LOG}") == before
    mac.ok(f"sudo {APP_BIN}/qualys-cloud-agent.sh LogLevel=5")
    assert "]:[Debug]:" in mac.wait_log("Option values: LogLevel=5")
    mac.ok(f"sudo {APP_BIN}/qualys-cloud-agent.sh LogLevel=3")


def test_chatty_agent_says_alarming_words_at_harmless_levels(lab: Lab):
    mac = lab.mac("mac-032")
    mac.install()
    mac.provision()
    log = mac.wait_log(HEARTBEAT_DIRECT)
    lines = [LOG_LINE.match(l) for l in log.splitlines()]
    assert all(lines), log  # the documented format, always
    levels = {m[1] for m in lines}
    assert "Error" not in levels and "Fatal" not in levels
    debug = [m[2] for m in lines if m[1] == "Debug"]  # even at the default LogLevel 3
    assert any("ERROR:" in t for t in debug) and any("[Error]" in t for t in debug)
    info = [m[2] for m in lines if m[1] == "Information"]
    assert any("error" in t for t in info) and any("failed" in t for t in info) and any("Fatal" in t for t in info)
    assert len(unknown_lines(log)) >= 8


def test_log_errors_persona_logs_an_error_after_each_contact(lab: Lab):
    mac = lab.mac("mac-033")
    mac.install()
    mac.provision()
    log = mac.wait_log("]:[Error]:[")
    heartbeat, error = log.index(HEARTBEAT_DIRECT), log.index("]:Data collection failed for module INV: command timed out")
    assert heartbeat < error
    lab.wait_checkin(mac.wait_hostid())


def _ndjson(text: str) -> list[dict]:
    rows = [json.loads(l) for l in text.splitlines()]
    assert rows[-1] == {"count": len(rows) - 1, "finished": 1}
    return rows[:-1]


def test_syslog_destination_writes_the_unified_log(lab: Lab):
    mac = lab.mac("mac-034")
    mac.install()
    file_before = mac.wait_log("]:Service starting")
    calls = mac.count("log")
    mac.provision("LogDestType=syslog", "LogLevel=4")
    mac.wait_hostid()
    shown: list[dict] = []
    for _ in range(50):  # bounded: the heartbeat reaches the store within a few seconds
        shown = _ndjson(mac.log_show("--style ndjson --info").stdout)
        if any(e["eventMessage"].startswith("Heartbeat") for e in shown):
            break
        mac.ok("sleep 0.2")
    beat = next(e for e in shown if e["eventMessage"].startswith("Heartbeat"))
    assert beat["eventMessage"] == HEARTBEAT_DIRECT  # the message only, no date or level prefix
    assert beat["messageType"] == "Info" and beat["eventType"] == "logEvent"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}[+-]\d{4}", beat["timestamp"])
    assert beat["processImagePath"] == f"{APP_BIN}/qualys-cloud-agent"
    assert isinstance(beat["processID"], int) and isinstance(beat["threadID"], int)
    assert beat["subsystem"] == "" and beat["category"] == ""
    assert mac.ok(f"cat {LOG}") == file_before  # no log file lines any more

    assert _ndjson(mac.log_show("--style ndjson").stdout) == []  # Info only with --info
    debug = _ndjson(mac.log_show("--style ndjson --debug").stdout)
    assert [e["messageType"] for e in debug] == ["Debug"] and debug[0]["eventMessage"].startswith("Option values: ")
    write_proxy_file(mac, "qualys_https_proxy=https://proxy.example.com:3128;https://10.0.0.1\n")
    mac.provision()
    errors: list[dict] = []
    for _ in range(50):
        errors = _ndjson(mac.log_show("--style ndjson").stdout)
        if errors:
            break
        mac.ok("sleep 0.2")
    assert errors[0]["messageType"] == "Error"
    assert errors[0]["eventMessage"] == ("Proxy configuration invalid: several proxies must be written inside "
                                         "double quotes")
    mac.ok(f"sudo rm {PROXY}")

    default = mac.log_show("--info --last 1h").stdout.splitlines()
    assert default[0] == 'Filtering the log data using "process == "qualys-cloud-agent""'
    assert default[1] == "Skipping debug messages, pass --debug to include."
    assert any(l.endswith(f"qualys-cloud-agent: {HEARTBEAT_DIRECT}") for l in default)
    assert any(f"localhost qualys-cloud-agent[" in l for l in mac.log_show("--style syslog --info").stdout.splitlines())
    assert _ndjson(mac.log_show("--style ndjson --info --start '2999-01-01 00:00:00'").stdout) == []
    assert _ndjson(mac.log_show("--style ndjson --info", sudo=False).stdout) == []  # root only
    assert mac.run("cat /private/var/fleetlab/unified-log/store.jsonl").returncode != 0
    bogus = mac.log_show("--bogus")
    assert bogus.returncode == 64 and "unrecognized option `--bogus'" in bogus.stderr and "usage:" in bogus.stderr
    assert mac.count("log") > calls + 5


def test_hostid_follows_hostidsearchdir(lab: Lab):
    mac = lab.mac("mac-036")
    ensure_installed(mac)
    mac.provision()
    hostid = mac.wait_hostid()
    out = mac.ok(f"sudo {APP_BIN}/qualys-cloud-agent.sh HostIdSearchDir=/private/var/db/")
    assert out.splitlines()[-1] == "hostid search path: /private/var/db"
    assert mac.wait_hostid("/private/var/db/qualys/hostid") == hostid  # the same asset, at the new place
    assert mac.ok("stat -c %a /private/var/db/qualys/hostid") == "644\n"
    assert lab.wait_checkin(hostid)["sent_hostid"] == hostid


def test_per_proxy_credentials_and_string_util(lab: Lab):
    mac = lab.mac("mac-035")
    mac.install()
    user2 = lab.inventory["all"]["vars"]["lab_proxy2_user"]
    assert user2 == "ops@lab;2"
    string_util = f"{APP_BIN}/string-util"
    assert mac.run(f"{string_util} x").returncode != 0  # root only
    assert mac.run(f"sudo {string_util} a b").returncode != 0 and mac.run(f"sudo {string_util}").returncode != 0
    # percent-encoded first (the file's rule for special characters), then encrypted, once per credential
    enc_user = mac.ok(f"sudo {string_util} 'ops%40lab%3B2'").strip()
    enc_password = mac.ok(f"sudo {string_util} \"$(cat)\"", stdin=quote(lab.proxy_password(user2), safe="")).strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", enc_user) and re.fullmatch(r"[A-Za-z0-9_-]+", enc_password)
    base = lab.proxy_url().split("//")[1]
    wrong_first = f'qualys_https_proxy="{lab.proxy_url("fleetproxy", "nope")};https://#{enc_user}:#{enc_password}@{base}"\n'
    write_proxy_file(mac, wrong_first)
    mac.provision()
    mac.wait_log(f"Heartbeat acknowledged by platform {POD} (proxy: {base})")
    lab.wait_checkin(mac.wait_hostid())
    mine = [(a["user"], a["outcome"]) for a in lab.proxy_access() if a["client"] == mac.address]
    assert mine[:2] == [("fleetproxy", "407 denied"), (user2, "allowed")]

    write_proxy_file(mac, f"https_proxy={lab.proxy_url(user2)}\n")  # percent-encoded this time
    before = mac.ok(f"cat {LOG}")
    mac.provision()
    mac.wait_log(f"(proxy: {base})", after=before)
    assert [(a["user"], a["outcome"]) for a in lab.proxy_access() if a["client"] == mac.address][-1] == (user2, "allowed")

    for bad in [f"https_proxy=https://ops@lab;2:x@{base}\n", f'qualys_https_proxy="{";".join([lab.proxy_url()] * 6)}"\n']:
        write_proxy_file(mac, bad)
        before = mac.ok(f"cat {LOG}")
        mac.provision()
        assert "Heartbeat" not in wait_error(mac, "Proxy configuration invalid: ", after=before)
    mac.ok(f"sudo rm {PROXY}")  # removed: the agent goes direct, which this network does not allow
    before = mac.ok(f"cat {LOG}")
    mac.provision()
    assert "Heartbeat" not in wait_error(mac, "Platform communication failed: ", after=before)


def test_run_as_user_and_reinstall_keeps_the_asset(lab: Lab):
    mac = lab.mac("mac-036")
    assert mac.ok("id qagent").startswith("uid=502(qagent) gid=20(staff)")
    nosudo = mac.run("sudo -u qagent sudo -n true")
    assert nosudo.returncode == 1 and "a password is required" in nosudo.stderr
    ensure_installed(mac)
    mac.provision("User=qagent", "UseSudo=1", "HostIdSearchDir=/etc/")
    assert "User=qagent\n" in mac.ok(f"sudo cat {CONF}")  # the tool takes it; fleetctl's preflight must not
    hostid = mac.wait_hostid()
    lab.wait_checkin(hostid)
    mac.ok(f"sudo {APP_BIN}/qagent_uninstall.sh")
    assert mac.ok(f"cat {HOSTID}").strip() == hostid
    seen = len(lab.checkins())
    mac.install()
    mac.provision()
    assert lab.wait_checkin(hostid, after=seen)["sent_hostid"] == hostid
    assert len({c["hostid"] for c in lab.checkins_from(mac)}) == 1  # one asset, not a duplicate
