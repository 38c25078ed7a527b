"""The simulated agent, installed from the lab package, behaves as the spec says."""
import re

import pytest

from conftest import ACTIVATION, APP_BIN, CUSTOMER, LOG, Lab, fleetctl

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[qualys-cloud-agent\]\[\d+\]:"
    r"\[(Fatal|Error|Warning|Information|Debug|Trace)\]:\[\d+\]:.+$"
)
CONF = "'/Library/Application Support/QualysCloudAgent/Config/qualys-cloud-agent.conf'"
PROXY = "'/Library/Application Support/QualysCloudAgent/Config/proxy'"


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
                 "cloudagentctl.sh", "qualys-cloud-agent"]:
        mac.ok(f"test -x {APP_BIN}/{tool}")
    mac.ok("test -f /Library/LaunchDaemons/com.qualys.cloud-agent.plist")
    assert "state = running" in mac.ok("sudo launchctl print system/com.qualys.cloud-agent")
    assert re.search(r"^\d+\t0\tcom.qualys.cloud-agent$", mac.ok("sudo launchctl list"), re.M)

    provisioned = mac.provision()
    assert provisioned == ("Setting permission for user: root\nSetting permission for group: wheel\n"
                           "hostid search path: /etc\n")
    hostid = mac.ok("cat /etc/qualys/hostid").strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", hostid)
    log = mac.wait_log("Agent check-in succeeded")
    assert all(LOG_LINE.match(line) for line in log.splitlines()), log
    checkin = lab.wait_checkin(hostid)
    assert checkin["customer_id"] == CUSTOMER and checkin["agent_version"] == "6.1.0.20"
    assert mac.count("installer") == 1
    assert "Error" not in log and "Fatal" not in log


@pytest.mark.parametrize("option", [
    "ActivationId=not-a-uuid", "CustomerId=1234", "ServerUri=http://qagpublic.qg1.fleetlab.test/CloudAgent",
    "ServerUri=https://qagpublic.qg1.fleetlab.test/", "LogLevel=6", "LogLevel=-1", "LogLevel=x",
    "LogDestType=stdout", "UseSudo=2", "User=nosuchuser", "Group=nosuchgroup", "ProcessPriority=20",
    "ProcessPriority=-21", "QualysProxyOrder=roundrobin", "CmdMaxTimeOut=soon", "HostIdSearchDir=etc",
    "LogFileDir=logs", "NoSuchOption=1", "LogLevel",
])
def test_configuration_tool_rejects_bad_options(lab: Lab, option):
    mac = lab.mac("mac-017")
    if mac.run("test -x " + APP_BIN + "/qualys-cloud-agent.sh").returncode:
        mac.install()
    before = mac.run(f"sudo cat {CONF}").stdout
    done = mac.run(f"sudo {APP_BIN}/qualys-cloud-agent.sh {option}")
    assert done.returncode != 0 and done.stderr.strip(), done
    assert mac.run(f"sudo cat {CONF}").stdout == before  # nothing half-changed


def test_configuration_tool_accepts_every_good_option_and_needs_root(lab: Lab):
    mac = lab.mac("mac-017")
    if mac.run("test -x " + APP_BIN + "/qualys-cloud-agent.sh").returncode:
        mac.install()
    assert mac.run(f"{APP_BIN}/qualys-cloud-agent.sh LogLevel=4").returncode != 0  # not root
    mac.provision("LogLevel=5", "LogDestType=file", "UseSudo=1", '"SudoCommand=sudo -n"', "User=admin",
                  "Group=staff", "HostIdSearchDir=/private/var/", "CmdMaxTimeOut=600", "ProcessPriority=-5",
                  "QualysProxyOrder=random", "LogFileDir=/var/log/qualys/")
    conf = mac.ok(f"sudo cat {CONF}")
    assert "LogLevel=5\n" in conf and "SudoCommand=sudo -n\n" in conf and "User=admin\n" in conf
    mac.ok("test -s /private/var/qualys/hostid")
    assert mac.ok(f"stat -c %a {CONF}") == "600\n"
    mac.wait_log("Agent check-in succeeded")


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
    lab.wait_checkin(mac.ok("cat /etc/qualys/hostid").strip())


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
    log = mac.wait_log("[Fatal]")
    assert "started" in log
    assert re.search(r"^-\t139\tcom.qualys.cloud-agent$", mac.ok("sudo launchctl list"), re.M)
    assert "state = not running" in mac.ok("sudo launchctl print system/com.qualys.cloud-agent")


def test_proxy_only_fails_closed_then_checks_in_through_the_proxy(lab: Lab):
    mac = lab.mac("mac-012")
    mac.install()
    mac.provision()
    hostid = mac.ok("cat /etc/qualys/hostid").strip()
    mac.wait_log("Agent check-in failed")
    assert not [c for c in lab.checkins() if c["hostid"] == hostid]
    proxy = lab.inventory["all"]["vars"]["lab_proxy_url"].replace("https://", f"https://fleetproxy:{lab.proxy_password()}@")
    mac.ok(f"echo 'qualys_https_proxy={proxy}' | sudo tee {PROXY} >/dev/null && sudo chmod 660 {PROXY}")
    mac.provision()  # any run of the tool wakes the agent
    mac.wait_log("Agent check-in succeeded")
    assert lab.wait_checkin(hostid)["peer"] != mac.address  # it came through the proxy


