"""The hostile-output persona and the daemon's process name, checked without a lab: the agent's
modules write into a temporary directory or run in a child process (no root, no sockets)."""
from __future__ import annotations

import base64
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from importlib import resources
from pathlib import Path

import pytest

AGENT_DIR = str(resources.files("fleetctl.lab.agent"))
MAC_DIR = str(resources.files("fleetctl.lab.mac"))
sys.path.insert(0, AGENT_DIR)  # as on a Mac: the agent's modules are top-level in Contents/Resources
try:
    agentcommon, agentdaemon, agenttools = (importlib.import_module(name)
                                            for name in ("agentcommon", "agentdaemon", "agenttools"))
finally:
    sys.path.remove(AGENT_DIR)

STAMP = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \[qualys-cloud-agent\]\[\d+\]:\[(\w+)\]:\[\d+\]:")


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def config(tmp_path: Path) -> dict:
    return {**agentcommon.DEFAULTS, "LogFileDir": str(tmp_path) + "/"}


def test_hostile_lines_hold_every_trick_byte_for_byte():
    text = b"".join(m for _, m in agentcommon.HOSTILE_LINES) + agentcommon.HOSTILE_CYCLE_LINE
    for trick in (b"\x1b]0;PWNED-TITLE\x07", b"\x1b[2J\x1b[H", b"\x9b", b"\x08", b"\r", b"\x00", b"\xff\xfe\xc3\x28",
                  b"<script>alert('fleet')</script><img src=x onerror=alert(1)>"):
        assert trick in text, trick
    clip = re.search(rb"\x1b\]52;c;([A-Za-z0-9+/=]+)\x07", text)
    assert clip and base64.b64decode(clip[1]) == b"rm -rf ~"
    with pytest.raises(UnicodeDecodeError):
        text.decode()
    assert {level for level, _ in agentcommon.HOSTILE_LINES} <= set(agentcommon.LEVELS)
    assert sum(level == "Error" for level, _ in agentcommon.HOSTILE_LINES) >= 5  # problem reasons
    assert all(b"\n" not in m for _, m in agentcommon.HOSTILE_LINES)  # one line each
    assert b"\n" not in agentcommon.HOSTILE_CYCLE_LINE and len(agentcommon.HOSTILE_CYCLE_LINE) < 200


def test_start_up_writes_the_lines_raw_and_the_huge_line_once_in_time_order(tmp_path):
    conf = config(tmp_path)
    log = tmp_path / "qualys-cloud-agent.log"
    agentcommon.log("Information", "Service starting, version 6.1.0.20", conf)
    tracemalloc.start()
    agentdaemon.hostile_start(conf)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, f"the huge line was built in memory: peak {peak >> 20} MB"
    agentdaemon.hostile_start(conf)  # the daemon restarts: the short lines again, never a second huge line
    lines = lines_of(log)
    huge = [line for line in lines if agentcommon.HUGE_MARKER in line]
    assert len(huge) == 1 and len(huge[0]) + 1 == agentcommon.HUGE_LINE_BYTES == 60 * 1024 * 1024
    assert STAMP.match(huge[0])[2] == b"Error"
    short = [line for line in lines if agentcommon.HUGE_MARKER not in line]
    expected = [m for _, m in agentcommon.HOSTILE_LINES]
    assert [STAMP.sub(b"", line) for line in short] == [b"Service starting, version 6.1.0.20"] + expected * 2
    assert [STAMP.match(line)[2].decode() for line in short[1:9]] == [lv for lv, _ in agentcommon.HOSTILE_LINES]
    stamps = [STAMP.match(line)[1] for line in lines]
    assert stamps == sorted(stamps)


def test_a_line_logged_while_the_huge_line_is_written_waits_for_it(tmp_path):
    conf = config(tmp_path)
    log = tmp_path / "qualys-cloud-agent.log"
    writer = threading.Thread(target=agentcommon.log_huge_once, args=("Error", conf))
    writer.start()
    deadline = time.monotonic() + 10
    while not (log.exists() and log.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.001)
    agentcommon.log("Information", "Options received: LogLevel", conf)
    writer.join(timeout=30)
    lines = lines_of(log)
    assert [len(line) + 1 for line in lines][:1] == [agentcommon.HUGE_LINE_BYTES]
    assert lines[1].endswith(b"Options received: LogLevel") and len(lines) == 2
    assert STAMP.match(lines[0])[1] <= STAMP.match(lines[1])[1]


def test_each_cycle_adds_one_short_error_line(tmp_path):
    conf = config(tmp_path)
    for _ in range(3):
        agentcommon.log_bytes("Error", agentcommon.HOSTILE_CYCLE_LINE, conf)
    lines = lines_of(tmp_path / "qualys-cloud-agent.log")
    assert [STAMP.sub(b"", line) for line in lines] == [agentcommon.HOSTILE_CYCLE_LINE] * 3
    assert all(STAMP.match(line)[2] == b"Error" for line in lines)


def _tool(tmp_path: Path, call: str, *args: str, **popen) -> subprocess.Popen:
    """CALL in a child started as pkgbuild's wrapper starts the agent's tools (python3 -S -c
    CODE ARGS): argument strings as long, so as much room to write a new argv over."""
    code = f'import sys; sys.path.insert(0, "{AGENT_DIR}"); {call}'
    return subprocess.Popen(["/usr/bin/python3", "-S", "-c", code, *args], **popen)


