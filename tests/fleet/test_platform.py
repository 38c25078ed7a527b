"""The platform's side over real SSH and the lab pod's Qualys API: `fleetctl platform` and its
flags, and an uninstall sweep with platform_uninstall that a throttling platform leaves due and a
resume finishes, never repeating an uninstall."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import FLEETCTL, Lab

ROOT = Path(__file__).resolve().parents[2]


def _run(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(FLEETCTL), *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def fleet(make_lab) -> tuple[Lab, dict]:
    """mac-001 and mac-004 ordinary, mac-002 reporting to another subscription, mac-003 leaving a
    duplicate record; all rolled out by fleetctl."""
    lab, env = make_lab(4, "arm64,other-subscription,duplicate-record,x86_64", "platformside")
    done = _run(env, "run", str(ROOT / "playbooks/rollout.yml"), "-i", str(lab.dir / "inventory.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("mac-001", "mac-002", "mac-003", "mac-004"):
        assert lab.mac(name).ok("sudo cat /etc/qualys/hostid").strip()
    return lab, env


def _views(done: subprocess.CompletedProcess) -> dict[str, dict]:
    return {h["name"]: h for h in json.loads(done.stdout)["hosts"]}


def test_platform_flags_what_the_admin_must_act_on(fleet, tmp_path):
    lab, env = fleet
    inventory = str(lab.dir / "inventory.yml")
    scan = tmp_path / "scan.yml"
    scan.write_text("action: scan\nscan:\n  type: sca\n")
    asked = datetime.now(timezone.utc)
    done = _run(env, "platform", "-i", inventory, "--json", "-", "--scan-playbook", str(scan), "--stale-after", "1")
    assert done.returncode == 3, done.stdout + done.stderr
    views = _views(done)
    kinds = {name: {f["kind"] for f in v["flags"]} for name, v in views.items()}
    ok = views["mac-001"]
    assert ok["known"] and ok["version"] == "6.1.0.20" and ok["modules"] == ["AGENT_VM", "AGENT_PC"]
    assert ok["agent_uuid"] == lab.mac("mac-001").ok("sudo cat /etc/qualys/hostid").strip()
    checked = datetime.strptime(ok["last_checkin"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    if (asked - checked).total_seconds() > 1:  # its last check-in is over 1s old: stale by --stale-after 1
        assert "check-in too old" in kinds["mac-001"]
    assert "module not activated" in kinds["mac-001"] and "module not activated" in kinds["mac-004"]
    assert kinds["mac-002"] == {"unknown to the platform"} and views["mac-002"]["known"] is False
    assert "duplicate record" in kinds["mac-003"] and len(views["mac-003"]["asset_ids"]) == 2
    assert "duplicate record" not in kinds["mac-001"] | kinds["mac-004"]
    # the summary groups Macs that share flags, on stderr when the JSON goes to stdout
    assert "1 Mac: unknown to the platform (mac-002)" in done.stderr

    quiet = _run(env, "platform", "-i", inventory, "--limit", "mac-001,mac-004", "--stale-after", "1h")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "2 Macs: known to the platform, nothing to act on (mac-001, mac-004)" in quiet.stdout


def test_platform_refused_credentials_are_its_words_never_the_password(fleet):
    lab, env = fleet
    user, password = lab.api_credentials()
    shown = _run(env, "platform", "-i", str(lab.dir / "inventory.yml"), "--limit", "mac-001", "-v")
    assert shown.returncode == 0 and "search/am/hostasset: HTTP 200" in shown.stdout + shown.stderr
    assert password not in shown.stdout + shown.stderr
    wrong = _run({**env, "FLEETCTL_QUALYS_API_PASSWORD": "not-the-password"}, "platform", "-i",
                 str(lab.dir / "inventory.yml"), "--limit", "mac-001", "--json", "-")
    assert wrong.returncode == 3
    (flag,) = _views(wrong)["mac-001"]["flags"]
    assert flag["kind"] == "platform not asked" and flag["detail"].startswith("INVALID_CREDENTIALS")
    assert "not-the-password" not in wrong.stdout + wrong.stderr


def _uninstalled(lab: Lab) -> list[str]:
    path = lab.dir / "pod" / "uninstalled.jsonl"
    return [str(json.loads(line)["id"]) for line in path.read_text().splitlines()] if path.exists() else []


def _platform_rows(journal: Path) -> int:
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM platform").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_uninstall_sweep_frees_the_platform_side_once_even_across_a_resume(fleet, tmp_path):
    lab, env = fleet
    inventory = str(lab.dir / "inventory.yml")
    book = tmp_path / "retire.yml"
    book.write_text("action: uninstall\nplatform_uninstall: true\nremove_hostid: true\nverify_timeout: 20\n")
    plan = _run(env, "plan", str(book), "-i", inventory, "--limit", "mac-001")
    assert "/qps/rest/2.0/uninstall/am/asset/<asset id>" in plan.stdout and "agent_uuid" in plan.stdout
    before = {a["agent_uuid"]: a for a in _views(_run(env, "platform", "-i", inventory, "--json", "-")).values()}
    asset = {v["name"]: v["asset_ids"] for v in before.values()}
    # The API password changes while the Macs are uninstalled (after the check fleetctl makes before
    # any Mac): their agents stay due on the platform, and the run is not done.
    proc = subprocess.Popen([str(FLEETCTL), "run", str(book), "-i", inventory, "--limit", "mac-001,mac-002,mac-004",
                             "--json", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    old = {}
    try:
        journal = Path(env["FLEETCTL_STATE_DIR"]) / "journal.db"
        deadline = time.monotonic() + 120
        while not old and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            if journal.exists() and _platform_rows(journal):  # an agent UUID is journaled: the check is past
                old = lab.set_api(password="rotated-by-an-admin")
        out, err = proc.communicate(timeout=240)
    finally:
        if old:
            lab.set_api(**old)
    assert old, "no agent UUID was journaled"
    assert proc.returncode == 3, out + err
    first = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    doc = json.loads(first.stdout)
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert doc["state"] == "waiting" and {h["status"] for h in hosts.values()} == {"changed"}
    assert all(hosts[n]["platform"].startswith("due: not yet: ") for n in hosts), hosts
    assert "INVALID_CREDENTIALS" in hosts["mac-001"]["platform"]
    assert _uninstalled(lab) == []
    for name in hosts:  # the hostid went with the agent: only the journal still knows each UUID
        assert lab.mac(name).run("sudo test -e /etc/qualys/hostid").returncode == 1
    run_id = doc["run_id"]

    again = _run(env, "resume", run_id, "--json", "-")
    assert again.returncode == 0, again.stdout + again.stderr
    hosts = {h["name"]: h for h in json.loads(again.stdout)["hosts"]}
    assert hosts["mac-001"]["platform"] == f"done: uninstalled on the platform: asset {asset['mac-001'][0]} (licence freed)"
    assert hosts["mac-004"]["platform"].startswith("done: uninstalled on the platform")
    assert hosts["mac-002"]["platform"].startswith("done: the platform lists no agent")  # another subscription
    assert sorted(_uninstalled(lab)) == sorted(asset["mac-001"] + asset["mac-004"])
    assert "resuming" not in again.stdout  # no Mac was left: the resume touched none

    finished = _run(env, "resume", run_id)
    assert finished.returncode == 2 and "is finished" in finished.stderr
    assert sorted(_uninstalled(lab)) == sorted(asset["mac-001"] + asset["mac-004"])  # never repeated