def test_several_proxies_are_tried_in_order_and_never_direct(lab: Lab):
    mac = lab.mac("mac-016")
    mac.install()
    base = lab.inventory["all"]["vars"]["lab_proxy_url"].split("//")[1]
    good = f"https://fleetproxy:{lab.proxy_password()}@{base}"
    mac.ok(f"echo 'qualys_https_proxy=\"https://fleetproxy:wrong%40pass@{base};https://198.18.0.2:3128\"' "
           f"| sudo tee {PROXY} >/dev/null")
    mac.provision()
    hostid = mac.ok("cat /etc/qualys/hostid").strip()
    log = mac.wait_log("Agent check-in failed")
    assert log.count("]:[Warning]:") >= 2 and "direct" not in log
    assert not [c for c in lab.checkins() if c["hostid"] == hostid]
    mac.ok(f"echo 'qualys_https_proxy=\"https://198.18.0.2:3128;{good}\"' | sudo tee {PROXY} >/dev/null")
    mac.provision()
    mac.wait_log("Agent check-in succeeded")
    lab.wait_checkin(hostid)


def test_no_proxy_bypasses_the_proxy_for_the_pod(lab: Lab):
    mac = lab.mac("mac-014")
    mac.install()
    mac.ok(f"printf 'export qualys_https_proxy=https://198.18.0.2:3128\\nexport no_proxy=fleetlab.test\\n' "
           f"| sudo tee {PROXY} >/dev/null")
    mac.provision()
    mac.wait_log("Agent check-in succeeded: ServerUri=https://qagpublic.qg1.fleetlab.test/CloudAgent, Proxy=none")
    mac.ok(f"sudo rm {PROXY}")


def test_upgrade_restart_and_uninstall(lab: Lab, tmp_path):
    mac = lab.mac("mac-014")
    if mac.run("test -x " + APP_BIN + "/qagent_upgrade.sh").returncode:
        mac.install()
    mac.provision()
    hostid = mac.ok("cat /etc/qualys/hostid").strip()
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
    assert mac.ok("cat /etc/qualys/hostid").strip() == hostid and mac.ok(f"sudo cat {CONF}") == conf
    lab.wait_checkin(hostid, agent_version="6.2.0.7")
    assert mac.count("qagent_upgrade.sh") == 1

    assert mac.ok(f"sudo {APP_BIN}/qagent_uninstall.sh") == "Qualys Cloud Agent uninstalled successfully\n"
    for path in ["/Applications/QualysCloudAgent.app", "/Library/LaunchDaemons/com.qualys.cloud-agent.plist",
                 "/Library/Application Support/QualysCloudAgent", "/etc/qualys/hostid"]:
        mac.ok(f"test ! -e '{path}'")
    assert mac.run("pkgutil --pkg-info com.qualys.cloud-agent").returncode == 1
    assert mac.run("sudo launchctl print system/com.qualys.cloud-agent").returncode == 113
    assert "qagent" not in mac.ok("ps -eo args")


def test_on_demand_scans(lab: Lab):
    mac = lab.mac("mac-018")
    mac.install()
    not_running = mac.run(f"sudo {APP_BIN}/cloudagentctl.sh action=demand type=vm")
    mac.provision()
    mac.wait_log("Manifest downloaded for module INV")
    out = mac.ok(f"sudo {APP_BIN}/cloudagentctl.sh action=demand type=vm cputhrottle=0")
    control_id = re.fullmatch(r"On-Demand-Request ControlId: (\d{14}\.\d+)\n", out).group(1)
    log = mac.wait_log(f"OnDemand scan completed for Control ID : {control_id}")
    assert (f"OnDemandRequest Params: ControlID={control_id}, Action=OnDemand, Type=VM, CPUThrottle=0") in log

    udc = mac.ok(f"sudo {APP_BIN}/cloudagentctl.sh action=demand type=udc").split()[-1]
    assert "agent is not activated for module UDC" in mac.wait_log(f"Control ID : {udc} failed")

    mac.ok("echo pc | sudo tee /private/var/fleetlab/interval-scan >/dev/null")
    pc = mac.ok(f"sudo {APP_BIN}/cloudagentctl.sh action=demand type=pc cputhrottle=100").split()[-1]
    log = mac.wait_log(f"OnDemand request for Control ID : {pc} will be delayed.")
    assert "Interval Event of same type is in progress with state INTERVAL_EVENT_SCAN" in log
    mac.ok("sudo rm /private/var/fleetlab/interval-scan")
    mac.provision()  # wakes the agent, which now runs the delayed scan
    mac.wait_log(f"OnDemand scan completed for Control ID : {pc}")

    for bad in ["action=demand type=xyz", "type=vm", "action=demand type=vm cputhrottle=1001", "action=demand"]:
        assert mac.run(f"sudo {APP_BIN}/cloudagentctl.sh {bad}").returncode != 0
    assert not_running.returncode != 0 or "On-Demand-Request" in not_running.stdout


def test_log_level_filters_lines(lab: Lab):
    mac = lab.mac("mac-018")
    if mac.run("test -x " + APP_BIN + "/qualys-cloud-agent.sh").returncode:
        mac.install()
    mac.ok(f"sudo {APP_BIN}/qualys-cloud-agent.sh LogLevel=0")
    before = mac.ok(f"cat {LOG}")
    mac.ok(f"sudo {APP_BIN}/qualys-cloud-agent.sh LogLevel=0")  # its Information line is filtered out
    assert mac.ok(f"cat {LOG}") == before
    mac.ok(f"sudo {APP_BIN}/qualys-cloud-agent.sh LogLevel=5")
    assert "]:[Debug]:" in mac.wait_log("Configuration values: LogLevel=5")
    mac.ok(f"sudo {APP_BIN}/qualys-cloud-agent.sh LogLevel=3")
