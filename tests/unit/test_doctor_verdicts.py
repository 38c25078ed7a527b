"""fleetctl doctor's judgement of each assumption, and recorded Macs replayed (tests/fixtures/macs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import fakemac as m
from fleetctl.actions.doctor import Doctor, sections
from fleetctl.assumptions import DIGEST, check
from fleetctl.ssh import Result

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "macs"
# What a healthy Mac prints, as the vendor guide and macOS quote it.
HEALTHY = {
    "sw_vers": (0, "ProductName:\t\tmacOS\nProductVersion:\t\t14.5\nBuildVersion:\t\t23F79\n"),
    "sysctl_version": (0, "14.5\n"), "uname_m": (0, "arm64\n"), "sysctl_memsize": (0, "17179869184\n"),
    "sysctl_arm64": (0, "1\n"),
    "df": (0, "Filesystem     1024-blocks      Used Available Capacity iused     ifree %iused  Mounted on\n"
              "/dev/disk3s1s1   482797652  10853752 441236908     3%  404167 4412369080    0%   /\n"),
    "id": (0, "501\n"), "sudo_n": (0, ""), "command_openssl": (0, "/usr/bin/openssl\n"),
    "command_curl": (0, "/usr/bin/curl\n"), "command_dscl": (0, "/usr/bin/dscl\n"),
    "openssl_dgst": (0, f"{DIGEST} *stdin\n"), "curl_version": (0, "curl 8.7.1 (x86_64-apple-darwin24.0)\n"),
    "dscl": (0, "PrimaryGroupID: 0\n"), "clock": (0, "1764151200\n"),
    "tool_paths": (0, "-rwxr-xr-x 1 root wheel 185 Nov 26 11:37 "
                      "/Applications/QualysCloudAgent.app/Contents/MacOS/qualys-cloud-agent.sh\n"),
    "reach": (0, "pod_reached=direct\n"),
    "pkgutil": (0, "package-id: com.qualys.cloud-agent\nversion: 6.1.0.20\nvolume: /\nlocation: /\n"
                   "install-time: 1764150000\n"),
    "launchctl": (0, '{\n\t"LimitLoadToSessionType" = "System";\n\t"Label" = "com.qualys.cloud-agent";\n'
                     '\t"LastExitStatus" = 0;\n\t"PID" = 412;\n};\n'),
    "hostid": (0, "-rw-r--r-- 1 0 0 37 Nov 26 10:00 /etc/qualys/hostid\n"),
    "log_source": (0, "file /var/log/qualys/qualys-cloud-agent.log\n"),
    "log": (0, "2020-04-27 15:11:36.474 [qualys-cloud-agent][9710]:[Information]:[140048573286144]:OnDemandRequest "
               "Params: ControlID=20200427151136.0, Action=OnDemand, Type=VM, CPUThrottle=0\n"),
    "proxy_file": (1, "cat: /Library/...: No such file or directory\n"),
}


def verdicts(found, **changes) -> dict[str, tuple[str, str]]:
    s = {**HEALTHY, **changes}
    return {f.name: (f.verdict, f.excerpt) for f in check(s, "arm64", 1764151200, True)}


def test_a_healthy_mac_holds_every_assumption():
    found = verdicts(HEALTHY)
    assert {v for v, _ in found.values()} == {"ok"}, found


@pytest.mark.parametrize("changes, name, verdict, excerpt", [
    ({"sw_vers": (0, HEALTHY["sw_vers"][1] + "ProductVersionExtra:\t(a)\n")}, "sw_vers", "differs",
     "ProductVersionExtra:\t(a)"),
    ({"command_openssl": (1, "")}, "openssl", "missing", "command -v openssl: not found"),
    ({"tool_paths": (1, "ls: cannot access ...: No such file or directory\n")}, "configuration tool", "missing",
     "neither /usr/local/qualys/cloud-agent/bin/qualys-cloud-agent.sh nor "
     "/Applications/QualysCloudAgent.app/Contents/MacOS/qualys-cloud-agent.sh"),
    ({"clock": (0, str(1764151200 + 600) + "\n")}, "clock", "differs", "the Mac's clock is 600 s ahead of the controller's"),
    ({"log": (0, "Nov 26 10:00:00 mac qualys-cloud-agent[412]: Information: started\n")}, "agent log format",
     "differs", "Nov 26 10:00:00 mac qualys-cloud-agent[412]: Information: started"),
    ({"sysctl_memsize": (0, str(256 << 20) + "\n")}, "memory >= 512 MB", "differs", "256 MB"),
    ({"launchctl": (0, '{\n\t"Label" = "com.qualys.cloud-agent";\n\t"LastExitStatus" = 256;\n};\n')},
     "launchd job and PID", "differs", '"LastExitStatus" = 256;'),
    ({"sudo_n": (1, "sudo: unexpected answer\n")}, "sudo -n", "differs", "sudo: unexpected answer"),
    ({"reach": (0, "pod_error=via direct: curl: (6) Could not resolve host\npod_reached=\n")},
     "platform reachable over HTTPS", "differs", "via direct: curl: (6) Could not resolve host"),
    ({"proxy_file": (0, "qualys_https_proxy=https://u:p@ss;w@proxy:3128;https://b\n"),
      "proxy_file_mode": (0, "-rw-rw---- 1 0 0 60 Nov 26 10:00 proxy\n")}, "proxy file", "differs",
     "several proxies must be inside double quotes"),
    ({"proxy_file": (0, "qualys_https_proxy=https://proxy:3128\n"),
      "proxy_file_mode": (0, "-rw-r--r-- 1 501 20 40 Nov 26 10:00 proxy\n")}, "proxy file", "differs",
     "owner/mode: -rw-r--r-- 1 501 20 (the guide: root, 660)"),
])
def test_each_difference_names_the_excerpt(changes, name, verdict, excerpt):
    assert verdicts(None, **changes)[name] == (verdict, excerpt)


def test_no_root_means_the_agent_checks_are_missing_not_passed():
    user_only = {k: v for k, v in HEALTHY.items() if k not in ("pkgutil", "launchctl", "hostid", "log", "log_source",
                                                               "proxy_file")}
    found = {f.name: f for f in check(user_only, "arm64", None, True)}
    assert found["agent state"].verdict == "missing" and "needs root" in found["agent state"].excerpt


def test_sections_round_trip():
    text = "@@@ sw_vers\nProductName:\t\tmacOS\n@@@ rc=0\n@@@ pkgutil\nNo receipt for 'x' found at '/'.\n@@@ rc=1\n"
    assert sections(text) == {"sw_vers": (0, "ProductName:\t\tmacOS\n"), "pkgutil": (1, "No receipt for 'x' found at '/'.\n")}


def _replay(tmp_path, folder: Path) -> dict[str, str]:
    meta = json.loads((folder / "meta.json").read_text())
    doctor = Doctor(now=meta["controller_epoch"])
    replies = [("probe", Result(0, (folder / "probe.out").read_text(), "")),
               ("doctor-user", Result(0, (folder / "doctor-user.out").read_text(), ""))]
    if (folder / "doctor-root.out").exists():
        replies.append(("doctor-root", Result(0, (folder / "doctor-root.out").read_text(), "")))
    server = {} if meta["pod_checked"] else {"server_uri": None}
    m.run_action(tmp_path, doctor, replies, **server)
    return {f.name: f.verdict for f in doctor.findings[next(iter(doctor.findings))]}


@pytest.mark.parametrize("folder", sorted(p for p in FIXTURES.iterdir() if p.is_dir()) if FIXTURES.exists() else [],
                         ids=lambda p: p.name)
def test_recorded_macs_replay_to_the_same_verdict(tmp_path, folder):
    """Every assumption the recording judged, judged the same; one added since must hold on it."""
    recorded = json.loads((folder / "meta.json").read_text())["verdicts"]
    replayed = _replay(tmp_path, folder)
    assert {name: replayed.get(name) for name in recorded} == recorded
    assert {v for name, v in replayed.items() if name not in recorded} <= {"ok"}


def test_there_are_recorded_macs():
    assert len([p for p in FIXTURES.iterdir() if p.is_dir()]) >= 2
