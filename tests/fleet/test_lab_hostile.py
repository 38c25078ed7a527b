"""The hostile-output persona and the daemon's name, on simulated Macs over real SSH.

A lab of its own: mac-001 is hostile-output (a broken or compromised Mac), mac-002 a healthy one.
Everything read from the hostile Mac is read as bytes: its output is not UTF-8.
"""
from __future__ import annotations

import base64
import os
import re
import subprocess
import time

import pytest

from conftest import ACTIVATION, APP_BIN, CUSTOMER, LOG, Lab, Mac

HUGE = 60 * 1024 * 1024  # the huge line, date to newline
DAEMON = f"{APP_BIN}/qualys-cloud-agent"
ONDEMAND = "'/Library/Application Support/QualysCloudAgent/Data/ondemand'"
LINE = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \[qualys-cloud-agent\]\[(\d+)\]:\[(\w+)\]:\[\d+\]:(.*)$",
                  re.S)
TRICKS = {  # what each kind of hostile text looks like, byte for byte
    "window title": b"\x1b]0;PWNED-TITLE\x07",
    "clear screen": b"\x1b[2J\x1b[H",
    "clipboard": b"\x1b]52;c;" + base64.b64encode(b"rm -rf ~") + b"\x07",
    "C1 CSI": b"\x9b",
    "overwrite": b"\x08\x08\x08\x08\x08\x08\x08 valid \rAll checks passed",
    "html": b"<script>alert('fleet')</script><img src=x onerror=alert(1)>",
    "NUL": b"\x00",
    "invalid UTF-8": b"\xff\xfe\xc3\x28",
}


@pytest.fixture(scope="module")
def hostile_lab(make_lab) -> Lab:
    lab, _ = make_lab(2, "hostile-output,arm64", "hostile")
    return lab


