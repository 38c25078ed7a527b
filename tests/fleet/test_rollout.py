"""fleetctl run against its own 20-Mac lab with mixed personas, over real SSH."""
from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

from conftest import ACTIVATION, CUSTOMER, FLEETCTL, Lab

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "rollout.yml"
PERSONAS = ("x86_64*3,sudo-password,nosudo,root-login,installer-fails,drop-mid-transfer,unreachable,slowlink,"
            "proxy-only*2,agent-crashes,lowdisk,lowmem,macos12+x86_64")
EXPECTED = {  # host -> (status, words in the reason)
    "mac-001": ("changed", ""), "mac-002": ("changed", ""), "mac-003": ("changed", ""),
    "mac-004": ("changed", ""), "mac-005": ("failed", "sudo asks for a password"),
    "mac-006": ("changed", ""), "mac-007": ("failed", "Installer encountered an error"),
    "mac-008": ("failed", "upload: connection lost"), "mac-009": ("unreachable", ""),
    "mac-010": ("changed", ""), "mac-011": ("changed", ""), "mac-012": ("changed", ""),
    "mac-013": ("failed", "daemon is not running"), "mac-014": ("failed", "free disk 80 MB"),
    "mac-015": ("failed", "memory 256 MB"), "mac-016": ("changed", ""),
    "mac-017": ("changed", ""), "mac-018": ("changed", ""), "mac-019": ("changed", ""), "mac-020": ("changed", ""),
}
HEALTHY = sorted(h for h, (s, _) in EXPECTED.items() if s == "changed")


def run(inventory: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(FLEETCTL), "run", str(PLAYBOOK), "-i", str(inventory), *args],
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def fleet(make_lab):
    return make_lab(20, PERSONAS, "rolloutlab")


def _hostid(lab: Lab, name: str) -> str:
    return (lab.dir / "hosts" / name / "root/etc/qualys/hostid").read_text().strip()


def test_rollout_then_rerun_is_a_no_op(fleet, tmp_path):
    lab, env = fleet
    inventory = lab.dir / "inventory.yml"
    first = run(inventory, "--json", str(tmp_path / "r1.json"), env=env)
    assert first.returncode == 3, first.stdout + first.stderr
    report = json.loads((tmp_path / "r1.json").read_text())
    assert report["action"] == "install" and report["run_id"]
    by_name = {h["name"]: h for h in report["hosts"]}
    for name, (status, words) in EXPECTED.items():
        host = by_name[name]
        assert host["status"] == status, (name, host)
        assert words in (host["reason"] or ""), (name, host["reason"])
    for name in HEALTHY:
        host = by_name[name]
        assert host["version_after"] == "6.1.0.20" and host["version_before"] is None
        assert host["uploaded_bytes"] >= lab.pkg(host["arch"]).stat().st_size  # the whole package, once
        state = ["state"] if name == "mac-004" else []  # sudo -n cannot read root-only state there
        assert [s["name"] for s in host["steps"]] == ["probe", *state, "preflight", "upload", "install", "configure",
                                                      "verify"]
        # install, configure and verify share one sudo channel, yet each step keeps its own output
        steps = {s["name"]: s for s in host["steps"]}
        assert "installer: The install was successful." in steps["install"]["detail"], steps["install"]
        assert "Setting permission for user: root" in steps["configure"]["detail"], steps["configure"]
        assert "log_line=" in steps["verify"]["detail"] and "installer:" not in steps["verify"]["detail"]
        checkin = lab.wait_checkin(_hostid(lab, name))
        assert checkin["customer_id"] == CUSTOMER
    assert by_name["mac-016"]["arch"] == "x86_64" and by_name["mac-016"]["macos"] == "12.7.6"
    assert by_name["mac-009"]["reason"]  # says why it is unreachable
    # nothing half-changed where the host failed
    for name in ("mac-007", "mac-008", "mac-014", "mac-015"):
        assert not (lab.dir / "hosts" / name / "root/Applications/QualysCloudAgent.app").exists()
    proxy = lab.dir / "hosts/mac-012/root/Library/Application Support/QualysCloudAgent/Config/proxy"
    assert oct(proxy.stat().st_mode & 0o777) == "0o660" and proxy.stat().st_uid == 0
    password = urllib.parse.quote(env["FLEETCTL_LAB_PROXY_PASSWORD"], safe="")  # percent-encoded, as the guide says
    assert proxy.read_text() == (f"qualys_https_proxy=https://fleetproxy:{password}@"
                                 f"{lab.inventory['all']['vars']['lab_proxy_url'].split('//')[1]}\n")

    retry = run(inventory, "--retry-failed", report["run_id"], "--json", str(tmp_path / "retry.json"), env=env)
    retried = {h["name"] for h in json.loads((tmp_path / "retry.json").read_text())["hosts"]}
    assert retried == {n for n, (s, _) in EXPECTED.items() if s != "changed"}, retry.stdout
    assert retry.returncode == 3

    second = run(inventory, "--json", str(tmp_path / "r2.json"), env=env)
    again = {h["name"]: h for h in json.loads((tmp_path / "r2.json").read_text())["hosts"]}
    for name in HEALTHY:
        assert again[name]["status"] == "ok" and again[name]["uploaded_bytes"] == 0, again[name]
        assert [s["name"] for s in again[name]["steps"]] == ["probe"] + (["state"] if name == "mac-004" else [])
        assert lab.mac(name).count("installer") == 1
    assert second.returncode == 3

    secrets = [ACTIVATION, CUSTOMER, env["FLEETCTL_LAB_SUDO_PASSWORD"], env["FLEETCTL_LAB_PROXY_PASSWORD"]]
    outputs = first.stdout + first.stderr + second.stdout + second.stderr
    outputs += (tmp_path / "r1.json").read_text() + (tmp_path / "r2.json").read_text()
    for secret in secrets:
        assert secret not in outputs


