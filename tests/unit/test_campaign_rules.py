"""Laptop fleets: the retry schedule, what counts against a wave, who is retried, and identity."""
from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fleetctl import campaign, identity, playbook, report_files
from fleetctl.campaign import Campaign
from fleetctl.errors import UsageError
from fleetctl.journal import Journal
from fleetctl.results import HostResult
from fleetctl.waves import counts_as_failure

NOW = 1_800_000_000.0


def test_retries_back_off_and_never_pass_the_deadline():
    c = Campaign(until=NOW + 10_000, retry_every=600)
    assert [c.next_retry(n, NOW) - NOW for n in (1, 2, 3, 4, 9)] == [600, 1200, 2400, 2400, 2400]
    assert c.next_retry(3, NOW + 8_000) == NOW + 9_400  # backed off, but still one interval before the deadline
    assert c.next_retry(3, NOW + 9_000) == NOW + 9_600  # never sooner than retry_every
    assert c.next_retry(1, NOW + 9_500) > NOW + 10_000  # too late: the deadline comes first
    assert not c.over(NOW) and c.over(NOW + 10_000)


@pytest.mark.parametrize("result, retried", [
    (HostResult("m", "unreachable", reason="timed out"), True),
    (HostResult("m", "failed", reason="upload: connection lost", transient=True), True),
    (HostResult("m", "failed", reason="cannot reach the Qualys platform", transient=True), True),
    (HostResult("m", "failed", reason="installer: The install failed."), False),
    (HostResult("m", "changed"), False),
    (HostResult("m", "ok"), False),
])
def test_who_a_campaign_tries_again(result, retried):
    assert Campaign.retries(result) is retried


def test_only_a_failed_mac_counts_against_max_fail():
    assert counts_as_failure("failed")
    assert not any(counts_as_failure(s) for s in ("unreachable", "pending", "ok", "changed", "skipped"))


def test_campaign_inputs_are_checked():
    assert campaign.of(None, None, "--until") is None
    with pytest.raises(UsageError, match="needs a deadline"):
        campaign.of(None, 600, "--retry-every")
    with pytest.raises(UsageError, match="already passed"):
        campaign.of(datetime.now() - timedelta(minutes=1), None, "--until")
    c = campaign.of(datetime.now() + timedelta(days=2), None, "--until")
    assert c.retry_every == campaign.DEFAULT_RETRY_EVERY


def test_deadline_text_and_not_seen_reason():
    assert campaign.until_text(NOW + 3 * 86400, NOW) == "in 3 d"
    assert campaign.until_text(NOW + 5 * 3600, NOW) == "in 5 h"
    assert campaign.until_text(NOW + 600, NOW) == "in 10 min"
    assert campaign.until_text(NOW - 1, NOW) == "passed"
    reason = campaign.not_seen_reason(NOW, NOW - 3600, 4, "no route to host")
    assert reason.startswith("not seen before the deadline ") and "last seen " in reason and "4 attempts" in reason
    assert "never seen, 1 attempt)" in campaign.not_seen_reason(NOW, None, 1, None)


@pytest.mark.parametrize("text, message", [
    ("until: tomorrow\n", "until must be a local time"),
    ("until: '2030-01-01 10:00'\nretry_every: 5\n", "retry_every must be 10s to 7d"),
    ("retry_every: 30m\n", "retry_every needs a deadline"),
    ("until: '2030-01-01 10:00'\nnext_wave_after: soon\n", "next_wave_after is 'reached'"),
    ("wake_wait: 2h\n", "wake_wait must be 1s to 15m"),
])
def test_playbook_campaign_keys_are_validated_with_their_line(tmp_path, text, message):
    path = tmp_path / "p.yml"
    path.write_text("action: install\nname: laptops\n" + text)
    with pytest.raises(UsageError, match=message) as e:
        playbook.load(path)
    assert f"{path}:3" in str(e.value) or f"{path}:4" in str(e.value)


def test_playbook_campaign_keys(tmp_path):
    path = tmp_path / "p.yml"
    path.write_text("action: install\nuntil: '2030-01-01 10:00'\nretry_every: 20m\nnext_wave_after: converged\n"
                    "wake_wait: 30s\n")
    book = playbook.load(path)
    assert (book.until, book.retry_every, book.next_wave_after, book.wake_wait) == (
        datetime(2030, 1, 1, 10, 0), 1200, "converged", 30)


def test_journal_knows_who_is_due_and_counts_attempts(tmp_path):
    j = Journal(tmp_path / "journal.db")
    j.start("r1", "install", Path("p.yml"), Path("i.yml"), None, (), 5, [("a", 0), ("b", 0), ("c", 0)],
            until=NOW + 86400, retry_every=60)
    for name in ("a", "b", "c"):
        j.step("r1", name, "connect")
    j.step("r1", "a", "probe")
    j.host_done("r1", "a", "changed", None, {"name": "a"})
    j.host_pending("r1", "b", "timed out", {"name": "b"}, next_retry=time.time() - 1)
    j.host_pending("r1", "c", "no route to host", {"name": "c"}, next_retry=time.time() + 600)
    due, next_due = j.due("r1", time.time())
    assert due == ["b"] and next_due == pytest.approx(time.time() + 600, abs=5)
    seen = j.attempts("r1")
    assert seen["a"].attempts == 1 and seen["a"].converged_at and seen["a"].last_seen
    assert seen["b"].last_seen is None and j.attempt_count("r1", "b") == 1
    j.record_progress("r1")
    assert [p[1:] for p in j.progress("r1")] == [(1, 2, 0)]
    assert j.run("r1").until == NOW + 86400 and j.run("r1").retry_every == 60


