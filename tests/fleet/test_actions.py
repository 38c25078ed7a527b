"""Living with the agent: upgrade, configure, scan and uninstall after a rollout, on their own lab."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import FLEETCTL, Lab, fleetctl

ROOT = Path(__file__).resolve().parents[2]
PERSONAS = "x86_64*2,installer-fails,proxy-only,agent-crashes"
HEALTHY = ["mac-001", "mac-002", "mac-004", "mac-006", "mac-007", "mac-008"]


@pytest.fixture(scope="module")
def rolled_out(make_lab):
    lab, env = make_lab(8, PERSONAS, "actionslab")
    first = play(lab, env, ROOT / "playbooks/rollout.yml")
    assert {h["name"] for h in first["hosts"] if h["status"] == "changed"} == set(HEALTHY), first
    return lab, env


def play(lab: Lab, env: dict, playbook: Path, *args: str, inventory: Path | None = None) -> dict:
    out = lab.dir / "last.json"
    done = subprocess.run([str(FLEETCTL), "run", str(playbook), "-i", str(inventory or lab.dir / "inventory.yml"),
                           "--json", str(out), *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    report = json.loads(out.read_text())
    report["by_name"] = {h["name"]: h for h in report["hosts"]}
    report["stdout"] = done.stdout
    return report


def test_upgrade_wave(rolled_out, tmp_path):
    lab, env = rolled_out
    hostids = {n: (lab.dir / "hosts" / n / "root/etc/qualys/hostid").read_text() for n in HEALTHY}
    pkgs = {a: tmp_path / f"{a}.pkg" for a in ("arm64", "x86_64")}
    for arch, path in pkgs.items():
        fleetctl("lab", "pkg", "--version", "6.2.0.7", "--arch", arch, "--size-mb", "3", "--out", str(path))
    extra = ["-e", f"agent_pkg_arm64={pkgs['arm64']}", "-e", f"agent_pkg_x86_64={pkgs['x86_64']}"]
    report = play(lab, env, ROOT / "playbooks/upgrade-wave.yml", *extra)
    hosts = report["by_name"]
    for name in HEALTHY:
        assert hosts[name]["status"] == "changed", hosts[name]
        assert (hosts[name]["version_before"], hosts[name]["version_after"]) == ("6.1.0.20", "6.2.0.7")
        assert (lab.dir / "hosts" / name / "root/etc/qualys/hostid").read_text() == hostids[name]
        assert lab.mac(name).count("qagent_upgrade.sh") == 1
        lab.wait_checkin(hostids[name].strip(), agent_version="6.2.0.7")
    assert hosts["mac-003"]["status"] == "skipped" and "not installed" in hosts["mac-003"]["reason"]
    assert hosts["mac-005"]["status"] == "failed" and "daemon is not running" in hosts["mac-005"]["reason"]
    again = play(lab, env, ROOT / "playbooks/upgrade-wave.yml", *extra)["by_name"]
    for name in HEALTHY:
        assert again[name]["status"] == "ok" and again[name]["uploaded_bytes"] == 0
        assert again[name]["reason"] == "already at 6.2.0.7"
        assert lab.mac(name).count("qagent_upgrade.sh") == 1


def test_configure_changes_only_what_differs(rolled_out, tmp_path):
    lab, env = rolled_out
    inventory = yaml.safe_load((lab.dir / "inventory.yml").read_text())
    proxy_url = inventory["all"]["vars"]["lab_proxy_url"]
    inventory["all"]["hosts"]["mac-006"].update({"proxy_urls": [proxy_url], "proxy_user": "fleetproxy",
                                                 "proxy_password_secret": "lab_proxy_password"})
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory))
    playbook = tmp_path / "configure.yml"
    playbook.write_text("action: configure\nagent:\n  LogLevel: 4\n")
    hosts = play(lab, env, playbook, inventory=inv)["by_name"]
    for name in HEALTHY:
        expected = "changed: LogLevel, proxy" if name == "mac-006" else "changed: LogLevel"
        assert (hosts[name]["status"], hosts[name]["reason"]) == ("changed", expected), hosts[name]
        conf = lab.mac(name).ok("sudo cat '/Library/Application Support/QualysCloudAgent/Config/qualys-cloud-agent.conf'")
        assert "LogLevel=4\n" in conf
    proxy = lab.mac("mac-006").ok("sudo cat '/Library/Application Support/QualysCloudAgent/Config/proxy'")
    assert proxy.startswith("qualys_https_proxy=https://fleetproxy:")
    assert lab.mac("mac-001").run("test -e '/Library/Application Support/QualysCloudAgent/Config/proxy'").returncode == 1
    again = play(lab, env, playbook, inventory=inv)["by_name"]
    assert all(again[name]["status"] == "ok" for name in HEALTHY)


def test_run_as_group_must_exist(rolled_out, tmp_path):
    """A missing Group stops the Mac in preflight; built-in groups need no Directory Services lookup."""
    lab, env = rolled_out
    mac = lab.mac("mac-001")
    missing, builtin = tmp_path / "missing.yml", tmp_path / "staff.yml"
    missing.write_text("action: configure\nagent:\n  Group: qualysagents\n")
    builtin.write_text("action: configure\nagent:\n  Group: staff\n")
    before = mac.count("dscl")
    host = play(lab, env, missing, "--limit", "mac-001")["by_name"]["mac-001"]
    assert host["status"] == "failed" and "group 'qualysagents' does not exist" in host["reason"], host
    assert [(s["name"], s["status"]) for s in host["steps"]][-1] == ("preflight", "failed")  # nothing changed
    assert mac.count("dscl") == before + 1
    host = play(lab, env, builtin, "--limit", "mac-001")["by_name"]["mac-001"]
    assert host["status"] == "changed" and mac.count("dscl") == before + 1, host


def test_configure_migrates_the_subscription(rolled_out, tmp_path):
    lab, env = rolled_out
    playbook = tmp_path / "migrate.yml"
    playbook.write_text("action: configure\nsubscription: true\nagent:\n  LogLevel: 4\n")
    new_customer = "0d9a7c1e-1111-4222-8333-944455566677"
    moved = {**env, "FLEETCTL_CUSTOMER_ID": new_customer,
             "FLEETCTL_ACTIVATION_ID": "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"}
    hosts = play(lab, moved, playbook, "--limit", "mac-001")["by_name"]
    assert hosts["mac-001"]["status"] == "changed"
    assert hosts["mac-001"]["reason"].startswith("changed: ActivationId, CustomerId")  # ServerUri is the same
    hostid = (lab.dir / "hosts/mac-001/root/etc/qualys/hostid").read_text().strip()
    lab.wait_checkin(hostid, customer_id=new_customer)
    assert play(lab, moved, playbook, "--limit", "mac-001")["by_name"]["mac-001"]["status"] == "ok"


def test_on_demand_scans(rolled_out, tmp_path):
    lab, env = rolled_out
    (lab.dir / "hosts/mac-002/root/private/var/fleetlab/interval-scan").write_text("vm\n")
    hosts = play(lab, env, ROOT / "playbooks/scan.yml", "--limit", ",".join(HEALTHY))["by_name"]
    for name in HEALTHY:  # the guide's signals: the ControlId, then its request or delay line in the log
        expected = "delayed behind an interval scan" if name == "mac-002" else "requested"
        assert hosts[name]["status"] == "ok" and hosts[name]["reason"].endswith(expected), hosts[name]
        control_id = hosts[name]["reason"].split()[1]
        assert f"ControlID={control_id}" in lab.mac(name).ok("cat /var/log/qualys/qualys-cloud-agent.log")
    (lab.dir / "hosts/mac-002/root/private/var/fleetlab/interval-scan").unlink()
    done = tmp_path / "done.yml"  # completion only when the admin says what it looks like
    done.write_text("action: scan\nscan_done_pattern: 'Scan results uploaded for ControlID={control_id}'\n")
    host = play(lab, env, done, "--limit", "mac-001")["by_name"]["mac-001"]
    assert host["status"] == "ok" and host["reason"].endswith("done (scan_done_pattern seen)"), host
    playbook = tmp_path / "udc.yml"
    playbook.write_text("action: scan\nscan: {type: udc, timeout: 10}\n")
    udc = play(lab, env, playbook, "--limit", "mac-001")["by_name"]["mac-001"]
    assert udc["status"] == "failed" and "refused by cloudagentctl.sh" in udc["reason"], udc
    assert "activated for UDC" in udc["reason"]


def test_uninstall_sweep_leaves_no_agent_artefact(rolled_out):
    lab, env = rolled_out
    report = play(lab, env, ROOT / "playbooks/uninstall-sweep.yml")
    hosts = report["by_name"]
    for name in HEALTHY + ["mac-005"]:
        assert hosts[name]["status"] == "changed", hosts[name]
    assert hosts["mac-003"]["status"] == "ok" and hosts["mac-003"]["reason"] == "agent already absent"
    assert "asset record" in report["stdout"]
    for name in HEALTHY + ["mac-005"]:
        mac = lab.mac(name)
        for path in ["/Applications/QualysCloudAgent.app", "/Library/LaunchDaemons/com.qualys.cloud-agent.plist",
                     "/Library/Application Support/QualysCloudAgent",
                     "/usr/local/qualys/cloud-agent", "/private/var/db/fleetctl/qualys-agent.applied"]:
            mac.ok(f"sudo test ! -e '{path}'")
        if name != "mac-005":  # the crashing agent never reached the platform: no hostid to keep
            mac.ok("test -s /etc/qualys/hostid")  # the guide does not say it goes (Agentless Tracking)
            assert "hostid kept at /etc/qualys/hostid" in hosts[name]["reason"]
        assert mac.run("pkgutil --pkg-info com.qualys.cloud-agent").returncode == 1
        assert mac.run("sudo launchctl list com.qualys.cloud-agent").returncode == 113
        assert "qagent" not in mac.ok("ps -eo args")
    again = play(lab, env, ROOT / "playbooks/uninstall-sweep.yml")["by_name"]
    assert all(h["status"] == "ok" for h in again.values())
