"""An admin's existing setup, unchanged: an INI inventory with ranges, group_vars/ and
host_vars/, an ssh config with a bastion (ProxyJump) and hashed known_hosts; reports for CI
(JUnit) and for people (HTML, checked in a real headless browser)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from conftest import ACTIVATION, CUSTOMER, FLEETCTL, Lab

ROOT = Path(__file__).resolve().parents[2]
OFFICE = ["mac-020", "mac-021", "mac-022"]  # behind-bastion personas; mac-019 is the jump host
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def admin_setup(lab: Lab, tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("ansible")
    lab_vars = lab.inventory["all"]["vars"]
    (d / "hosts.ini").write_text("# as an Ansible user keeps it\n[office]\nmac-[020:022]\n\n[retired]\nmac-010\nmac-013\n\n"
                                 "[macs:children]\noffice\nretired\n\n[macs:vars]\nansible_user=admin\n")
    (d / "group_vars").mkdir()
    (d / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "ansible_ssh_private_key_file": str(lab.key), "fleetctl_known_hosts": str(d / "known_hosts"),
        "fleetctl_ssh_config": str(d / "ssh_config"), "server_uri": lab_vars["server_uri"],
        "fleetctl_pod_ca": lab_vars["fleetctl_pod_ca"], "agent_pkg_arm64": lab_vars["agent_pkg_arm64"],
        "agent_pkg_x86_64": lab_vars["agent_pkg_x86_64"]}))
    (d / "host_vars").mkdir()
    for name in ("mac-010", "mac-013"):  # unreachable; its agent crashes
        (d / "host_vars" / f"{name}.yml").write_text(f"ansible_host: {lab.mac(name).address}\n")
    config = [f"Host bastion\n  HostName {lab.mac('mac-019').address}\n  User admin\n  IdentityFile {lab.key}\n"]
    config += [f"Host {name}\n  HostName {lab.mac(name).address}\n" for name in OFFICE]
    config += ["Host mac-02*\n  ProxyJump bastion\n", "Host *\n  ConnectTimeout 3\n"]
    (d / "ssh_config").write_text("\n".join(config))
    shutil.copyfile(lab.known_hosts, d / "known_hosts")
    subprocess.run(["ssh-keygen", "-H", "-f", str(d / "known_hosts")], check=True, capture_output=True)
    assert "198.18." not in (d / "known_hosts").read_text()  # every entry hashed
    env = {**os.environ, "FLEETCTL_ACTIVATION_ID": ACTIVATION, "FLEETCTL_CUSTOMER_ID": CUSTOMER,
           "FLEETCTL_STATE_DIR": str(d / "state"), "NO_COLOR": "1"}
    return d, env


def _fleetctl(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(FLEETCTL), *args], capture_output=True, text=True, timeout=300, env=env)


def test_inventory_resolves_like_ansible_inventory(admin_setup):
    d, env = admin_setup
    graph = _fleetctl(env, "inventory", "-i", str(d / "hosts.ini"), "--graph")
    assert graph.returncode == 0, graph.stderr
    assert graph.stdout.splitlines() == ["@all:", "  |--@ungrouped:", "  |--@macs:", "  |  |--@office:",
                                         "  |  |  |--mac-020", "  |  |  |--mac-021", "  |  |  |--mac-022",
                                         "  |  |--@retired:", "  |  |  |--mac-010", "  |  |  |--mac-013"]


def test_rollout_through_the_bastion_with_junit_and_html(admin_setup, lab: Lab):
    d, env = admin_setup
    done = _fleetctl(env, "run", str(ROOT / "playbooks/rollout.yml"), "-i", str(d / "hosts.ini"),
                     "--json", str(d / "r.json"), "--junit", str(d / "r.xml"), "--html", str(d / "r.html"))
    assert done.returncode == 3, done.stdout + done.stderr  # mac-010 is unreachable, mac-013's agent crashes
    assert "\x1b[" not in done.stdout  # NO_COLOR and no live widgets when not a terminal
    doc = json.loads((d / "r.json").read_text())
    assert doc["schema"] == "fleetctl.report/1" and doc["summary"]["by_status"] == {"changed": 3, "unreachable": 1,
                                                                          "failed": 1}
    hosts = {h["name"]: h for h in doc["hosts"]}
    for name in OFFICE:
        assert hosts[name]["status"] == "changed", hosts[name]
        assert any("Heartbeat acknowledged" in line for line in hosts[name]["log"]), hosts[name]["log"]
    # nothing answers: a connect timeout, or at once "no route" once the kernel's ARP entry for it failed
    assert any(r in hosts["mac-010"]["reason"] for r in ("timed out after 3s", "no route to host"))

    suites = ET.parse(d / "r.xml").getroot()
    suite = suites.find("testsuite")
    assert (suites.get("tests"), suites.get("failures"), suites.get("errors")) == ("5", "1", "1")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert sorted(cases) == ["mac-010", "mac-013", *OFFICE]
    assert cases["mac-010"].find("error").get("message").startswith("timed out")
    failure = cases["mac-013"].find("failure")
    assert "daemon is not running" in failure.get("message")
    assert "\nverify: failed" in failure.text and "agent log:\n" in failure.text  # steps, and the agent's own words
    assert "[qualys-cloud-agent]" in failure.text.split("agent log:\n")[1]
    assert "Heartbeat acknowledged" in cases["mac-020"].find("system-out").text

    again = _fleetctl(env, "report", doc["run_id"], "--format", "junit")
    assert again.returncode == 0 and again.stdout == (d / "r.xml").read_text()
    for fmt in ("json", "html"):
        assert _fleetctl(env, "report", doc["run_id"], "--format", fmt).stdout == (d / f"r.{fmt}").read_text()
    _check_in_browser(d / "r.html", d)


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--user-data-dir=/tmp/fleetctl-chromium", "--enable-logging=stderr", "--v=0",
                           "--virtual-time-budget=3000", *args], capture_output=True, text=True, timeout=120)


def _check_in_browser(page: Path, out: Path) -> None:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run `make install`")
    shot = _chromium(f"--screenshot={out / 'report.png'}", "--window-size=1280,1400", page.as_uri())
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, shot.stderr[-2000:]
    assert "Uncaught" not in shot.stderr and "CONSOLE" not in shot.stderr, shot.stderr[-2000:]
    dom = _chromium("--dump-dom", page.as_uri() + "#status=changed").stdout
    assert 'data-ready="1"' in dom, dom[-2000:]
    assert '<pre id="errors" hidden="">' in dom  # the page's own error box stayed empty
    assert dom.count('<tr data-status="changed">') == 3  # filtered by the link: the rest hidden
    assert '<tr data-status="unreachable" hidden="">' in dom and "3 of 5 Macs" in dom


def test_status_through_the_bastion_and_output_habits(admin_setup):
    d, env = admin_setup
    done = _fleetctl(env, "status", "-i", str(d / "hosts.ini"), "--limit", "office", "--json", "-")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {h["health"] for h in json.loads(done.stdout)["hosts"]} == {"healthy"}  # stdout is only the JSON
    assert "agent status" in done.stderr  # the table went to stderr
    quiet = _fleetctl(env, "-q", "status", "-i", str(d / "hosts.ini"), "--limit", "office")
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stdout  # -q: nothing needs attention
    verbose = _fleetctl(env, "-v", "run", str(ROOT / "playbooks/rollout.yml"), "-i", str(d / "hosts.ini"),
                        "--limit", "office")
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    assert "mac-021: probe" in verbose.stdout and "mac-021: ok" in verbose.stdout  # every step, every Mac
