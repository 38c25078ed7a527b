"""Each action's decisions, over a fake connection that replays what a Mac's scripts print."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import fakemac as m
from fleetctl.lab import pkgbuild
from fleetctl.ssh import Result

ROLLOUT = "action: install\nverify_timeout: 5\n"


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pkgs")
    return {a: pkgbuild.build(d / f"{a}.pkg", "6.1.0.20", a, size_mb=1) for a in ("arm64", "x86_64")}


def test_fresh_mac_is_installed_configured_and_verified(tmp_path, pkgs):
    result, conn = m.run(tmp_path, pkgs, ROLLOUT, [
        ("probe", m.probe(version=None, daemon_pid="", hostid="0")), ("preflight", m.preflight()),
        ("upload", m.OK), ("install", Result(0, "installer: The install was successful.\n", "")),
        ("configure", m.OK), ("verify", m.verify(log=[m.LOG.format(s=1, level="Information", message="started")]))])
    assert (result.status, result.version_after, result.uploaded_bytes) == ("changed", "6.1.0.20", pkgs["arm64"].stat().st_size)
    configure = conn.scripts[4][0]
    assert "ActivationId=" + m.ACTIVATION in configure and "path.HostIdSearchDir=/etc/" in configure


def test_install_configure_and_verify_share_one_privileged_channel(tmp_path, pkgs):
    """One sudo for the three, yet each is its own step with its own output; a failing installer
    ends the channel: configure and verify never start, nothing after it is reported as done."""
    result, conn = m.run(tmp_path, pkgs, ROLLOUT, [
        ("probe", m.probe(version=None, daemon_pid="", hostid="0")), ("preflight", m.preflight()),
        ("upload", m.OK), ("install", Result(0, "installer: The install was successful.\n", "")),
        ("configure", Result(0, "Setting permission for user: root\n", "")), ("verify", m.verify())])
    assert conn.channels == 4 and [mode for _, mode, _ in conn.scripts[3:]] == ["sudo -n /bin/sh -s"] * 3
    steps = {s.name: s for s in result.steps}
    assert steps["install"].detail == "installer: The install was successful."
    assert steps["configure"].detail == "Setting permission for user: root"
    assert steps["verify"].detail.startswith("version=6.1.0.20")
    failed, conn = m.run(tmp_path, pkgs, ROLLOUT, [
        ("probe", m.probe(version=None, daemon_pid="", hostid="0")), ("preflight", m.preflight()),
        ("upload", m.OK), ("install", Result(1, "installer: The install failed. (disk full)\n", ""))])
    assert failed.status == "failed" and "disk full" in failed.reason
    assert [(s.name, s.status) for s in failed.steps][-1] == ("install", "failed") and conn.channels == 4
    tool, _ = m.run(tmp_path, pkgs, "action: configure\nagent:\n  LogLevel: 4\n", [
        ("probe", m.probe()), ("preflight", m.preflight()),
        ("configure", Result(2, "", "ERROR: LogLevel must be 0..5\n"))])
    assert (tool.status, tool.reason) == ("failed", "configure: ERROR: LogLevel must be 0..5")


def test_a_mac_without_the_agent_is_preflighted_by_its_probe(tmp_path, pkgs):
    """No receipt: the Mac will be installed, so the probe carries preflight (3 channels in all);
    its checks still stop the Mac before any change."""
    fresh = m.probe(version=None, daemon_pid="", hostid="0")
    carried = Result(0, fresh.out + "preflight=with-probe\n" + m.preflight().out, "")
    result, conn = m.run(tmp_path, pkgs, ROLLOUT, [("probe", carried), ("upload", m.OK), ("install", m.OK),
                                                   ("configure", m.OK), ("verify", m.verify())])
    assert result.status == "changed" and conn.channels == 3
    assert [s.name for s in result.steps] == ["probe", "preflight", "upload", "install", "configure", "verify"]
    probe = conn.scripts[0][0]
    assert 'if [ -z "$agent_version" ]; then' in probe and "curl -sS -o /dev/null" in probe
    low = Result(0, fresh.out + "preflight=with-probe\n" + m.preflight(disk_free_kb=80 * 1024).out, "")
    failed, conn = m.run(tmp_path, pkgs, ROLLOUT, [("probe", low)])
    assert failed.status == "failed" and "free disk 80 MB" in failed.reason and conn.channels == 1
    assert (failed.steps[-1].name, failed.steps[-1].status) == ("preflight", "failed")
    configure, conn = m.run(tmp_path, pkgs, "action: configure\n", [("probe", m.probe())])
    assert "curl" not in conn.scripts[0][0]  # only install's probe carries a preflight


def test_converged_mac_is_left_alone_in_one_round_trip(tmp_path, pkgs):
    """What configure wrote on the Mac is what the next probe reads back."""
    _, conn = m.run(tmp_path, pkgs, ROLLOUT, [
        ("probe", m.probe(version=None, daemon_pid="", hostid="0")), ("preflight", m.preflight()), ("upload", m.OK),
        ("install", m.OK), ("configure", m.OK), ("verify", m.verify())])
    applied = conn.scripts[4][0].split("> /private/var/db/fleetctl/qualys-agent.applied")[0]
    lines = [l for l in applied.split("printf '%s' '", )[-1].split("'")[0].splitlines() if "=" in l]
    result, _ = m.run(tmp_path, pkgs, ROLLOUT, [("probe", m.probe(applied=lines))])
    assert (result.status, result.reason) == ("ok", None)


def test_newer_agent_is_kept(tmp_path, pkgs):
    result, _ = m.run(tmp_path, pkgs, ROLLOUT, [
        ("probe", m.probe(version="6.2.0.1", hostid="0")), ("preflight", m.preflight()), ("configure", m.OK),
        ("verify", m.verify(version="6.2.0.1"))])
    assert (result.status, result.reason) == ("changed", "keeps newer 6.2.0.1")


def test_no_package_for_the_arch(tmp_path, pkgs):
    result, _ = m.run(tmp_path, {**pkgs}, ROLLOUT, [("probe", m.probe(arch="x86_64"))], agent_pkg_x86_64="")
    assert (result.status, result.reason) == ("failed", "no package for x86_64: set agent_pkg_x86_64")
    upgrade, _ = m.run(tmp_path, pkgs, "action: upgrade\n", [("probe", m.probe(arch="x86_64"))], agent_pkg_x86_64="")
    assert (upgrade.status, upgrade.reason) == ("failed", "no package for x86_64: set agent_pkg_x86_64")


def test_sudo_with_a_password_reads_state_as_root(tmp_path, pkgs):
    result, conn = m.run(tmp_path, pkgs, ROLLOUT, [
        ("probe", m.probe(privilege="password")), ("state", m.facts(daemon_pid="412", hostid="0")),
        ("preflight", m.preflight()), ("configure", m.OK), ("verify", m.verify())],
        secrets={"mac_sudo": "s3cret-sudo"}, fleetctl_become_secret="mac_sudo")
    assert result.status == "changed"
    assert conn.scripts[1][1].startswith("sudo -S") and conn.scripts[1][2] == "s3cret-sudo"
    assert "s3cret-sudo" not in str(result)
    missing, _ = m.run(tmp_path, pkgs, ROLLOUT, [("probe", m.probe(privilege="password"))])
    assert missing.status == "failed" and "fleetctl_become_secret" in missing.reason


@pytest.mark.parametrize("probe, preflight, words", [
    ({"memsize": 256 << 20}, {}, "memory 256 MB is below"),
    ({}, {"disk_free_kb": 80 * 1024}, "free disk 80 MB is below"),
    ({}, {"pod_reached": "", "pod_error": "via direct: timed out"}, "cannot reach the Qualys platform"),
    ({}, {"group_exists": 0}, "group 'wheel' does not exist"),
])
def test_every_failed_check_stops_before_a_change(tmp_path, pkgs, probe, preflight, words):
    result, _ = m.run(tmp_path, pkgs, ROLLOUT, [("probe", m.probe(version=None, hostid="0", **probe)),
                                                ("preflight", m.preflight(**preflight))])
    assert result.status == "failed" and words in result.reason, result.reason
    assert result.steps[-1].status == "failed"


@pytest.mark.parametrize("agent, preflight, words", [
    ("User: qagent\n  UseSudo: 1", {"user_exists": 1, "sudo_command_found": 1, "run_as_nopasswd": 0},
     "'qagent' may not run sudo without a password"),
    ("UseSudo: 1\n  SudoCommand: pbrun", {"sudo_command_found": 0}, "SudoCommand 'pbrun' is not on this Mac"),
    ("User: nosuch", {"user_exists": 0}, "user 'nosuch' does not exist"),
])
def test_run_as_checks(tmp_path, pkgs, agent, preflight, words):
    result, conn = m.run(tmp_path, pkgs, f"action: configure\nagent:\n  {agent}\n", [
        ("probe", m.probe()), ("preflight", m.preflight(**preflight))])
    assert result.status == "failed" and words in result.reason, result.reason
    if "UseSudo" in agent:
        assert conn.scripts[1][1].startswith("sudo -n")  # sudo -l -U needs root


def test_an_error_line_after_provisioning_fails_verify_words_do_not(tmp_path, pkgs):
    chatty = [m.LOG.format(s=1, level="Information", message="ERROR: 0 failed error reports (Fatal: none)")]
    ok, _ = m.run(tmp_path, pkgs, "action: configure\nagent:\n  LogLevel: 4\n", [
        ("probe", m.probe()), ("preflight", m.preflight()), ("configure", m.OK), ("verify", m.verify(log=chatty))])
    assert ok.status == "changed" and ok.log == chatty
    error = m.LOG.format(s=2, level="Error", message="Data collection failed for module INV")
    bad, _ = m.run(tmp_path, pkgs, "action: configure\nagent:\n  LogLevel: 4\n", [
        ("probe", m.probe()), ("preflight", m.preflight()), ("configure", m.OK), ("verify", m.verify(log=[error]))])
    assert bad.status == "failed" and bad.reason.endswith("[Error] Data collection failed for module INV")
    assert not bad.transient  # the agent reached the platform (hostid) and still logged an error: a real failure
    left, _ = m.run(tmp_path, pkgs, "action: configure\nagent:\n  LogLevel: 4\n", [
        ("probe", m.probe()), ("preflight", m.preflight()), ("configure", m.OK),
        ("verify", m.verify(log=[error], hostid="0"))])
    assert left.status == "failed" and left.transient  # not reached the platform yet: a campaign retries it


def test_no_hostid_after_verify_timeout(tmp_path, pkgs):
    result, _ = m.run(tmp_path, pkgs, ROLLOUT, [
        ("probe", m.probe(version=None, hostid="0")), ("preflight", m.preflight()), ("upload", m.OK),
        ("install", m.OK), ("configure", m.OK), ("verify", m.verify(hostid="0"))])
    assert result.status == "failed" and "no hostid at /etc/qualys/hostid after 5s" in result.reason
    assert result.transient


def test_checkin_pattern_is_waited_for_only_when_set(tmp_path, pkgs):
    book = "action: configure\nverify_timeout: 5\ncheckin_pattern: 'Heartbeat ack'\nagent:\n  LogLevel: 2\n"
    line = m.LOG.format(s=3, level="Information", message="Heartbeat acknowledged by platform x (proxy: none)")
    result, _ = m.run(tmp_path, pkgs, book, [
        ("probe", m.probe()), ("preflight", m.preflight()), ("configure", m.OK), ("verify", m.verify()),
        ("wait-log", Result(0, line + "\n", ""))])
    assert result.status == "changed"


def test_scan_reports_only_the_guides_signals(tmp_path, pkgs):
    cid = "20261126100000.0"
    printed = f"On-Demand-Request ControlId: {cid}\nsince={m.NOW}\n"
    request = m.LOG.format(s=1, level="Information", message=f"OnDemandRequest Params: ControlID={cid}, "
                           "Action=OnDemand, Type=VM, CPUThrottle=0")
    result, _ = m.run(tmp_path, pkgs, "action: scan\n", [
        ("probe", m.probe()), ("scan", Result(0, printed + f"log_line={request}\n", ""))])
    assert (result.status, result.reason) == ("ok", f"scan {cid} requested")
    delayed = m.LOG.format(s=2, level="Information", message=f"OnDemand request for Control ID : {cid} will be delayed.")
    result, _ = m.run(tmp_path, pkgs, "action: scan\n", [
        ("probe", m.probe()), ("scan", Result(0, printed + f"log_line={delayed}\n", ""))])
    assert result.reason == f"scan {cid} delayed behind an interval scan"
    refused, _ = m.run(tmp_path, pkgs, "action: scan\nscan: {type: udc}\n", [
        ("probe", m.probe()), ("scan", Result(1, "", "Manifest not found for module UDC\n"))])
    assert refused.status == "failed" and "Manifest not found for module UDC" in refused.reason
    silent, _ = m.run(tmp_path, pkgs, "action: scan\nscan: {timeout: 5}\n", [("probe", m.probe()),
                                                                              ("scan", Result(0, printed, ""))])
    assert silent.status == "failed" and "did not log the request within 5s" in silent.reason


def test_uninstall_keeps_the_hostid_and_tolerates_a_listed_job(tmp_path, pkgs):
    result, _ = m.run(tmp_path, pkgs, "action: uninstall\n", [
        ("probe", m.probe()), ("uninstall", m.facts(job_listed=1, hostid_left=1))])
    assert result.status == "changed" and "launchd still lists" in result.reason
    assert "hostid kept at /etc/qualys/hostid" in result.reason
    left, _ = m.run(tmp_path, pkgs, "action: uninstall\n", [
        ("probe", m.probe()), ("uninstall", m.facts(left="running daemon", hostid_left=1))])
    assert left.status == "failed" and left.reason == "uninstall left behind: running daemon"


def test_configure_removes_only_the_proxy_file_fleetctl_wrote(tmp_path, pkgs):
    wrote = ["proxy=" + "a" * 32]
    result, conn = m.run(tmp_path, pkgs, "action: configure\n", [
        ("probe", m.probe(applied=wrote)), ("preflight", m.preflight()), ("configure", m.OK), ("verify", m.verify())])
    assert (result.status, result.reason) == ("changed", "changed: proxy")
    assert "rm -f '/Library/Application Support/QualysCloudAgent/Config/proxy'" in conn.scripts[2][0]
    foreign, _ = m.run(tmp_path, pkgs, "action: configure\n", [("probe", m.probe())])
    assert foreign.status == "ok"  # a proxy file fleetctl never wrote (an MDM's) is left alone


def test_remembered_paths_are_used_by_later_actions(tmp_path, pkgs):
    applied = ["path.LogFileDir=/private/var/log/qa/", "path.LogDestType=syslog", "path.HostIdSearchDir=/opt/id/"]
    _, conn = m.run(tmp_path, pkgs, "action: uninstall\n", [
        ("probe", m.probe(applied=applied)), ("uninstall", m.facts(hostid_left=1))])
    assert "/opt/id/qualys/hostid" in conn.scripts[1][0]
    cid = "20261126100000.0"
    _, conn = m.run(tmp_path, pkgs, "action: scan\n", [("probe", m.probe(applied=applied)), ("scan", Result(
        0, f"On-Demand-Request ControlId: {cid}\nlog_line=" + '{"timestamp":"2026-11-26 10:00:01.000000+0000",'
        f'"messageType":"Info","eventMessage":"OnDemandRequest Params: ControlID={cid}, Action=OnDemand"}}\n', ""))])
    assert "log_dest=syslog" in conn.scripts[1][0]


def test_status_is_one_round_trip_and_judges_by_the_guides_signals(tmp_path, pkgs):
    error = m.LOG.format(s=1, level="Error", message="Data collection failed for module INV")
    fine = m.LOG.format(s=1, level="Information", message="error reports: 0 failed")
    healthy, _ = m.run(tmp_path, pkgs, "action: status\n", [("probe", m.facts(
        now=m.NOW, arch="arm64", agent_version="6.1.0.20", privilege="nopasswd", daemon_pid="412", hostid="1",
        uid="0", hostid_file="/etc/qualys/hostid", log_source="file", proxy="none", log_line=[fine]))])
    assert (healthy.status, healthy.reason) == ("ok", None)
    sick, _ = m.run(tmp_path, pkgs, "action: status\n", [("probe", m.facts(
        now=m.NOW, arch="arm64", agent_version="6.1.0.20", privilege="nopasswd", daemon_pid="", hostid="0",
        uid="0", hostid_file="/opt/id/qualys/hostid", log_source="file", log_line=[error]))])
    assert sick.status == "failed" and "no hostid at /opt/id/qualys/hostid" in sick.reason
    assert "daemon not running" in sick.reason and "[Error] Data collection failed" in sick.reason


def _site(plan):
    """The Mac under test and one neighbour (mac-r) at site berlin."""
    from fleetctl import relay

    neighbour = SimpleNamespace(host=SimpleNamespace(name="mac-r"), site="berlin", relay=None, lan_address="10.0.0.9",
                                endpoint=plan.endpoint, staged_dir=plan.staged_dir)
    return relay.Relays("20261126-1", [plan, neighbour])


def test_a_site_mac_fetches_from_the_relay_and_the_controller_sends_nothing(tmp_path, pkgs):
    from fleetctl import relay

    relays = {}

    def offered(plan):
        relays["r"] = r = _site(plan)
        sha = next(iter(plan.packages.values())).sha256
        site = r.sites["berlin"]
        assert site.claim("mac-r", sha) == ("relay", None)
        site.offered(sha, relay.Offer("mac-r", "10.0.0.9", 22, "admin", "/x/relay-1.pkg", ("ssh-ed25519", "AAAA"),
                                      relay.OneTimeKey.new()))
        return r

    result, conn = m.run(tmp_path, pkgs, ROLLOUT, [
        ("probe", m.probe(version=None, daemon_pid="", hostid="0")), ("preflight", m.preflight()),
        ("fetch from mac-r", m.OK), ("install", m.OK), ("configure", m.OK), ("verify", m.verify())],
        relays=offered, fleetctl_site="berlin", fleetctl_lan_address="10.0.0.8")
    assert (result.status, result.package_from, result.uploaded_bytes, result.site) == \
        ("changed", "relay mac-r", 0, "berlin")
    fetch = conn.scripts[2][0]
    assert "-l admin 10.0.0.9 >" in fetch and "10.0.0.9 ssh-ed25519 AAAA" in fetch and "BEGIN OPENSSH PRIVATE KEY" in fetch


def test_a_corrupt_copy_makes_the_mac_the_next_relay(tmp_path, pkgs):
    from fleetctl import relay

    state = {}

    def offered(plan):
        state["r"] = r = _site(plan)
        state["sha"] = sha = next(iter(plan.packages.values())).sha256
        r.sites["berlin"].claim("mac-r", sha)
        r.sites["berlin"].offered(sha, relay.Offer("mac-r", "10.0.0.9", 22, "admin", "/x/relay-1.pkg",
                                                   ("ssh-ed25519", "AAAA"), relay.OneTimeKey.new()))
        return r

    refused = Result(65, "", "fleetctl: the relay's copy has sha256 00ff, not the package's; refused\n")
    result, conn = m.run(tmp_path, pkgs, ROLLOUT, [
        ("probe", m.probe(version=None, daemon_pid="", hostid="0")), ("preflight", m.preflight()),
        ("fetch from mac-r", refused), ("upload", m.OK), ("relay-open", m.OK), ("install", m.OK),
        ("configure", m.OK), ("verify", m.verify())],
        relays=offered, fleetctl_site="berlin", fleetctl_lan_address="10.0.0.8")
    assert (result.status, result.package_from) == ("changed", "controller")
    assert "relay mac-r failed (fleetctl: the relay's copy has sha256 00ff" in result.reason
    site = state["r"].sites["berlin"]
    assert site.packages[state["sha"]].failed == ["mac-r"] and site.packages[state["sha"]].offer.relay == "mac"
    entry = conn.scripts[4][0]
    assert 'restrict,from="10.0.0.9",command="/bin/cat /private/var/tmp/fleetctl-user/relay-' in entry
    assert state["r"].open == {"mac": state["r"].open["mac"]}  # kept for closing at the end of the run
