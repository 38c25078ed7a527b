"""The agent's log is read from the tail that reaches back to --since, never in full, and its
lines are cut on the Mac: the rendered script, run by a local /bin/sh on a log file."""
from __future__ import annotations

import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fleetctl import agent, render
from fleetctl.capture import MAC_LINE_MAX

START = datetime(2026, 12, 1, 0, 0, 0)


def _line(i: int) -> str:
    stamp = (START + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp}.000 [qualys-cloud-agent][42]:[Information]:[7]:event {i} " + "p" * 60


@pytest.fixture(scope="module")
def log_file(tmp_path_factory) -> Path:
    """200,000 records (~20 MB), one continuation line and one 3 MB line near the end."""
    path = tmp_path_factory.mktemp("log") / "qualys-cloud-agent.log"
    lines = [_line(i) for i in range(200_000)]
    lines.insert(199_990, "  a continuation of the record before")
    lines.insert(199_995, _line(199_994) + "H" * 3_000_000)
    path.write_text("\n".join(lines) + "\n")
    return path


def _read(log_file: Path, since: datetime, lines: int = 1_000_000) -> list[str]:
    paths = agent.Paths.remembered({"path.LogFileDir": str(log_file.parent)})
    script = render.render("log_since", since=since.strftime("%Y-%m-%d %H:%M:%S"), paths=paths, lines=lines)
    done = subprocess.run(["/bin/sh", "-s"], input=script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_only_records_since_are_returned_with_continuations(log_file):
    got = _read(log_file, START + timedelta(seconds=199_985))
    assert got[0].startswith("2026-12-03 07:33:05.000") and ":event 199985 " in got[0]
    assert "  a continuation of the record before" in got
    assert got[-1] == _line(199_999)
    assert len(got) == 15 + 2  # the records, the continuation and the long line's record


def test_a_huge_line_is_cut_on_the_mac_with_how_much(log_file):
    long = [line for line in _read(log_file, START + timedelta(seconds=199_990)) if "HHHH" in line]
    assert len(long) == 1 and len(long[0].encode()) < MAC_LINE_MAX + 40
    assert long[0].endswith(f" … ({len(_line(199_994)) + 3_000_000 - MAC_LINE_MAX} bytes cut)")


@pytest.mark.parametrize("seconds", [-3600, 0, 1, 150_000])
def test_since_far_back_reads_back_far_enough(log_file, seconds):
    got = _read(log_file, START + timedelta(seconds=seconds))
    first = max(seconds, 0)
    assert got[0] == _line(first)
    assert len(got) == 200_000 - first + 2


def test_since_after_the_last_record_is_empty(log_file):
    assert _read(log_file, START + timedelta(days=30)) == []


def test_the_newest_records_when_there_are_more(log_file):
    got = _read(log_file, START, lines=5)
    assert got[-1] == _line(199_999) and len(got) == 5