def test_an_old_journal_gains_the_new_columns(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "journal.db")
    db.executescript("CREATE TABLE runs (id TEXT PRIMARY KEY, action TEXT, playbook TEXT, inventory TEXT, lim TEXT,"
                     " extra TEXT, forks INTEGER, state TEXT, started REAL, finished REAL, pid INTEGER, note TEXT);"
                     "CREATE TABLE hosts (run_id TEXT, name TEXT, wave INTEGER, status TEXT, reason TEXT, result TEXT,"
                     " updated REAL, PRIMARY KEY (run_id, name));"
                     "INSERT INTO runs VALUES ('old', 'install', 'p', 'i', NULL, '[]', 5, 'done', 1, 2, NULL, NULL);")
    db.close()
    j = Journal(tmp_path / "journal.db")
    assert j.run("old").until is None and j.attempts("old") == {}


def _book(tmp_path) -> identity.Book:
    j = Journal(tmp_path / "journal.db")
    book = identity.Book(j, "/inv.yml")
    book.record("mac-005", identity.Identity("C02AAAAAAAAA", "11111111-2222-3333-4444-555555555555",
                                             "3c:07:54:00:00:05", "SHA256:five", "198.18.0.5"))
    book.record("mac-006", identity.Identity("C02BBBBBBBBB", "66666666-2222-3333-4444-555555555555",
                                             None, "SHA256:six", "198.18.0.6"))
    return book


def test_a_different_mac_at_a_names_address_is_refused_naming_both_serials(tmp_path):
    book = _book(tmp_path)
    seen = identity.Identity("C02BBBBBBBBB", "66666666-2222-3333-4444-555555555555", None, "SHA256:five", "198.18.0.5")
    reason = book.mismatch("mac-005", seen)
    assert "C02BBBBBBBBB" in reason and "C02AAAAAAAAA" in reason and "not acted on" in reason
    assert "mac-006" in reason  # the Mac that answered is known
    assert book.mismatch("mac-005", identity.Identity("C02AAAAAAAAA", None, address="198.18.0.9")) is None
    assert book.mismatch("mac-007", seen) is None  # first contact


def test_a_refused_host_key_that_is_another_macs_names_both(tmp_path):
    reason = _book(tmp_path).changed_key("mac-005", "198.18.0.5", "SHA256:six")
    assert "mac-006" in reason and "C02BBBBBBBBB" in reason and "C02AAAAAAAAA" in reason
    assert _book(tmp_path).changed_key("mac-005", "198.18.0.5", "SHA256:unknown") is None


def test_identities_persist_and_keep_the_first_serial(tmp_path):
    _book(tmp_path)
    again = identity.Book(Journal(tmp_path / "journal.db"), "/inv.yml")
    assert again.get("mac-005").ether == "3c:07:54:00:00:05" and again.get("mac-006").ether is None
    assert identity.Book(Journal(tmp_path / "journal.db"), "/other.yml").get("mac-005") is None


def test_what_the_probe_prints_is_checked_for_shape():
    found = {"serial": ["C02XK1ABJGH5"], "hardware_uuid": ["6f1e2c2a-1b7d-4a7e-9d7c-0a1b2c3d4e5f"],
             "ether": ["3C:07:54:7A:10:0B"]}
    seen = identity.from_probe(found, "SHA256:x", "198.18.0.5")
    assert (seen.serial, seen.hardware_uuid, seen.ether) == (
        "C02XK1ABJGH5", "6F1E2C2A-1B7D-4A7E-9D7C-0A1B2C3D4E5F", "3c:07:54:7a:10:0b")
    hostile = identity.from_probe({"serial": ["\x1b]0;x\x07"], "hardware_uuid": ["nope"], "ether": ["ff"]}, None, "a")
    assert (hostile.serial, hostile.hardware_uuid, hostile.ether) == (None, None, None)


def test_reports_carry_convergence_and_the_html_chart():
    from fleetctl.journal import Run

    run = Run("r1", "install", "p.yml", "i.yml", None, [], 5, "waiting", NOW, None, None, None, NOW + 86400, 1800)
    hosts = [HostResult("a", "changed", attempts=1, converged_at="2027-01-15T08:00:00+00:00"),
             HostResult("b", "pending", reason="no route to host", attempts=3, woken_by="a")]
    progress = [(NOW, 0, 2, 0), (NOW + 600, 1, 1, 0), (NOW + 1200, 1, 1, 0)]
    doc = report_files.document(run, hosts, progress)
    assert doc["deadline"] and [p["converged"] for p in doc["convergence"]] == [0, 1, 1]
    assert doc["summary"]["woken"] == ["b"]
    assert json.loads(report_files.render("json", doc))["hosts"][1]["attempts"] == 3
    page = report_files.render("html", doc)
    assert 'id="chart-convergence"' in page and page.count("<polyline") == 3 and "woken by a" in page
    ET.fromstring(report_files.render("junit", doc).encode())