def test_tools_print_the_hostile_text_on_stdout_and_stderr(tmp_path):
    done = _tool(tmp_path, "import agentcommon; print('Setting permission for user: root'); "
                 "agentcommon.print_hostile()", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = done.communicate(timeout=30)
    assert done.returncode == 0
    assert out == b"Setting permission for user: root\n" + agentcommon.HOSTILE_TEXT
    assert err == agentcommon.HOSTILE_TEXT


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")


def _wait_exit(proc: subprocess.Popen, seconds: float) -> int | None:
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def test_the_scan_drip_dies_when_its_reader_goes(tmp_path):
    proc = _tool(tmp_path, "import agenttools; agenttools.drip(sys.argv[2:])", "ctl", "action=demand", "type=vm",
                 stdout=subprocess.PIPE)
    try:
        head = os.read(proc.stdout.fileno(), len(agentcommon.HOSTILE_TEXT) + 4096)
        started, chunks = time.monotonic(), []
        while len(chunks) < 5 and time.monotonic() - started < 10:
            chunks.append(os.read(proc.stdout.fileno(), 4096))
        took = time.monotonic() - started
        assert head.startswith(agentcommon.HOSTILE_TEXT)
        assert all(c.startswith(b"\x1b[2K\rWaiting for scan engine (") and b"\n" not in c for c in chunks)
        assert 0.5 < took < 3, took  # one chunk every 0.2 s
        assert _cmdline(proc.pid).split(b"\0") == [
            b"/bin/sh", b"/Applications/QualysCloudAgent.app/Contents/MacOS/cloudagentctl.sh", b"action=demand",
            b"type=vm"]
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "cloudagentctl.s\n"
        proc.stdout.close()  # the SSH session went: the next write fails
        assert _wait_exit(proc, 5) == -signal.SIGPIPE
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_scan_drip_dies_on_sighup_even_if_it_was_ignored(tmp_path):
    proc = _tool(tmp_path, "import agenttools; agenttools.drip([])", stdout=subprocess.PIPE,
                 preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        os.read(proc.stdout.fileno(), 65536)
        proc.send_signal(signal.SIGHUP)
        assert _wait_exit(proc, 5) == -signal.SIGHUP
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_scan_drip_stops_by_itself(tmp_path):
    proc = _tool(tmp_path, "import agenttools; agenttools.DRIP_FOR_S = 1; agenttools.drip([])",
                 stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 1 and out.count(b"Waiting for scan engine") == 5
    assert agenttools.DRIP_FOR_S == 30 * 60 and agenttools.DRIP_EVERY_S == 0.2


DAEMON_NAME = ("import agentcommon, time; agentcommon.set_process_name([agentcommon.DAEMON], 'qualys-cloud-agent'); "
               "print('named', flush=True); time.sleep(20)")


@pytest.fixture
def named_daemon(tmp_path):
    """A child named as agentdaemon names itself (started like the wrapper starts it)."""
    proc = _tool(tmp_path, DAEMON_NAME, "daemon", stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"named\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_daemon_shows_as_the_mac_binary(named_daemon):
    pid = named_daemon.pid
    assert _cmdline(pid) == b"/Applications/QualysCloudAgent.app/Contents/MacOS/qualys-cloud-agent"
    assert Path(f"/proc/{pid}/comm").read_text() == "qualys-cloud-ag\n"  # Linux keeps 15 bytes
    if shutil.which("ps"):
        shown = subprocess.run(["ps", "-ww", "-o", "comm=,args=", "-p", str(pid)], capture_output=True, text=True)
        assert shown.stdout.split() == ["qualys-cloud-ag", "/Applications/QualysCloudAgent.app/Contents/MacOS/"
                                        "qualys-cloud-agent"]


def test_macos_pgrep_finds_the_daemon_by_its_full_name(named_daemon):
    pgrep = ("import sys; sys.path.insert(0, sys.argv[1]); import launchd; launchd.pgrep(sys.argv[2:])")
    for args in (["qualys-cloud-agent"], ["-x", "qualys-cloud-agent"], ["-f", "MacOS/qualys-cloud-agent$"]):
        found = subprocess.run(["/usr/bin/python3", "-S", "-c", pgrep, MAC_DIR, *args], capture_output=True,
                               text=True, timeout=30)
        # this machine may run simulated Macs too (a lab sees only its own): ours is among them
        assert found.returncode == 0 and str(named_daemon.pid) in found.stdout.split(), args
    listed = subprocess.run(["/usr/bin/python3", "-S", "-c", pgrep, MAC_DIR, "-l", "qualys-cloud-agent"],
                            capture_output=True, text=True, timeout=30)
    assert f"{named_daemon.pid} qualys-cloud-ag" in listed.stdout.splitlines()
    nothing = subprocess.run(["/usr/bin/python3", "-S", "-c", pgrep, MAC_DIR, "qualys-cloud-agentX"],
                             capture_output=True, text=True, timeout=30)
    assert (nothing.returncode, nothing.stdout) == (1, "")


def test_linux_pgrep_cannot_match_a_name_longer_than_15_bytes(named_daemon):
    """Why the simulated Mac needs macOS's pgrep: procps matches the kernel's 15-byte name only."""
    if not shutil.which("pgrep"):
        pytest.skip("procps is not installed")
    long = subprocess.run(["pgrep", "qualys-cloud-agent"], capture_output=True, text=True, timeout=30)
    assert long.returncode == 1 and str(named_daemon.pid) not in long.stdout.split()
    short = subprocess.run(["pgrep", "-x", "qualys-cloud-ag"], capture_output=True, text=True, timeout=30)
    assert str(named_daemon.pid) in short.stdout.split()
