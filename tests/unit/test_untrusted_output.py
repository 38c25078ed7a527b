"""Every byte from a Mac is untrusted: shown, never interpreted by the terminal, bounded in memory."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.table import Table
from rich.text import Text

from fleetctl import report, report_files
from fleetctl.capture import LINE_MAX, STREAM_MAX, Capture
from fleetctl.cli import cli
from fleetctl.journal import Run
from fleetctl.results import HostResult, Step
from fleetctl.terminal import Console, visible

# What a compromised Mac put in its log: retitle, clear screen, clipboard write (OSC 52), a C1
# CSI, a bidi override, NUL, BEL, and rich markup / emoji codes that must stay literal text.
HOSTILE = ("title\x1b]0;PWNED\x07 clear\x1b[2J\x1b[H clip\x1b]52;c;cm0gLXJmIH4=\x07 c1\x9b31m "
           "bidi\u202egnp.exe nul\x00 del\x7f [red]markup[/red] [link=https://evil]x[/link] :smile:")


def test_visible_writes_out_control_characters_and_keeps_tabs_and_newlines():
    shown = visible(HOSTILE + "\tcol\nnext")
    assert "\\x1b]0;PWNED\\x07" in shown and "\\x1b[2J" in shown and "\\x1b]52;c;" in shown
    assert "\\x9b31m" in shown and "\\u202e" in shown and "\\x00" in shown and "\\x7f" in shown
    assert "\tcol\nnext" in shown
    assert not any(ch in shown for ch in "\x1b\x07\x9b\u202e\x00\x7f")
    assert visible("Grüße, 日本, ok") == "Grüße, 日本, ok"


def _console(**kw) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, color_system="truecolor", width=300, **kw), buffer


@pytest.mark.parametrize("renderable", [HOSTILE, Text(HOSTILE)], ids=["str", "Text"])
def test_console_shows_a_macs_words_without_acting_on_them(renderable):
    console, buffer = _console()
    console.print(renderable)
    written = buffer.getvalue()
    for raw in ("\x1b]0;", "\x1b[2J", "\x1b]52", "\x9b", "\u202e", "\x00", "\x07", "\x1b]8;"):
        assert raw not in written, repr(raw)
    assert "\\x1b]0;PWNED" in written  # (rich's Text drops BEL, CR, BS on its own)
    assert "[red]markup[/red]" in written and "[link=https://evil]x[/link]" in written and ":smile:" in written


def test_tables_keep_our_colours_and_show_the_macs_text():
    console, buffer = _console()
    table = Table()
    table.add_column("result")
    table.add_column("reason")
    table.add_row(Text("failed", "red"), HOSTILE)
    console.print(table)
    written = buffer.getvalue()
    assert "\x1b[31mfailed" in written  # fleetctl's own colour still reaches the terminal
    assert "\x1b]0;" not in written and "\\x1b]0;PWNED" in written


def test_the_summary_table_is_clean():
    console, buffer = _console()
    report.summary(console, [HostResult("mac-001", "failed", reason=HOSTILE)])
    assert "\x1b]0;" not in buffer.getvalue() and "\\x1b]52;c;" in buffer.getvalue()


def test_capture_cuts_long_lines_and_says_how_much():
    c = Capture()
    c.add(b"short\n" + b"x" * (LINE_MAX + 500) + b"\nend\n")
    lines = c.text().splitlines()
    assert lines[0] == "short" and lines[2] == "end"
    assert lines[1] == "x" * LINE_MAX + " … (500 bytes cut)"


def test_capture_keeps_at_most_a_streams_worth_whatever_arrives():
    c = Capture()
    line = b"y" * 100 + b"\n"
    for _ in range(40_000):  # 4 MB in SSH-sized pieces
        c.add(line * 10)
    assert c.kept <= STREAM_MAX + 1
    text = c.text()
    assert len(text) < STREAM_MAX + 100
    assert text.endswith(f"… ({40_000 * 10 * 101 - c.kept} bytes cut)")


def test_capture_of_one_endless_line_is_bounded():
    c = Capture()
    for _ in range(1000):  # 64 MB with no newline
        c.add(b"z" * 65536)
    assert c.kept == LINE_MAX
    assert c.text().endswith(f" … ({1000 * 65536 - LINE_MAX} bytes cut)")


def test_capture_shows_invalid_utf8_as_escapes():
    c = Capture()
    c.add(b"bad \xff\xfe\xc3\x28 ok\n")
    assert c.text() == "bad \\xff\\xfe\\xc3( ok\n"


def _doc(reason: str) -> dict:
    run = Run("20261206-000000-abcd", "install", "p.yml", "i.yml", None, [], 5, "done", 0.0, 1.0, None, None)
    host = HostResult("mac-001", "failed", reason=reason, steps=[Step("install", "failed", 1.0, reason)],
                      log=[reason, "2026-12-06 00:00:00.000 [qualys-cloud-agent][1]:[Error]:[2]:" + reason])
    return report_files.document(run, [host, HostResult("mac-002", "unreachable", reason=reason)])


def test_json_keeps_the_exact_text_escaped():
    text = report_files.render("json", _doc(HOSTILE))
    assert "\x1b" not in text and "\x00" not in text  # JSON escapes them (\u001b)
    assert json.loads(text)["hosts"][0]["reason"] == HOSTILE


def test_junit_is_valid_xml_even_for_nul_and_invalid_bytes():
    reason = HOSTILE + " " + b"\xff\xfe".decode(errors="backslashreplace") + " \ufffe"
    xml = report_files.render("junit", _doc(reason))
    root = ET.fromstring(xml.encode())
    failure = root.find(".//failure")
    assert "\\x1b]0;PWNED" in failure.get("message") and "\\x00" in failure.text
    assert root.find(".//error").get("type") == "unreachable"


def test_html_is_escaped_and_shows_control_characters():
    page = report_files.render("html", _doc(HOSTILE + "<script>alert(1)</script>"))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page and "\x00" not in page and "\\x1b]0;PWNED" in page


@pytest.mark.parametrize("args", [["runs", "-q"], ["-q", "runs"], ["runs", "--quiet"]])
def test_quiet_works_before_and_after_the_command(args, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETCTL_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert report.verbosity == -1
    assert CliRunner().invoke(cli, ["runs"]).exit_code == 0 and report.verbosity == 0  # not left over


def test_verbose_counts_wherever_it_is_typed(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETCTL_STATE_DIR", str(tmp_path))
    assert CliRunner().invoke(cli, ["-v", "runs", "-v"]).exit_code == 0 and report.verbosity == 2
    done = subprocess.run([str(Path(sys.executable).with_name("fleetctl")), "runs", "-v", "-q"],
                          capture_output=True, text=True, env={"FLEETCTL_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "contradict" in done.stderr
