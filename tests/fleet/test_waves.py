"""Upgrade waves with a canary, thresholds, soak and health gate; journal, resume, lock, crash."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import FLEETCTL, Lab, fleetctl

ROOT = Path(__file__).resolve().parents[2]
HOSTS = 30


@pytest.fixture(scope="module")
def lab(make_lab):
    lab, env = make_lab(HOSTS, "arm64,installer-fails", "waveslab")
    small = {a: lab.dir / f"small-{a}.pkg" for a in ("arm64", "x86_64")}
    for arch, path in small.items():
        fleetctl("lab", "pkg", "--version", "6.1.0.20", "--arch", arch, "--size-mb", "2", "--out", str(path))
    env["EXTRA"] = json.dumps([f"agent_pkg_{a}={p}" for a, p in small.items()])
    return lab, env


def fl(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(FLEETCTL), *args], capture_output=True, text=True, timeout=timeout, env=env)


def extra(env: dict) -> list[str]:
    return [x for pair in json.loads(env["EXTRA"]) for x in ("-e", pair)]


def run_id(output: str) -> str:
    return next(line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("run "))


def journal_states(lab: Lab, rid: str) -> dict[str, str]:
    db = sqlite3.connect(lab.dir / "state" / "journal.db")
    return dict(db.execute("SELECT name, status FROM hosts WHERE run_id = ?", (rid,)).fetchall())


def test_canary_failure_halts_then_resume_finishes(lab, tmp_path):
    lab, env = lab
    playbook = tmp_path / "rollout-waves.yml"
    playbook.write_text(yaml.safe_dump({
        "action": "install", "max_fail": 0,
        "waves": [{"name": "canary", "hosts": 2}, {"hosts": "30%", "soak": 1}, {"hosts": "rest"}],
    }))
    inventory = str(lab.dir / "inventory.yml")
    first = fl(env, "run", str(playbook), "-i", inventory, *extra(env))
    assert first.returncode == 4, first.stdout + first.stderr
    assert "HALTED in wave 'canary'" in first.stdout
    rid = run_id(first.stdout)
    states = journal_states(lab, rid)
    assert states["mac-001"] == "changed" and states["mac-002"] == "failed"
    assert all(states[f"mac-{i:03d}"] == "pending" for i in range(3, HOSTS + 1))
    for i in range(3, HOSTS + 1):  # the rest untouched
        assert lab.mac(f"mac-{i:03d}").count("installer") == 0

    # fix the Mac, then resume: the failed canary is retried and the remaining waves run
    host_json = lab.dir / "hosts/mac-002/root/private/var/fleetlab/host.json"
    facts = json.loads(host_json.read_text())
    facts["traits"] = []
    host_json.write_text(json.dumps(facts))
    resumed = fl(env, "resume", rid)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "soaking 1s" in resumed.stdout
    assert set(journal_states(lab, rid).values()) == {"changed"}
    for i in range(1, HOSTS + 1):
        assert lab.mac(f"mac-{i:03d}").count("installer") == (2 if i == 2 else 1)
    assert "done" in fl(env, "runs").stdout
    again = fl(env, "resume", rid)
    assert again.returncode == 2 and "finished" in again.stderr
    rep = fl(env, "report", rid, "--json", str(tmp_path / "rep.json"))
    assert rep.returncode == 0 and len(json.loads((tmp_path / "rep.json").read_text())["hosts"]) == HOSTS


def test_upgrade_in_canary_and_three_waves_with_soak(lab, tmp_path):
    lab, env = lab
    pkgs = {a: tmp_path / f"{a}.pkg" for a in ("arm64", "x86_64")}
    for arch, path in pkgs.items():
        fleetctl("lab", "pkg", "--version", "6.2.0.5", "--arch", arch, "--size-mb", "2", "--out", str(path))
    playbook = tmp_path / "waves.yml"
    playbook.write_text(yaml.safe_dump({
        "action": "upgrade", "max_fail": 0, "failure_budget": 1,
        "waves": [{"name": "canary", "hosts": 1, "soak": 1}, {"hosts": "20%", "soak": 1},
                  {"hosts": "40%", "soak": 1}, {"hosts": "rest"}],
    }))
    done = fl(env, "run", str(playbook), "-i", str(lab.dir / "inventory.yml"), "--json", str(tmp_path / "w.json"),
              "-e", f"agent_pkg_arm64={pkgs['arm64']}", "-e", f"agent_pkg_x86_64={pkgs['x86_64']}")
    assert done.returncode == 0, done.stdout + done.stderr
    for wave in ("wave 'canary': 1 hosts", "wave 'wave 2': 6 hosts", "wave 'wave 3': 12 hosts", "wave 'wave 4': 11 hosts"):
        assert wave in done.stdout
    assert done.stdout.count("soaking 1s") == 3  # no soak after the last wave
    hosts = json.loads((tmp_path / "w.json").read_text())["hosts"]
    assert [h["version_after"] for h in hosts] == ["6.2.0.5"] * HOSTS
    assert all(h["status"] == "changed" for h in hosts)


def test_sigkill_then_resume_upgrades_exactly_once(lab, tmp_path):
    lab, env = lab
    pkgs = {a: tmp_path / f"{a}.pkg" for a in ("arm64", "x86_64")}
    for arch, path in pkgs.items():
        fleetctl("lab", "pkg", "--version", "6.2.0.7", "--arch", arch, "--size-mb", "8", "--out", str(path))
    args = ["run", str(ROOT / "playbooks/upgrade-wave.yml"), "-i", str(lab.dir / "inventory.yml"), "--forks", "2",
            "-e", f"agent_pkg_arm64={pkgs['arm64']}", "-e", f"agent_pkg_x86_64={pkgs['x86_64']}"]
    before = {i: lab.mac(f"mac-{i:03d}").count("qagent_upgrade.sh") for i in range(1, HOSTS + 1)}
    t0 = time.time()
    proc = subprocess.Popen([str(FLEETCTL), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    db = lab.dir / "state" / "journal.db"
    deadline = time.monotonic() + 120
    rid = None
    while time.monotonic() < deadline:  # kill once a few Macs are done and others are in flight
        time.sleep(0.2)
        try:
            rows = sqlite3.connect(db).execute(
                "SELECT run_id, COUNT(*) FROM hosts WHERE status = 'changed' AND run_id = "
                "(SELECT id FROM runs WHERE started >= ? ORDER BY started DESC LIMIT 1)", (t0,)).fetchone()
        except sqlite3.Error:
            continue
        if rows and rows[1] >= 3:
            rid = rows[0]
            break
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert rid, "the run never got going"
    assert "interrupted" in fl(env, "runs").stdout
    resumed = fl(env, "resume", rid)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for i in range(1, HOSTS + 1):
        mac = lab.mac(f"mac-{i:03d}")
        assert mac.count("qagent_upgrade.sh") == before[i] + 1, mac.name
        assert "version: 6.2.0.7" in mac.ok("pkgutil --pkg-info com.qualys.cloud-agent")


def test_two_runs_on_the_same_macs_are_refused_and_ctrl_c_is_clean(lab, tmp_path):
    lab, env = lab
    playbook = tmp_path / "slow.yml"
    playbook.write_text(yaml.safe_dump({"action": "scan", "scan": {"type": "vm", "timeout": 5}}))
    (lab.dir / "hosts/mac-001/root/private/var/fleetlab/interval-scan").write_text("vm\n")
    args = ["run", str(playbook), "-i", str(lab.dir / "inventory.yml"), "--forks", "1"]
    first = subprocess.Popen([str(FLEETCTL), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    time.sleep(2.5)
    second = fl(env, *args)
    assert second.returncode == 2 and "is working on" in second.stderr
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130, out + err
    assert "Ctrl-C" in out
    rid = run_id(out)
    states = journal_states(lab, rid)
    assert "running" not in states.values() and "pending" in states.values()
    (lab.dir / "hosts/mac-001/root/private/var/fleetlab/interval-scan").unlink()
    resumed = fl(env, "resume", rid)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert set(journal_states(lab, rid).values()) == {"ok"}


def test_a_wave_waits_for_its_window_then_resume_continues(lab, tmp_path):
    lab, env = lab
    playbook = tmp_path / "window.yml"
    book = {"action": "scan", "scan": {"type": "inv", "timeout": 10},
            "waves": [{"hosts": 1}, {"hosts": "rest", "not_before": "2099-01-01 22:00"}]}
    playbook.write_text(yaml.safe_dump(book))
    first = fl(env, "run", str(playbook), "-i", str(lab.dir / "inventory.yml"))
    assert first.returncode == 0 and "may not start before 2099-01-01 22:00" in first.stdout, first.stdout
    rid = run_id(first.stdout)
    assert list(journal_states(lab, rid).values()).count("pending") == HOSTS - 1
    assert "waiting" in fl(env, "resume", rid).stdout  # cron can call resume as often as it likes
    book["waves"][1]["not_before"] = "2000-01-01 00:00"
    playbook.write_text(yaml.safe_dump(book))
    assert fl(env, "resume", rid).returncode == 0
    assert "pending" not in journal_states(lab, rid).values()
