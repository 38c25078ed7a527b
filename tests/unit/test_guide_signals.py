"""What fleetctl decides from the vendor guide alone, checked before any Mac is touched (issue 10)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleetctl import agent, certs, playbook
from fleetctl.actions.status import window
from fleetctl.errors import UsageError
from test_rollout_inputs import fleetctl, pkgs, write_inventory  # noqa: F401 (pkgs is a fixture)

ROLLOUT = Path(__file__).resolve().parents[2] / "playbooks/rollout.yml"


def _cert(path: Path, days: int) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"proxy-ca-{days}")])
    now = datetime.now(timezone.utc)
    start, end = (now - timedelta(days=10), now + timedelta(days=days)) if days > 0 else \
        (now - timedelta(days=30), now + timedelta(days=days))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(end).sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_ca_bundles_are_combined_and_expired_or_non_pem_files_refused(tmp_path):
    good1, good2 = _cert(tmp_path / "a.pem", 30), _cert(tmp_path / "b.pem", 60)
    assert certs.bundle([str(good1), str(good2)], "inv.yml:3") == good1.read_text() + good2.read_text()
    with pytest.raises(UsageError, match=r"inv.yml:3: .*expired on"):
        certs.bundle([str(good1), str(_cert(tmp_path / "old.pem", -1))], "inv.yml:3")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(UsageError, match="is not PEM certificates"):
        certs.bundle([str(tmp_path / "junk.pem")], "inv.yml:3")
    with pytest.raises(UsageError, match="No such file"):
        certs.bundle([str(tmp_path / "missing.pem")], "inv.yml:3")


def test_paths_are_remembered_and_follow_the_options():
    default = agent.Paths()
    assert (default.log_file, default.hostid_file) == ("/var/log/qualys/qualys-cloud-agent.log", "/etc/qualys/hostid")
    moved = default.with_options({"LogFileDir": "/private/var/log/qa/", "HostIdSearchDir": "/opt/id", "LogLevel": "4"})
    assert (moved.log_file, moved.hostid_file) == ("/private/var/log/qa/qualys-cloud-agent.log", "/opt/id/qualys/hostid")
    applied = {"LogLevel": "0123abcd", "fingerprint": "ff", **moved.remember()}
    assert agent.Paths.remembered(applied) == moved
    assert agent.Paths.remembered({"LogFileDir": "digest-not-a-path"}) == default


@pytest.mark.parametrize("option", ["HostIdSearchDir", "LogFileDir"])
def test_dot_dot_paths_are_refused(option):
    assert "without '..'" in agent.option_problem(option, "/etc/qualys/../../tmp/x")
    assert agent.option_problem(option, "/private/var/qa..id/") is None


@pytest.mark.parametrize("text, words", [
    ("checkin_pattern: 'a('\n", "checkin_pattern is not a valid regular expression"),
    ("checkin_pattern: 3\n", "checkin_pattern must be a regular expression"),
    ("scan_done_pattern: 'done {control_id} ['\n", "scan_done_pattern is not a valid regular expression"),
    ("remove_hostid: sometimes\n", "remove_hostid must be true or false"),
])
def test_bad_patterns_name_file_and_line(tmp_path, text, words):
    path = tmp_path / "p.yml"
    path.write_text("action: scan\n" + text)
    with pytest.raises(UsageError, match=rf"p.yml:2: {words}"):
        playbook.load(path)


def test_scan_done_pattern_takes_the_control_id(tmp_path):
    path = tmp_path / "p.yml"
    path.write_text("action: scan\nscan_done_pattern: 'uploaded for ControlID={control_id}$'\n")
    assert playbook.load(path).scan_done_pattern == "uploaded for ControlID={control_id}$"


def test_log_level_4_warns_in_plan(tmp_path, pkgs):
    book = tmp_path / "loud.yml"
    book.write_text("action: install\nagent:\n  LogLevel: 4\n")
    done = fleetctl("plan", str(book), "-i", str(write_inventory(tmp_path / "i.yml", pkgs)))
    assert done.returncode == 0 and "LogLevel 4 may write secrets" in (done.stdout + done.stderr).replace("\n", " ")
    quiet = fleetctl("plan", str(ROLLOUT), "-i", str(write_inventory(tmp_path / "i.yml", pkgs)))
    assert "may write secrets" not in quiet.stdout + quiet.stderr


@pytest.mark.parametrize("proxy_urls, words", [
    ([{"url": "https://p.example:3128", "user": "u"}], "no password_secret"),
    ([{"url": "https://p.example:3128", "colour": "red"}], "(not colour)"),
    ([{"user": "u"}], "a mapping with url:"),
    ([{"url": "https://u:p@p.example"}], "contains credentials"),
])
def test_bad_per_proxy_credentials(tmp_path, pkgs, proxy_urls, words):
    done = fleetctl("plan", str(ROLLOUT), "-i", str(write_inventory(tmp_path / "i.yml", pkgs, proxy_urls=proxy_urls)))
    assert done.returncode == 2 and words in done.stderr.replace("\n", " ") and "i.yml:" in done.stderr, done.stderr


def test_plan_shows_each_proxys_own_user(tmp_path, pkgs):
    proxies = [{"url": "https://p1.example:3128", "user": "ops@corp", "password_secret": "p1"},
               {"url": "https://p2.example", "user": "svc", "password_secret": "p2"}]
    done = fleetctl("plan", str(ROLLOUT), "-i", str(write_inventory(tmp_path / "i.yml", pkgs, proxy_urls=proxies)))
    assert done.returncode == 0, done.stderr
    assert 'qualys_https_proxy="https://ops%40corp:SECRET.p1@p1.example:3128;https://svc:SECRET.' in done.stdout


def test_status_window_for_the_unified_log():
    assert window(timedelta(hours=24)) == ["--last", "1440m"]
    assert window(timedelta(seconds=30)) == ["--last", "1m"]
    assert window("2026-11-26 08:00:00") == ["--start", "2026-11-26 08:00:00"]
