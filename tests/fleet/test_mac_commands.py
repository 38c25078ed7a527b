"""Each simulated Mac answers macOS commands as its personas say, over plain SSH."""
import re
import socket
import subprocess
import time

import pytest

from conftest import Lab


@pytest.mark.parametrize("name, version, build", [
    ("mac-001", "15.1", "24B83"), ("mac-002", "12.7.6", "21H1320"),
    ("mac-003", "13.7.1", "22H221"), ("mac-004", "14.5", "23F79"),
])
def test_sw_vers_prints_two_tabs_per_field(lab: Lab, name, version, build):
    mac = lab.mac(name)
    assert mac.ok("sw_vers") == f"ProductName:\t\tmacOS\nProductVersion:\t\t{version}\nBuildVersion:\t\t{build}\n"
    assert mac.ok("sw_vers -productVersion") == f"{version}\n"


@pytest.mark.parametrize("name, arch", [("mac-001", "arm64"), ("mac-002", "x86_64"), ("mac-015", "x86_64")])
def test_uname_m_reports_the_persona_arch(lab: Lab, name, arch):
    mac = lab.mac(name)
    assert mac.ok("uname -m") == f"{arch}\n"
    assert mac.ok("sudo uname -m") == f"{arch}\n"  # sudo's secure_path finds the shim too
    assert mac.ok("uname") == "Darwin\n"


def test_sysctl_memory_and_apple_silicon(lab: Lab):
    assert lab.mac("mac-001").ok("sysctl -n hw.memsize") == "17179869184\n"
    assert lab.mac("mac-001").ok("sysctl -n hw.optional.arm64") == "1\n"
    intel = lab.mac("mac-002").run("sysctl -n hw.optional.arm64")
    assert intel.returncode == 1 and "unknown oid" in intel.stderr


def test_lowmem_reports_less_than_512_mb(lab: Lab):
    assert int(lab.mac("mac-004").ok("sysctl -n hw.memsize")) < 512 << 20
    assert "Memory: 256 MB" in lab.mac("mac-004").ok("system_profiler SPHardwareDataType")


def test_lowdisk_reports_less_than_100_mb_free(lab: Lab):
    lines = lab.mac("mac-003").ok("df -k /").splitlines()
    assert lines[0].split()[:4] == ["Filesystem", "1024-blocks", "Used", "Available"]
    assert int(lines[1].split()[3]) < 100 * 1024
    assert int(lab.mac("mac-001").ok("df -k /").splitlines()[1].split()[3]) > 100 * 1024


def test_system_profiler_software(lab: Lab):
    assert "System Version: macOS 12.7.6 (21H1320)" in lab.mac("mac-002").ok("system_profiler SPSoftwareDataType")


def test_each_mac_has_its_own_private_filesystem(lab: Lab):
    a, b = lab.mac("mac-001"), lab.mac("mac-014")
    a.ok("echo mine > /private/var/tmp/marker")
    assert b.run("cat /private/var/tmp/marker").returncode != 0
    assert a.ok("hostname") == "mac-001\n"
    for path in ["/Applications", "/Library/Application Support", "/Library/LaunchDaemons", "/etc/qualys",
                 "/var/log/qualys", "/private/var/tmp", "/usr/local/qualys", "/Users/admin"]:
        a.ok(f"test -d '{path}'")
    assert a.ok("id") .startswith("uid=501(admin) gid=20(staff)")


def test_pkgutil_and_launchctl_before_install(lab: Lab):
    mac = lab.mac("mac-004")  # no test installs the agent here
    info = mac.run("pkgutil --pkg-info com.qualys.cloud-agent")
    assert info.returncode == 1 and info.stderr == "No receipt for 'com.qualys.cloud-agent' found at '/'.\n"
    printed = mac.run("sudo launchctl print system/com.qualys.cloud-agent")
    assert printed.returncode == 113
    assert mac.ok("launchctl list") == "PID\tStatus\tLabel\n"


def test_sudo_nopasswd_default(lab: Lab):
    assert lab.mac("mac-001").ok("sudo -n id -u") == "0\n"


def test_sudo_password_persona(lab: Lab):
    mac = lab.mac("mac-005")
    denied = mac.run("sudo -n true")
    assert denied.returncode == 1 and "sudo: a password is required" in denied.stderr
    password = (lab.dir / "sudo-password").read_text()
    assert mac.ok("sudo -S -p '' id -u", stdin=password) == "0\n"
    assert mac.run("sudo -S -p '' id -u", stdin="wrong\n").returncode == 1


def test_nosudo_persona(lab: Lab):
    mac = lab.mac("mac-006")
    assert mac.run("sudo -n true").returncode == 1
    refused = mac.run("sudo -S -p '' true", stdin=(lab.dir / "sudo-password").read_text())
    assert refused.returncode == 1 and "not in the sudoers file" in refused.stderr


