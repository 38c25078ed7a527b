"""Laptop fleets over real SSH: campaigns across resumes (and a SIGKILL), the deadline, waves
with Macs that are not there, `--stay` and Ctrl-C, identity after DHCP moved addresses, and
Wake-on-LAN through a neighbour of the site."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import FLEETCTL, Lab, fleetctl
from fleetctl import render

ROOT = Path(__file__).resolve().parents[2]
ROLLOUT = ROOT / "playbooks/rollout.yml"


def _run(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(FLEETCTL), *args], capture_output=True, text=True, timeout=timeout, env=env)


def _until(seconds: float) -> str:
    return (datetime.now() + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def _run_id(done: subprocess.CompletedProcess) -> str:
    return next(w for w in done.stdout.split() if w.count("-") == 2 and w[:8].isdigit()).rstrip(":")


def _report(env: dict, run_id: str) -> dict:
    return json.loads(_run(env, "report", run_id, "--format", "json").stdout)


def _installs(lab: Lab, name: str) -> int:
    """How often `installer` ran on NAME, read from its disk (its address may have moved)."""
    path = lab.dir / "hosts" / name / "root/private/var/fleetlab/counts/installer"
    return int(path.read_text().strip() or 0) if path.exists() else 0


def _state(lab: Lab) -> dict:
    return {h["name"]: h for h in json.loads((lab.dir / "state.json").read_text())["hosts"]}


def test_a_campaign_converges_across_resumes_and_a_sigkill(make_lab):
    lab, env = make_lab(5, "away=50%*4", "awaylab", "--away-period", "10", "--seed", "7")
    inventory = str(lab.dir / "inventory.yml")
    first = _run(env, "run", str(ROLLOUT), "-i", inventory, "--until", _until(600), "--retry-every", "10s")
    assert first.returncode in (0, 3), first.stdout + first.stderr
    run_id, killed = _run_id(first), False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        doc = _report(env, run_id)
        if doc["state"] == "done":
            break
        if not killed and doc["summary"]["by_status"].get("pending"):
            # a resume killed mid-pass: its Macs go back to pending and the next resume goes on
            proc = subprocess.Popen([str(FLEETCTL), "resume", run_id], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(1.5)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            killed = True
            continue
        again = _run(env, "resume", run_id, "-q")
        assert again.returncode in (0, 3), again.stdout + again.stderr
        time.sleep(2)
    doc = _report(env, run_id)
    assert doc["state"] == "done" and doc["summary"]["by_status"] == {"changed": 5}, doc["summary"]
    hosts = {h["name"]: h for h in doc["hosts"]}
    for name in hosts:
        assert _installs(lab, name) == 1, name  # the installer ran exactly once on every Mac
        assert hosts[name]["converged_at"] and hosts[name]["attempts"] >= 1
    assert max(h["attempts"] for h in hosts.values()) > 1  # some laptops were away at first
    assert len(doc["convergence"]) >= 3 and doc["convergence"][-1]["converged"] == 5
    listed = _run(env, "runs").stdout
    assert "5/5 converged, 0 pending, 0 failed" in listed


@pytest.fixture(scope="module")
def gone(make_lab) -> tuple[Lab, dict]:
    """mac-001 answers, mac-002 never does (the lab's `unreachable`)."""
    return make_lab(2, "arm64,unreachable", "gonelab")


def test_stay_keeps_a_campaign_going_and_ctrl_c_leaves_it_resumable(gone):
    lab, env = gone
    proc = subprocess.Popen([str(FLEETCTL), "run", str(ROLLOUT), "-i", str(lab.dir / "inventory.yml"),
                             "--until", _until(600), "--retry-every", "10s", "--stay"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, deadline = "", time.monotonic() + 120
    try:
        while time.monotonic() < deadline and "next retry" not in seen:
            seen += proc.stdout.readline()
        assert "next retry" in seen, seen
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, seen + rest
    run_id = _run_id(subprocess.CompletedProcess([], 0, seen, ""))
    doc = _report(env, run_id)
    assert doc["state"] == "waiting"
    assert {h["name"]: h["status"] for h in doc["hosts"]} == {"mac-001": "changed", "mac-002": "pending"}
    assert "resume" in rest


def test_at_the_deadline_the_leftovers_are_reported_not_seen(gone, tmp_path):
    lab, env = gone
    first = _run(env, "run", str(ROLLOUT), "-i", str(lab.dir / "inventory.yml"), "--until", _until(20),
                 "--retry-every", "10s")
    assert first.returncode == 0 and "waiting" in first.stdout, first.stdout + first.stderr
    time.sleep(21)
    done = _run(env, "resume", _run_id(first), "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"))
    assert done.returncode == 3, done.stdout + done.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert doc["state"] == "done" and hosts["mac-001"]["status"] == "ok"
    assert hosts["mac-002"]["status"] == "unreachable"
    assert hosts["mac-002"]["reason"].startswith("not seen before the deadline") and "never seen" in hosts["mac-002"]["reason"]
    assert 'id="chart-convergence"' in (tmp_path / "r.html").read_text()
    from test_ansible_world import _chromium, CHROMIUM

    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run `make install`")
    dom = _chromium("--dump-dom", (tmp_path / "r.html").as_uri()).stdout
    assert 'data-ready="1"' in dom and '<pre id="errors" hidden="">' in dom
    assert dom.count("<polyline") == 3


def test_waves_go_on_without_the_macs_that_are_not_there(make_lab, tmp_path):
    lab, env = make_lab(4, "asleep-wifi,arm64*3", "wavelab")
    book = tmp_path / "waves.yml"
    book.write_text("action: status\nmax_fail: 0\nwaves:\n  - {name: canary, hosts: 1}\n  - {hosts: rest}\n")
    inventory = str(lab.dir / "inventory.yml")
    one_pass = _run(env, "run", str(book), "-i", inventory, "--json", str(tmp_path / "a.json"))
    assert one_pass.returncode == 3 and "HALTED" not in one_pass.stdout, one_pass.stdout  # unreachable, not halted
    statuses = {h["name"]: h["status"] for h in json.loads((tmp_path / "a.json").read_text())["hosts"]}
    assert statuses == {"mac-001": "unreachable", "mac-002": "ok", "mac-003": "ok", "mac-004": "ok"}
    campaign = _run(env, "run", str(book), "-i", inventory, "--until", _until(600))
    assert campaign.returncode == 0, campaign.stdout
    doc = _report(env, _run_id(campaign))
    assert {h["name"]: h["status"] for h in doc["hosts"]}["mac-001"] == "pending" and doc["state"] == "waiting"
    book.write_text(book.read_text() + "next_wave_after: converged\n")
    strict = _run(env, "run", str(book), "-i", inventory, "--until", _until(600))
    assert "next wave waits" in strict.stdout, strict.stdout
    hosts = {h["name"]: h for h in _report(env, _run_id(strict))["hosts"]}
    assert hosts["mac-002"]["attempts"] == 0 and hosts["mac-002"]["status"] == "pending"


def _hosts_file(path: Path, lab: Lab, names_at: dict[str, str]) -> None:
    path.write_text("127.0.0.1 localhost\n" + "".join(f"{address} {name}.laptops.test\n"
                                                       for name, address in names_at.items()))


def _in_private_hosts(hosts_file: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """fleetctl with its own /etc/hosts (a mount namespace): names that resolve as DNS would."""
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts_file), str(FLEETCTL), *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_a_different_mac_at_an_address_is_never_acted_on(make_lab, tmp_path):
    lab, env = make_lab(3, "renumbered*2,arm64", "dhcplab")
    inventory = str(lab.dir / "inventory.yml")
    seen = _run(env, "run", str(ROOT / "playbooks/status.yml"), "-i", inventory)  # first contact: identities
    assert seen.returncode == 0, seen.stdout + seen.stderr
    state = _state(lab)
    recorded = _run(env, "identities", "-i", inventory).stdout
    for name in ("mac-001", "mac-002", "mac-003"):
        assert state[name]["serial"] in recorded
    before = {n: h["address"] for n, h in state.items()}
    fleetctl("lab", "renumber", "--dir", str(lab.dir))
    after = {n: h["address"] for n, h in _state(lab).items()}
    assert after["mac-001"] == before["mac-002"] and after["mac-002"] == before["mac-001"]

    done = _run(env, "run", str(ROLLOUT), "-i", inventory, "--until", _until(600))
    hosts = {h["name"]: h for h in _report(env, _run_id(done))["hosts"]}
    for name, other in (("mac-001", "mac-002"), ("mac-002", "mac-001")):
        assert hosts[name]["status"] == "pending", hosts[name]
        reason = hosts[name]["reason"]
        assert "a different Mac answered" in reason and state[name]["serial"] in reason, reason
        assert state[other]["serial"] in reason, reason
        assert _installs(lab, name) == 0  # never acted on by mistake
    assert hosts["mac-003"]["status"] == "changed" and _installs(lab, "mac-003") == 1

    # An admin who trusted new host keys blindly, with names that still point to the old addresses:
    # SSH lets it in, the serial does not.
    names = tmp_path / "names.yml"
    names.write_text(f"all:\n  vars:\n    ansible_ssh_private_key_file: {lab.key}\n"
                     f"    fleetctl_known_hosts: {tmp_path / 'known_hosts'}\n"
                     + "".join(f"    {k}: {v!r}\n" for k, v in lab.inventory["all"]["vars"].items()
                               if k.startswith("agent_pkg") or k in ("server_uri", "fleetctl_pod_ca"))
                     + "  hosts:\n" + "".join(f"    {n}:\n      ansible_host: {n}.laptops.test\n      ansible_user: admin\n"
                                              for n in ("mac-001", "mac-002")))
    env_names = {**env, "FLEETCTL_STATE_DIR": str(tmp_path / "state")}
    _hosts_file(tmp_path / "hosts-old", lab, before)
    (tmp_path / "known_hosts").write_text("")
    first = _in_private_hosts(tmp_path / "hosts-old", env_names, "run", str(ROOT / "playbooks/status.yml"),
                              "-i", str(names), "--accept-new-hostkeys")
    assert first.returncode == 0, first.stdout + first.stderr  # recorded: the name mac-001 is mac-002's Mac
    _hosts_file(tmp_path / "hosts-new", lab, after)  # DNS caught up: the names follow the Macs
    (tmp_path / "known_hosts").write_text("")
    moved = _in_private_hosts(tmp_path / "hosts-new", env_names, "run", str(ROLLOUT), "-i", str(names),
                              "--accept-new-hostkeys", "--json", str(tmp_path / "n.json"))
    by_name = {h["name"]: h for h in json.loads((tmp_path / "n.json").read_text())["hosts"]}
    for name, other in (("mac-001", "mac-002"), ("mac-002", "mac-001")):
        # what answered under the name now is the Mac the name was NOT first seen as: refused
        assert by_name[name]["status"] == "unreachable", by_name[name]
        assert state[name]["serial"] in by_name[name]["reason"] and state[other]["serial"] in by_name[name]["reason"]
        assert _installs(lab, name) == 0
    (tmp_path / "known_hosts").write_text("")
    fresh = {**env, "FLEETCTL_STATE_DIR": str(tmp_path / "state2")}
    good = _in_private_hosts(tmp_path / "hosts-new", fresh, "run", str(ROLLOUT), "-i", str(names),
                             "--accept-new-hostkeys", "--json", str(tmp_path / "g.json"))
    assert good.returncode == 0, good.stdout + good.stderr  # names that resolve to the right Macs just work
    assert all(_installs(lab, n) == 1 for n in ("mac-001", "mac-002"))
    assert moved.returncode == 3


def test_an_asleep_mac_is_woken_by_a_neighbour_of_its_site(make_lab, tmp_path):
    lab, env = make_lab(0, "arm64,asleep,asleep-wifi", "wakelab", "--sites", "office=3@1gbit")
    inventory = str(lab.dir / "inventory.yml")
    state = _state(lab)
    # first contact needs the Mac awake: its neighbour wakes it by hand, with fleetctl's own script
    script = render.render("wake", addresses=[state["mac-002"]["ethernet"]])
    lab.mac("mac-001").ok("/bin/sh -s", stdin=script)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and lab.mac("mac-002").run("true", timeout=5).returncode != 0:
        time.sleep(1)
    book = tmp_path / "rollout.yml"
    book.write_text(ROLLOUT.read_text() + "wake_wait: 8s\n")
    seen = _run(env, "run", str(ROOT / "playbooks/status.yml"), "-i", inventory)  # records mac-002's Ethernet address
    assert "mac-002" in _run(env, "identities", "-i", inventory).stdout
    assert state["mac-002"]["ethernet"] in _run(env, "identities", "-i", inventory).stdout, seen.stdout
    fleetctl("lab", "sleep", "mac-002", "--dir", str(lab.dir))

    no_wake = _run(env, "run", str(book), "-i", inventory, "--until", _until(600), "--retry-every", "10s", "--no-wake")
    run_id = _run_id(no_wake)
    hosts = {h["name"]: h for h in _report(env, run_id)["hosts"]}
    assert hosts["mac-002"]["status"] == "pending" and not hosts["mac-002"]["woken_by"]
    time.sleep(10)
    woke = _run(env, "resume", run_id)
    assert "mac-001 sent Wake-on-LAN to mac-002" in woke.stdout, woke.stdout + woke.stderr
    doc = _report(env, run_id)
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert hosts["mac-002"]["status"] == "changed" and hosts["mac-002"]["woken_by"] == "mac-001"
    assert doc["summary"]["woken"] == ["mac-002"] and _installs(lab, "mac-002") == 1
    assert hosts["mac-003"]["status"] == "pending"  # Wi-Fi: never woken, tried again later