def test_status_sweep_and_logs(fleet, tmp_path):
    """Runs after the rollout above: the fleet's health as the agent's own log tells it."""
    lab, env = fleet
    done = subprocess.run([str(FLEETCTL), "status", "-i", str(lab.dir / "inventory.yml"), "--json",
                           str(tmp_path / "s.json")], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 3, done.stdout + done.stderr  # the crashing agent and the unreachable Mac
    report = json.loads((tmp_path / "s.json").read_text())
    hosts = {h["name"]: h for h in report["hosts"]}
    for name in HEALTHY:
        assert hosts[name]["health"] == "healthy", hosts[name]
        assert hosts[name]["version"] == "6.1.0.20" and hosts[name]["provisioned"] is True
        assert (hosts[name]["hostid_file"], hosts[name]["log_source"]) == ("/etc/qualys/hostid", "file")
        assert hosts[name]["daemon_running"] is True
    assert hosts["mac-012"]["proxy"] == "qualys_https_proxy=" + lab.inventory["all"]["vars"]["lab_proxy_url"]
    crashed = hosts["mac-013"]
    assert crashed["health"] == "unhealthy" and "daemon not running" in crashed["problems"]
    assert crashed["errors"] >= 1
    assert hosts["mac-009"]["health"] == "unreachable"
    assert hosts["mac-014"]["health"] == "absent"
    assert report["summary"]["by_version"]["6.1.0.20"] >= len(HEALTHY)
    assert env["FLEETCTL_LAB_PROXY_PASSWORD"] not in done.stdout + (tmp_path / "s.json").read_text()

    logs = subprocess.run([str(FLEETCTL), "logs", "mac-013", "-i", str(lab.dir / "inventory.yml"), "--level", "Error"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert logs.returncode == 0 and "[Fatal] Unhandled exception" in logs.stdout
    assert "[Information]" not in logs.stdout


def test_limit_and_summary_grouping(fleet):
    lab, env = fleet
    done = run(lab.dir / "inventory.yml", "--limit", "mac-01*:!mac-013:!mac-014:!mac-015", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mac-009" not in done.stdout and "mac-017" in done.stdout and "ok" in done.stdout


def test_host_keys_are_verified(fleet, tmp_path):
    lab, env = fleet
    inventory = yaml.safe_load((lab.dir / "inventory.yml").read_text())
    known = tmp_path / "known_hosts"
    inventory["all"]["vars"]["fleetctl_known_hosts"] = str(known)
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))

    unknown = run(path, "--limit", "mac-001", "--json", str(tmp_path / "a.json"), env=env)
    assert unknown.returncode == 3 and "known_hosts" in unknown.stdout
    accepted = run(path, "--limit", "mac-001", "--accept-new-hostkeys", env=env)
    assert accepted.returncode == 0, accepted.stdout
    address = inventory["all"]["hosts"]["mac-001"]["ansible_host"]
    assert known.read_text().startswith(address + " ssh-ed25519 ")

    other_key = (lab.dir / "hosts/mac-002/root/private/var/fleetlab/sshd/ssh_host_ed25519_key.pub").read_text().split()
    known.write_text(f"{address} {other_key[0]} {other_key[1]}\n")
    changed = run(path, "--limit", "mac-001", "--accept-new-hostkeys", env=env)
    assert changed.returncode == 3 and "CHANGED" in changed.stdout


def test_hostile_values_reach_the_mac_as_literal_data(fleet, tmp_path):
    lab, env = fleet
    hostile = "p@ss:w$rd;\"'` $(touch /tmp/pwned) \\"
    playbook = tmp_path / "hostile.yml"
    playbook.write_text(yaml.safe_dump({
        "action": "install",
        "agent": {"SudoCommand": "sudo -n $(touch /tmp/pwned) `touch /tmp/pwned`; echo 'x' \"y\"",
                  "LogFileDir": "/var/log/qualys dir/"},
    }))
    inventory = yaml.safe_load((lab.dir / "inventory.yml").read_text())
    inventory["all"]["hosts"]["mac-017"].update({
        "proxy_urls": ["https://198.18.0.2:3128"], "proxy_user": "o'brien; rm -rf /", "no_proxy": "fleetlab.test",
        "proxy_password_secret": "hostile"})
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    done = subprocess.run([str(FLEETCTL), "run", str(playbook), "-i", str(path), "--limit", "mac-017"],
                          capture_output=True, text=True, timeout=300, env={**env, "FLEETCTL_HOSTILE": hostile})
    assert done.returncode == 0, done.stdout + done.stderr
    mac = lab.mac("mac-017")
    conf = mac.ok("sudo cat '/Library/Application Support/QualysCloudAgent/Config/qualys-cloud-agent.conf'")
    assert "SudoCommand=sudo -n $(touch /tmp/pwned) `touch /tmp/pwned`; echo 'x' \"y\"\n" in conf
    proxy = mac.ok("sudo cat '/Library/Application Support/QualysCloudAgent/Config/proxy'")
    assert proxy == ("export qualys_https_proxy=https://o%27brien%3B%20rm%20-rf%20%2F:"
                     "p%40ss%3Aw%24rd%3B%22%27%60%20%24%28touch%20%2Ftmp%2Fpwned%29%20%5C@198.18.0.2:3128\n"
                     "export no_proxy=fleetlab.test\n")
    mac.ok("test -s '/var/log/qualys dir/qualys-cloud-agent.log'")
    assert mac.run("test -e /tmp/pwned").returncode == 1
    assert not Path("/tmp/pwned").exists()
    assert hostile not in done.stdout + done.stderr