def test_root_login_persona(lab: Lab):
    assert lab.mac("mac-007").user == "root"
    assert lab.mac("mac-007").ok("id -u") == "0\n"
    assert lab.mac("mac-001").run("id -u", user="root").returncode == 255  # other Macs refuse root


def test_unreachable_persona_does_not_answer(lab: Lab):
    mac = lab.mac("mac-010")
    started = time.monotonic()
    with pytest.raises(OSError):
        socket.create_connection((mac.address, 22), timeout=3).close()
    assert mac.run("true").returncode == 255
    assert time.monotonic() - started < 30


def test_drop_mid_transfer_kills_the_connection_during_uploads(lab: Lab):
    mac = lab.mac("mac-009")
    assert mac.ok("echo small") == "small\n"  # commands and small inputs work
    dropped = mac.run("cat > /private/var/tmp/upload", stdin=b"x" * (4 << 20))
    assert dropped.returncode == 255
    size = int(lab.mac("mac-009").ok("wc -c < /private/var/tmp/upload"))
    assert size < 4 << 20
    scp = subprocess.run(["scp", "-q", "-i", str(lab.key), "-o", f"UserKnownHostsFile={lab.known_hosts}",
                          "-o", "BatchMode=yes", str(lab.pkg("arm64")), f"admin@{mac.address}:/private/var/tmp/a.pkg"],
                         capture_output=True, timeout=60)
    assert scp.returncode != 0


def test_slowlink_is_shaped_with_tbf(lab: Lab):
    slot = int(lab.mac("mac-011").address.split(".")[2]) // 32
    qdisc = subprocess.run(["tc", "qdisc", "show", "dev", f"fl{slot}h011"], capture_output=True, text=True).stdout
    assert re.search(r"tbf .*rate 40Mbit", qdisc), qdisc
    assert lab.mac("mac-011").ok("echo up") == "up\n"


def test_proxy_only_cannot_reach_the_pod_directly(lab: Lab):
    probe = "curl -sS --max-time 5 --cacert /Library/Keychains/fleetlab-root-ca.pem https://qagpublic.qg1.fleetlab.test/"
    assert "Qualys" in lab.mac("mac-017").ok(probe)
    mac = lab.mac("mac-012")
    assert mac.run(probe).returncode != 0
    for user in ("fleetproxy", "ops@lab;2"):  # users and passwords with @ : $ ; (percent-encoded in URLs)
        seen = len(lab.proxy_access())
        proxied = mac.run(f"{probe} --proxy \"$(cat)\"", stdin=lab.proxy_url(user).replace("https://", "http://"))
        assert "Qualys" in proxied.stdout, proxied.stderr
        assert (user, "allowed") in [(a["user"], a["outcome"]) for a in lab.proxy_access()[seen:]]
    wrong = lab.proxy_url("ops@lab;2", lab.proxy_password("fleetproxy")).replace("https://", "http://")
    refused = mac.run(f"{probe} --proxy \"$(cat)\"", stdin=wrong)
    assert refused.returncode != 0 and "407" in refused.stderr  # each account has its own password
    assert "Qualys" not in mac.run(f"{probe} --proxy {lab.proxy_url().replace('https://', 'http://')}").stdout


def test_accounts_admin_and_qagent(lab: Lab):
    mac = lab.mac("mac-001")
    assert mac.ok("id qagent") == "uid=502(qagent) gid=20(staff) groups=20(staff)\n"
    assert mac.ok("dscl . -read /Users/qagent UniqueID") == "UniqueID: 502\n"
    for name in ("mac-001", "mac-005", "mac-006"):  # whatever admin's sudo persona, qagent has none
        denied = lab.mac(name).run("sudo -n -u qagent true && sudo -u qagent sudo -n true")
        assert denied.returncode != 0
    denied = mac.run("sudo -u qagent sudo -n true")
    assert denied.returncode == 1 and "sudo: a password is required" in denied.stderr
    assert mac.ok("sudo -n id -u") == "0\n"


def test_log_show_refuses_what_macos_refuses(lab: Lab):
    mac = lab.mac("mac-004")  # no agent here: the unified log has nothing from it
    before = mac.count("log")
    empty = mac.ok("sudo log show --style ndjson --info --debug --predicate 'process == \"qualys-cloud-agent\"'")
    assert empty == '{"count":0,"finished":1}\n'
    for bad, says in [("log", "usage:"), ("log stream", "usage:"), ("log show --bogus", "unrecognized option"),
                      ("log show --style xml", "invalid style"), ("log show --last soon", "invalid time"),
                      ("log show --predicate 'process ~ 1'", "Cannot use predicate")]:
        done = mac.run(bad)
        assert done.returncode == 64 and says in done.stderr and done.stdout == "", (bad, done)
    assert mac.count("log") == before + 7


def test_shims_count_invocations(lab: Lab):
    mac = lab.mac("mac-017")
    before = mac.count("sw_vers")
    mac.ok("sw_vers; sw_vers -productVersion")
    assert mac.count("sw_vers") == before + 2
