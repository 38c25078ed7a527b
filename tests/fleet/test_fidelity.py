"""fleetctl relies only on what the vendor guide and macOS document (issue 10), on the session lab.

Each test drives `fleetctl run` over real SSH and asserts what ended up on the Mac.
"""
from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path

import yaml

from conftest import FLEETCTL, Lab, lab_env

ROOT = Path(__file__).resolve().parents[2]
ROLLOUT = ROOT / "playbooks" / "rollout.yml"
CONFIG = "/Library/Application Support/QualysCloudAgent/Config"
PROXY_FILE = f"{CONFIG}/proxy"
CA_BUNDLE = "/Applications/QualysCloudAgent.app/Contents/Config/cert/ca-bundle.crt"


def env_of(lab: Lab, **extra: str) -> dict:
    return {**lab_env(lab.dir), **extra}


def playbook(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(text)
    return path


def inventory(lab: Lab, tmp_path: Path, **host_vars: dict) -> Path:
    """The lab's inventory with HOST_VARS merged into the named hosts."""
    data = yaml.safe_load((lab.dir / "inventory.yml").read_text())
    for name, values in host_vars.items():
        data["all"]["hosts"][name.replace("_", "-")].update(values)
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def play(lab: Lab, book: Path, limit: str, *args: str, inv: Path | None = None, env: dict | None = None,
         codes: tuple[int, ...] = (0, 3)) -> dict:
    """Run BOOK on LIMIT; the report's hosts by name, plus the run's output."""
    out = lab.dir / "fidelity.json"
    done = subprocess.run([str(FLEETCTL), "run", str(book), "-i", str(inv or lab.dir / "inventory.yml"), "--limit",
                           limit, "--json", str(out), *args], capture_output=True, text=True, timeout=600,
                          env=env or env_of(lab))
    assert done.returncode in codes, done.stdout + done.stderr
    hosts = {h["name"]: h for h in json.loads(out.read_text())["hosts"]}
    hosts["_output"] = done.stdout + done.stderr
    return hosts


def status(lab: Lab, limit: str, env: dict | None = None) -> dict:
    out = lab.dir / "fidelity-status.json"
    done = subprocess.run([str(FLEETCTL), "status", "-i", str(lab.dir / "inventory.yml"), "--limit", limit,
                           "--json", str(out)], capture_output=True, text=True, timeout=300, env=env or env_of(lab))
    assert done.returncode in (0, 3), done.stdout + done.stderr
    return {h["name"]: h for h in json.loads(out.read_text())["hosts"]}


def sudo_cat(lab: Lab, name: str, path: str) -> subprocess.CompletedProcess:
    return lab.mac(name).run(f"sudo cat '{path}'")


def test_chatty_agent_passes_and_an_error_after_provisioning_fails(lab: Lab):
    """Healthy = receipt, launchd PID, hostid, no Error/Fatal since the run began; words don't count."""
    hosts = play(lab, ROLLOUT, "mac-025,mac-026")
    assert hosts["mac-025"]["status"] == "changed", hosts["mac-025"]
    failed = hosts["mac-026"]
    assert failed["status"] == "failed" and "[Error]" in failed["reason"], failed
    assert "verify" in failed["reason"] and [s["name"] for s in failed["steps"]][-1] == "verify"
    health = status(lab, "mac-025,mac-026")
    assert health["mac-025"]["health"] == "healthy", health["mac-025"]
    assert health["mac-026"]["health"] == "unhealthy" and health["mac-026"]["errors"] >= 1, health["mac-026"]


def test_checkin_pattern_is_the_admins_choice(lab: Lab, tmp_path):
    """Unset, fleetctl never waits for text; set, verify waits for it (bounded by verify_timeout)."""
    found = playbook(tmp_path, "found", "action: configure\nverify_timeout: 20\n"
                     "checkin_pattern: 'Heartbeat acknowledged by platform'\nagent:\n  CmdMaxTimeOut: 1200\n")
    host = play(lab, found, "mac-025")["mac-025"]
    assert host["status"] == "changed", host
    never = playbook(tmp_path, "never", "action: configure\nverify_timeout: 5\n"
                     "checkin_pattern: 'Agent check-in succeeded'\nagent:\n  LogLevel: 2\n")
    host = play(lab, never, "mac-025")["mac-025"]
    assert host["status"] == "failed" and "checkin_pattern 'Agent check-in succeeded'" in host["reason"], host
    bad = playbook(tmp_path, "bad", "action: configure\ncheckin_pattern: 'unclosed ('\n")
    done = subprocess.run([str(FLEETCTL), "plan", str(bad), "-i", str(lab.dir / "inventory.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"{bad}:2:" in done.stderr and "regular expression" in done.stderr


def test_custom_log_dir_and_unified_log_are_remembered(lab: Lab, tmp_path):
    """Upgrade, scan, status and logs read the agent where fleetctl applied it, not the defaults."""
    mac = lab.mac("mac-027")
    custom = playbook(tmp_path, "custom", "action: install\nagent:\n  LogFileDir: /private/var/log/qa/\n")
    assert play(lab, custom, "mac-027")["mac-027"]["status"] == "changed"
    mac.ok("sudo test -s /private/var/log/qa/qualys-cloud-agent.log")
    scan = play(lab, ROOT / "playbooks/scan.yml", "mac-027")["mac-027"]
    assert scan["status"] == "ok" and scan["reason"].endswith("requested"), scan
    control = scan["reason"].split()[1]
    assert f"ControlID={control}" in mac.ok("sudo cat /private/var/log/qa/qualys-cloud-agent.log")
    assert status(lab, "mac-027")["mac-027"]["health"] == "healthy"

    syslog = playbook(tmp_path, "syslog", "action: configure\nagent:\n  LogDestType: syslog\n")
    assert play(lab, syslog, "mac-027")["mac-027"]["status"] == "changed"
    scan = play(lab, ROOT / "playbooks/scan.yml", "mac-027")["mac-027"]
    assert scan["status"] == "ok" and scan["reason"].endswith("requested"), scan
    control = scan["reason"].split()[1]
    assert f"ControlID={control}" not in mac.ok("sudo cat /private/var/log/qa/qualys-cloud-agent.log")
    unified = mac.ok("sudo log show --style ndjson --info --predicate 'process == \"qualys-cloud-agent\"'")
    assert f"ControlID={control}" in unified
    health = status(lab, "mac-027")["mac-027"]
    assert (health["health"], health["log_source"]) == ("healthy", "syslog"), health
    logs = subprocess.run([str(FLEETCTL), "logs", "mac-027", "-i", str(lab.dir / "inventory.yml"), "--since", "1h"],
                          capture_output=True, text=True, timeout=120, env=env_of(lab))
    assert logs.returncode == 0 and f"ControlID={control}" in logs.stdout, logs.stdout + logs.stderr


def test_hostid_search_dir_change_keeps_one_hostid(lab: Lab, tmp_path):
    mac = lab.mac("mac-028")
    assert play(lab, ROLLOUT, "mac-028")["mac-028"]["status"] == "changed"
    hostid = mac.ok("cat /etc/qualys/hostid")
    away = playbook(tmp_path, "away", "action: configure\nagent:\n  HostIdSearchDir: /private/var/qa-id/\n")
    host = play(lab, away, "mac-028")["mac-028"]
    assert host["status"] == "changed", host
    assert mac.ok("cat /private/var/qa-id/qualys/hostid") == hostid
    assert mac.run("test -e /etc/qualys/hostid").returncode == 1  # one hostid, where the option points
    back = playbook(tmp_path, "back", "action: configure\nagent:\n  HostIdSearchDir: /etc/\n")
    for _ in range(2):  # and every later run stays healthy
        host = play(lab, back, "mac-028")["mac-028"]
        assert host["status"] in ("changed", "ok"), host
    assert mac.ok("cat /etc/qualys/hostid") == hostid
    assert mac.run("test -e /private/var/qa-id/qualys/hostid").returncode == 1
    lab.wait_checkin(hostid.strip())
    dotted = playbook(tmp_path, "dotted", "action: configure\nagent:\n  HostIdSearchDir: /etc/qualys/../../tmp/x\n")
    done = subprocess.run([str(FLEETCTL), "run", str(dotted), "-i", str(lab.dir / "inventory.yml"), "--limit",
                           "mac-028"], capture_output=True, text=True, timeout=60, env=env_of(lab))
    assert done.returncode == 2 and "without '..'" in done.stderr, done.stderr


def test_each_proxy_has_its_own_credentials(lab: Lab, tmp_path):
    proxy_url = lab.inventory["all"]["vars"]["lab_proxy_url"]
    user2 = lab.inventory["all"]["vars"]["lab_proxy2_user"]
    dead = proxy_url.rsplit(":", 1)[0] + ":9"  # nothing listens there: the agent moves on to the next
    inv = inventory(lab, tmp_path, mac_029={"proxy_urls": [
        {"url": dead, "user": "nobody@x", "password_secret": "lab_proxy_password"},
        {"url": proxy_url, "user": user2, "password_secret": "lab_proxy2_password"}]})
    env = env_of(lab, FLEETCTL_LAB_PROXY2_PASSWORD=(lab.dir / "proxy2-password").read_text().strip())
    host = play(lab, ROLLOUT, "mac-029", inv=inv, env=env)["mac-029"]
    assert host["status"] == "changed", host
    content = sudo_cat(lab, "mac-029", PROXY_FILE).stdout
    encoded2 = urllib.parse.quote(user2, safe="")
    assert content.startswith('qualys_https_proxy="https://nobody%40x:') and f";https://{encoded2}:" in content
    hostid = lab.mac("mac-029").ok("cat /etc/qualys/hostid").strip()
    assert lab.wait_checkin(hostid)["peer"] != lab.mac("mac-029").address  # through the second proxy


def test_encrypted_password_with_string_util(lab: Lab, tmp_path):
    """proxy-encrypt runs the package's string-util on the Mac; preflight then only warns on a 407."""
    env = env_of(lab)
    done = subprocess.run([str(FLEETCTL), "proxy-encrypt", "-i", str(lab.dir / "inventory.yml"), "--host", "mac-029"],
                          input=lab.proxy_password() + "\n", capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.startswith("#"), done.stdout + done.stderr
    encrypted = done.stdout.strip()
    assert lab.proxy_password() not in done.stdout + done.stderr
    assert lab.mac("mac-029").count("string-util") == 1
    assert "string-util" not in lab.mac("mac-029").ok("ls -R /private/var/tmp")  # no copy left behind
    proxy_url = lab.inventory["all"]["vars"]["lab_proxy_url"]
    user = lab.inventory["all"]["vars"]["lab_proxy_user"]
    inv = inventory(lab, tmp_path, mac_029={"proxy_urls": [
        {"url": proxy_url, "user": user, "password_secret": "lab_encrypted"}]})
    host = play(lab, ROLLOUT, "mac-029", inv=inv, env={**env, "FLEETCTL_LAB_ENCRYPTED": encrypted})["mac-029"]
    assert host["status"] == "changed", host
    assert "encrypted credentials cannot be checked" in host["reason"], host
    content = sudo_cat(lab, "mac-029", PROXY_FILE).stdout
    assert f"{user}:{encrypted}@" in content  # only the password is encrypted, as in the guide's example


def test_proxy_without_port_is_checked_on_443(lab: Lab, tmp_path):
    proxy_url = lab.inventory["all"]["vars"]["lab_proxy_url"].rsplit(":", 1)[0]
    inv = inventory(lab, tmp_path, mac_030={"proxy_urls": [proxy_url]})
    host = play(lab, playbook(tmp_path, "c", "action: install\n"), "mac-030", inv=inv)["mac-030"]
    assert host["status"] == "failed" and f"via {proxy_url.split('://')[1]}:443" in host["reason"], host
    assert lab.mac("mac-030").count("installer") == 0  # preflight stopped it before any change


def test_going_back_from_a_proxy_to_direct(lab: Lab, tmp_path):
    proxy_url = lab.inventory["all"]["vars"]["lab_proxy_url"]
    user = lab.inventory["all"]["vars"]["lab_proxy_user"]
    with_proxy = inventory(lab, tmp_path, mac_030={"proxy_urls": [proxy_url], "proxy_user": user,
                                                   "proxy_password_secret": "lab_proxy_password"})
    assert play(lab, ROLLOUT, "mac-030", inv=with_proxy)["mac-030"]["status"] == "changed"
    assert sudo_cat(lab, "mac-030", PROXY_FILE).stdout.startswith("qualys_https_proxy=")
    assert status(lab, "mac-030")["mac-030"]["proxy"] == f"qualys_https_proxy={proxy_url}"
    configure = playbook(tmp_path, "configure", "action: configure\n")
    host = play(lab, configure, "mac-030")["mac-030"]
    assert (host["status"], host["reason"]) == ("changed", "changed: proxy"), host
    assert lab.mac("mac-030").run(f"sudo test -e '{PROXY_FILE}'").returncode == 1
    assert status(lab, "mac-030")["mac-030"]["proxy"] == "none"
    assert play(lab, configure, "mac-030")["mac-030"]["status"] == "ok"


def test_run_as_user_and_sudo_command_are_checked(lab: Lab, tmp_path):
    conf = f"{CONFIG}/qualys-cloud-agent.conf"
    before = sudo_cat(lab, "mac-030", conf).stdout
    nopass = playbook(tmp_path, "u", "action: configure\nagent:\n  User: qagent\n  UseSudo: 1\n")
    host = play(lab, nopass, "mac-030")["mac-030"]
    assert host["status"] == "failed" and "'qagent' may not run sudo without a password" in host["reason"], host
    pbrun = playbook(tmp_path, "p", "action: configure\nagent:\n  UseSudo: 1\n  SudoCommand: pbrun\n")
    host = play(lab, pbrun, "mac-030")["mac-030"]
    assert host["status"] == "failed" and "SudoCommand 'pbrun' is not on this Mac" in host["reason"], host
    nouser = playbook(tmp_path, "n", "action: configure\nagent:\n  User: nosuchagent\n")
    host = play(lab, nouser, "mac-030")["mac-030"]
    assert host["status"] == "failed" and "user 'nosuchagent' does not exist" in host["reason"], host
    assert sudo_cat(lab, "mac-030", conf).stdout == before  # nothing changed on the Mac


def test_upgrade_without_a_package_for_the_arch_fails(lab: Lab, tmp_path):
    assert play(lab, ROLLOUT, "mac-031")["mac-031"]["status"] == "changed"
    pkg = tmp_path / "arm64.pkg"
    subprocess.run([str(FLEETCTL), "lab", "pkg", "--version", "6.2.0.7", "--arch", "arm64", "--size-mb", "2",
                    "--out", str(pkg)], check=True, capture_output=True, timeout=120)
    host = play(lab, ROOT / "playbooks/upgrade-wave.yml", "mac-031", "-e", f"agent_pkg_arm64={pkg}",
                "-e", "agent_pkg_x86_64=")["mac-031"]
    assert (host["status"], host["reason"]) == ("failed", "no package for x86_64: set agent_pkg_x86_64"), host


def test_ca_bundles_are_combined_and_survive_an_upgrade(lab: Lab, tmp_path):
    pems = []
    for n in (1, 2):
        key, pem = tmp_path / f"k{n}.pem", tmp_path / f"ca{n}.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(pem), "-days", "30", "-subj", f"/CN=proxy-ca-{n}"],
                       check=True, capture_output=True, timeout=60)
        pems.append(pem)
    bundle = pems[0].read_text() + pems[1].read_text()
    inv = inventory(lab, tmp_path, mac_031={"proxy_ca_bundle": [str(p) for p in pems]})
    configure = playbook(tmp_path, "configure", "action: configure\n")
    assert play(lab, configure, "mac-031", inv=inv)["mac-031"]["status"] == "changed"
    assert sudo_cat(lab, "mac-031", CA_BUNDLE).stdout == bundle
    pkg = tmp_path / "x86_64.pkg"
    subprocess.run([str(FLEETCTL), "lab", "pkg", "--version", "6.3.0.1", "--arch", "x86_64", "--size-mb", "2",
                    "--out", str(pkg)], check=True, capture_output=True, timeout=120)
    host = play(lab, ROOT / "playbooks/upgrade-wave.yml", "mac-031", "-e", f"agent_pkg_x86_64={pkg}", inv=inv)["mac-031"]
    assert host["status"] == "changed" and host["version_after"] == "6.3.0.1", host
    assert sudo_cat(lab, "mac-031", CA_BUNDLE).stdout == bundle


def test_uninstall_keeps_the_hostid_unless_asked(lab: Lab, tmp_path):
    kept = play(lab, ROOT / "playbooks/uninstall-sweep.yml", "mac-030")["mac-030"]
    assert kept["status"] == "changed" and "hostid kept at /etc/qualys/hostid" in kept["reason"], kept
    lab.mac("mac-030").ok("test -s /etc/qualys/hostid")
    lab.mac("mac-030").ok("test ! -e /Applications/QualysCloudAgent.app")
    remove = playbook(tmp_path, "remove", "action: uninstall\nremove_hostid: true\n")
    gone = play(lab, remove, "mac-028")["mac-028"]
    assert gone["status"] == "changed" and "hostid removed" in gone["reason"], gone
    assert lab.mac("mac-028").run("test -e /etc/qualys/hostid").returncode == 1


def test_log_level_4_warns_in_plan_and_run(lab: Lab, tmp_path):
    loud = playbook(tmp_path, "loud", "action: configure\nagent:\n  LogLevel: 5\n")
    done = subprocess.run([str(FLEETCTL), "plan", str(loud), "-i", str(lab.dir / "inventory.yml"), "--limit",
                           "mac-025"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "may write secrets" in done.stdout + done.stderr
    host = play(lab, loud, "mac-025")
    assert "may write secrets" in host["_output"]