def raw(mac: Mac, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """COMMAND's output as bytes (stdin given as bytes makes Mac.run binary)."""
    return mac.run(command, stdin=b"", timeout=timeout)


def read_log(mac: Mac) -> bytes:
    done = raw(mac, f"cat {LOG}", timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_log_bytes(mac: Mac, needle: bytes, count: int = 1, timeout: float = 20) -> bytes:
    """The agent log once NEEDLE is in it COUNT times (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        log = read_log(mac)
        if log.count(needle) >= count or time.monotonic() > deadline:
            assert log.count(needle) >= count, f"{mac.name}: {needle!r} x{count} not in the log within {timeout}s"
            return log
        time.sleep(0.5)


def daemon_pid(mac: Mac) -> int:
    listed = mac.ok("sudo launchctl list com.qualys.cloud-agent")
    return int(re.search(r'^\t"PID" = (\d+);$', listed, re.M)[1])


@pytest.fixture(scope="module")
def provisioned(hostile_lab: Lab) -> subprocess.CompletedProcess:
    """The hostile Mac with the agent installed and provisioned: the configuration tool's run."""
    mac = hostile_lab.mac("mac-001")
    mac.install()
    return raw(mac, f"sudo {APP_BIN}/qualys-cloud-agent.sh ActivationId={ACTIVATION} CustomerId={CUSTOMER}")


def test_configuration_tool_prints_hostile_text_and_still_provisions(hostile_lab: Lab, provisioned):
    assert provisioned.returncode == 0
    for stream in (provisioned.stdout, provisioned.stderr):
        for kind, trick in TRICKS.items():
            assert trick in stream, kind
    lines = provisioned.stdout.split(b"\n")
    for line in (b"Setting permission for user: root", b"Setting permission for group: wheel",
                 b"hostid search path: /etc"):
        assert line in lines  # the normal lines, whole
    mac = hostile_lab.mac("mac-001")
    hostid = mac.wait_hostid()  # the agent reached the platform: provisioned as without the persona
    hostile_lab.wait_checkin(hostid)
    assert "ActivationId=" in mac.ok("sudo cat '/Library/Application Support/QualysCloudAgent/Config/"
                                     "qualys-cloud-agent.conf'")


def test_agent_log_has_the_hostile_lines_the_huge_one_once_all_in_time_order(hostile_lab: Lab, provisioned):
    mac = hostile_lab.mac("mac-001")
    log = wait_log_bytes(mac, b"]:Heartbeat acknowledged by platform ")
    lines = log.split(b"\n")
    assert lines.pop() == b""
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), [line[:120] for line, m in zip(lines, parsed) if not m]
    stamps = [m[1] for m in parsed]
    assert stamps == sorted(stamps)
    huge = [line for line in lines if len(line) > 1 << 20]
    assert len(huge) == 1 and len(huge[0]) + 1 == HUGE and LINE.match(huge[0])[3] == b"Error"
    errors = b"\n".join(m[4] for m in parsed if m[3] == b"Error" and len(m[0]) < 1 << 20)
    for kind, trick in TRICKS.items():
        if kind != "clipboard":  # that one is a [Warning]
            assert trick in errors, kind
    assert TRICKS["clipboard"] in log
    start = next(i for i, m in enumerate(parsed) if m[4].startswith(b"Service starting"))
    first_contact = next(i for i, m in enumerate(parsed) if m[4].startswith(b"Heartbeat acknowledged"))
    assert start < lines.index(huge[0]) < first_contact  # after start-up, before the first check-in


def test_each_check_in_adds_one_short_hostile_error_line(hostile_lab: Lab, provisioned):
    mac = hostile_lab.mac("mac-001")
    before = read_log(mac).count(b"]:Heartbeat acknowledged")
    assert raw(mac, f"sudo {APP_BIN}/qualys-cloud-agent.sh LogLevel=3").returncode == 0  # wakes the daemon
    log = wait_log_bytes(mac, b"]:Heartbeat acknowledged", count=before + 1)
    cycles = [line for line in log.split(b"\n") if b"]:[Error]:" in line and b"for module VM: \x1b]0;" in line]
    assert len(cycles) >= before + 1 and all(len(line) < 400 for line in cycles)


def test_a_restarted_daemon_never_writes_a_second_huge_line(hostile_lab: Lab, provisioned):
    mac = hostile_lab.mac("mac-001")
    starts = read_log(mac).count(b"]:Service starting")
    mac.ok(f"sudo {APP_BIN}/qagent_restart.sh")
    log = wait_log_bytes(mac, b"]:Service starting", count=starts + 1)
    log = wait_log_bytes(mac, b"<img src=x onerror=alert(1)>", count=starts + 1)
    assert sum(len(line) > 1 << 20 for line in log.split(b"\n")) == 1


def test_launchctl_list_is_what_fleetctl_parses(hostile_lab: Lab, provisioned):
    mac = hostile_lab.mac("mac-001")
    listed = mac.ok("sudo launchctl list com.qualys.cloud-agent")
    assert re.fullmatch(r'\{\n\t"LimitLoadToSessionType" = "System";\n\t"Label" = "com.qualys.cloud-agent";\n'
                        r'\t"OnDemand" = false;\n\t"LastExitStatus" = 0;\n\t"PID" = \d+;\n'
                        rf'\t"Program" = "{re.escape(DAEMON)}";\n\}};\n', listed), listed


def test_scan_tool_drips_and_dies_with_its_ssh_session(hostile_lab: Lab, provisioned):
    mac = hostile_lab.mac("mac-001")
    session = subprocess.Popen([*mac._ssh(None), f"sudo {APP_BIN}/cloudagentctl.sh action=demand type=vm"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        got, started = b"", time.monotonic()
        while got.count(b"Waiting for scan engine") < 8 and time.monotonic() - started < 20:
            got += os.read(session.stdout.fileno(), 65536)
        assert got.count(b"Waiting for scan engine") >= 8, got[-200:]
        assert session.poll() is None  # still running, stdout still open
        for kind, trick in TRICKS.items():
            assert trick in got, kind
        assert b"ControlId" not in got
        assert mac.ok("pgrep -f /MacOS/cloudagentctl.sh").strip()  # `ps` shows it as the script
    finally:
        session.kill()  # the SSH session goes away
        session.wait(timeout=10)
    deadline = time.monotonic() + 10
    while (left := mac.run("pgrep -f /MacOS/cloudagentctl.sh").stdout) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == "", f"still running after the session closed:\n{left}"
    mac.ok(f"sudo test ! -e {ONDEMAND} || test -z \"$(sudo ls -A {ONDEMAND})\"")  # nothing queued


def test_healthy_mac_shows_the_daemon_by_its_name(hostile_lab: Lab):
    mac = hostile_lab.mac("mac-002")
    mac.install()
    pid = daemon_pid(mac)
    assert re.search(rf"^\s*{pid} {re.escape(DAEMON)}$", mac.ok("ps ax -ww -o pid=,args="), re.M)
    assert mac.ok(f"ps -o comm= -p {pid}") == "qualys-cloud-ag\n"  # Linux keeps 15 bytes of the name
    assert re.search(rf"^\s*{pid} \S+\s+[\d:]+ qualys-cloud-ag$", mac.ok("ps -e"), re.M)
    assert mac.ok("/usr/bin/pgrep -x qualys-cloud-ag").split() == [str(pid)]  # Linux's kernel name, under it
    assert mac.ok("pgrep -f MacOS/qualys-cloud-agent").split() == [str(pid)]


def test_pgrep_finds_the_daemon_by_its_full_name_as_on_a_mac(hostile_lab: Lab):
    mac = hostile_lab.mac("mac-002")
    if mac.run(f"test -x {DAEMON}").returncode:
        mac.install()
    pid = daemon_pid(mac)
    assert mac.ok("pgrep qualys-cloud-agent").split() == [str(pid)]
    assert mac.ok("pgrep -x qualys-cloud-agent").split() == [str(pid)]
    # why the Mac has its own pgrep: Debian's matches the 15-byte kernel name only
    debian = mac.run("/usr/bin/pgrep qualys-cloud-agent")
    assert debian.returncode == 1 and debian.stdout == "" and "longer than 15 characters" in debian.stderr
