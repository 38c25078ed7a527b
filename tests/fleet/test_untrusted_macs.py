"""A broken or compromised Mac (persona hostile-output) next to a healthy one: whatever it writes
reaches the admin shown, never interpreted, bounded, and the other Mac carries on."""
from __future__ import annotations

import json
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import FLEETCTL, Lab

ROOT = Path(__file__).resolve().parents[2]
RAW = ("\x1b", "\x07", "\x9b", "\x00")  # nothing a terminal would act on reaches stdout or stderr
HEALTHY, HOSTILE = "mac-001", "mac-002"


@pytest.fixture(scope="module")
def hostile(make_lab, tmp_path_factory) -> tuple[Lab, dict, Path]:
    lab, env = make_lab(2, "arm64,hostile-output", "hostilelab")
    out = tmp_path_factory.mktemp("hostile-out")
    done = _fleetctl(env, "run", str(ROOT / "playbooks/rollout.yml"), "-i", str(lab.dir / "inventory.yml"), "-v",
                     "--json", str(out / "run.json"), "--junit", str(out / "run.xml"), "--html", str(out / "run.html"))
    (out / "run.out").write_text(done.stdout + done.stderr)
    return lab, env, out


def _fleetctl(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(FLEETCTL), *args], capture_output=True, text=True, errors="backslashreplace",
                          timeout=timeout, env={**env, "COLUMNS": "200"})
    for raw in RAW:
        assert raw not in done.stdout + done.stderr, (args, raw, (done.stdout + done.stderr)[-3000:])
    return done


def test_a_rollout_shows_the_hostile_mac_and_keeps_the_exact_text_in_json(hostile):
    lab, env, out = hostile
    shown = (out / "run.out").read_text()
    doc = json.loads((out / "run.json").read_text())
    by_name = {h["name"]: h for h in doc["hosts"]}
    assert by_name[HEALTHY]["status"] == "changed"
    bad = by_name[HOSTILE]
    text = json.dumps(bad)
    assert "\\u001b" in text  # the JSON keeps what the Mac said, escaped
    if bad["status"] == "failed":  # its [Error] lines fail verify: the reason quotes them, made visible
        assert "\\x1b" in shown
    assert max(len(line) for line in shown.splitlines()) < 20_000  # the 60 MB line never reached the console


def test_junit_and_html_reports_of_the_hostile_mac(hostile):
    lab, env, out = hostile
    root = ET.fromstring((out / "run.xml").read_bytes())  # valid XML: no NUL, no raw control characters
    assert len(root.findall(".//testcase")) == 2
    page = (out / "run.html").read_text()
    assert not any(raw in page for raw in RAW) and "<script>alert(" not in page
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    for fmt in ("junit", "html", "json"):
        again = _fleetctl(env, "report", run_id, "--format", fmt)
        assert again.returncode == 0
    ET.fromstring(_fleetctl(env, "report", run_id, "--format", "junit").stdout.encode())


@pytest.mark.parametrize("verbosity", [[], ["-v"]])
def test_logs_show_the_macs_lines_visibly_and_cut_the_huge_one(hostile, verbosity):
    lab, env, out = hostile
    done = _fleetctl(env, "logs", HOSTILE, "-i", str(lab.dir / "inventory.yml"), "--since", "1h", *verbosity)
    assert done.returncode == 0, done.stderr
    assert "\\x1b]0;" in done.stdout or "\\x1b[2J" in done.stdout  # shown, as Python's repr would
    assert "bytes cut)" in done.stdout  # the 60 MB line, cut on the Mac with how much
    assert max(len(line) for line in done.stdout.splitlines()) < 20_000


def test_status_and_status_playbook_are_clean_and_json_exact(hostile, tmp_path):
    lab, env, out = hostile
    inventory = str(lab.dir / "inventory.yml")
    done = _fleetctl(env, "status", "-i", inventory, "--json", str(tmp_path / "s.json"))
    hosts = {h["name"]: h for h in json.loads((tmp_path / "s.json").read_text())["hosts"]}
    assert hosts[HEALTHY]["health"] == "healthy"
    assert hosts[HOSTILE]["health"] == "unhealthy" and hosts[HOSTILE]["errors"] >= 1
    assert any("\x1b" in p for p in hosts[HOSTILE]["problems"])  # the exact text, in the JSON only
    assert "\\x1b" in done.stdout
    quiet = _fleetctl(env, "status", "-i", inventory, "-q")  # -q after the command
    assert HEALTHY not in quiet.stdout and HOSTILE in quiet.stdout
    played = _fleetctl(env, "run", str(ROOT / "playbooks/status.yml"), "-i", inventory, "-q",
                       "--junit", str(tmp_path / "h.xml"))
    assert played.returncode == 3 and HOSTILE in played.stdout
    ET.fromstring((tmp_path / "h.xml").read_bytes())


def test_doctor_on_the_hostile_mac(hostile, tmp_path):
    lab, env, out = hostile
    done = _fleetctl(env, "doctor", "-i", str(lab.dir / "inventory.yml"), "--json", str(tmp_path / "d.json"))
    assert done.returncode in (0, 3) and json.loads((tmp_path / "d.json").read_text())


def test_an_endless_drip_hits_the_step_timeout_and_the_other_mac_carries_on(hostile, tmp_path):
    lab, env, out = hostile
    book = tmp_path / "scan.yml"
    book.write_text((ROOT / "playbooks/scan.yml").read_text() + "step_timeout: 15s\n")
    done = _fleetctl(env, "run", str(book), "-i", str(lab.dir / "inventory.yml"), "--json", str(tmp_path / "s.json"),
                     timeout=240)
    hosts = {h["name"]: h for h in json.loads((tmp_path / "s.json").read_text())["hosts"]}
    assert hosts[HOSTILE]["status"] == "failed" and "timed out after 15s" in hosts[HOSTILE]["reason"], hosts[HOSTILE]
    assert hosts[HEALTHY]["status"] in ("ok", "changed"), hosts[HEALTHY]
    assert done.returncode == 3
    # the dripping tool died with its session: nothing left running on the Mac (bounded wait)
    for _ in range(20):
        left = lab.mac(HOSTILE).run("ps ax -o pid=,args= | grep '[c]loudagentctl.sh' || true").stdout
        if not left.strip():
            break
        time.sleep(0.5)
    assert not left.strip(), left
