"""Branch offices over real SSH: each site's package crosses its shaped uplink once, its Macs
fetch it from a relay with the one-time key, failed relays are replaced, corrupt copies are
refused, and no key outlives the run (even a SIGKILLed one, after resume)."""
from __future__ import annotations

import json
import hashlib
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import FLEETCTL, Lab, fleetctl, lab_env
from fleetctl import relay, render
from fleetctl.lab import fleet, network

ROOT = Path(__file__).resolve().parents[2]
SITES = "east=4@20mbit,west=3@20mbit,down=3@20mbit,dies=3@20mbit,bad=3@20mbit,keys=2@20mbit,kill=3@4mbit,solo=2@20mbit"
PERSONAS = ",".join(["arm64", "arm64", "x86_64", "arm64",   # east: mac-001..004, two architectures
                     "arm64", "arm64", "arm64",             # west: mac-005..007, fleetctl_relay mac-007
                     "unreachable", "arm64", "arm64",       # down: the named relay mac-008 does not answer
                     "relay-dies", "arm64", "arm64",        # dies: mac-011 dies mid-transfer
                     "relay-corrupts", "arm64", "arm64",    # bad: mac-014 serves a corrupt copy
                     "arm64", "arm64",                      # keys: mac-017 relay, mac-018 its neighbour
                     "arm64", "arm64", "arm64",             # kill: SIGKILL, then resume
                     "arm64", "arm64"])                     # solo: --no-relay
RELAYS = {"west": "mac-007", "down": "mac-008", "dies": "mac-011", "bad": "mac-014"}


@pytest.fixture(scope="module")
def site_lab(tmp_path_factory):
    lab_dir = tmp_path_factory.mktemp("sitelab")
    fleetctl("lab", "up", "--sites", SITES, "--personas", PERSONAS, "--dir", str(lab_dir))
    try:
        inventory = yaml.safe_load((lab_dir / "inventory.yml").read_text())
        for site, name in RELAYS.items():
            inventory["all"]["children"][site]["vars"]["fleetctl_relay"] = name
        (lab_dir / "sites.yml").write_text(yaml.safe_dump(inventory))
        env = lab_env(lab_dir)
        pkgs = {a: lab_dir / f"small-{a}.pkg" for a in ("arm64", "x86_64")}
        for arch, path in pkgs.items():
            fleetctl("lab", "pkg", "--version", "6.1.0.20", "--arch", arch, "--size-mb", "2", "--out", str(path))
        yield Lab(lab_dir, inventory), env, pkgs
    finally:
        fleetctl("lab", "down", "--dir", str(lab_dir), check=False)


def rollout(site_lab, limit: str, tmp_path: Path, *more: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict]:
    lab, env, pkgs = site_lab
    report = tmp_path / f"{limit}-{time.monotonic_ns()}.json"
    done = subprocess.run([str(FLEETCTL), "run", str(ROOT / "playbooks/rollout.yml"), "-i", str(lab.dir / "sites.yml"),
                           "--limit", limit, "-e", f"agent_pkg_arm64={pkgs['arm64']}",
                           "-e", f"agent_pkg_x86_64={pkgs['x86_64']}", "--json", str(report), *more],
                          capture_output=True, text=True, timeout=timeout, env=env)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return done, doc


def hosts_of(doc: dict) -> dict[str, dict]:
    return {h["name"]: h for h in doc["hosts"]}


def relay_leftovers(lab: Lab, names) -> list[str]:
    """Relay keys or copies still on any of NAMES (read from the Macs' own files)."""
    found = []
    for name in names:
        root = lab.dir / "hosts" / name / "root"
        keys = root / "Users/admin/.ssh/authorized_keys"
        if keys.exists() and relay.MARKER in keys.read_text():
            found.append(f"{name}: key")
        found += [f"{name}: {p.name}" for p in (root / "private/var/tmp").glob("fleetctl-*/relay-*")]
    return found


def site_macs(lab: Lab, site: str) -> list[str]:
    return list(lab.inventory["all"]["children"][site]["hosts"])


def test_one_package_per_architecture_crosses_the_uplink(site_lab, tmp_path):
    lab, env, pkgs = site_lab
    before = fleet.site_uplink_bytes(lab.dir, "east")
    done, doc = rollout(site_lab, "east", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    crossed = fleet.site_uplink_bytes(lab.dir, "east") - before
    hosts = hosts_of(doc)
    assert all(h["status"] == "changed" and h["version_after"] == "6.1.0.20" for h in hosts.values()), hosts
    sources = {n: h["package_from"] for n, h in hosts.items()}
    relay_mac = next(n for n, s in sources.items() if s == "controller" and hosts[n]["arch"] == "arm64")
    assert sources["mac-003"] == "controller"  # the one Intel Mac: its own package, nobody to share it with
    assert sorted(s for n, s in sources.items() if hosts[n]["arch"] == "arm64") == \
        sorted(["controller", f"relay {relay_mac}", f"relay {relay_mac}"])
    one_each = pkgs["arm64"].stat().st_size + pkgs["x86_64"].stat().st_size
    assert doc["summary"]["uplink_bytes_by_site"] == {"east": one_each}
    assert one_each <= crossed < one_each + pkgs["arm64"].stat().st_size // 2, crossed  # not a third package
    assert f"site east: {one_each / 1e6:.1f} MB over its uplink; packages from controller 2, relay 2" in done.stdout
    assert relay_leftovers(lab, site_macs(lab, "east")) == []
    again, doc = rollout(site_lab, "east", tmp_path)  # a rerun sends nothing
    assert again.returncode == 0 and doc["summary"]["uploaded_bytes"] == 0
    assert {h["status"] for h in doc["hosts"]} == {"ok"}


def test_the_named_relay_serves_its_site(site_lab, tmp_path):
    done, doc = rollout(site_lab, "west", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {n: h["package_from"] for n, h in hosts_of(doc).items()} == {
        "mac-007": "controller", "mac-005": "relay mac-007", "mac-006": "relay mac-007"}


def test_a_relay_that_is_down_is_replaced(site_lab, tmp_path):
    done, doc = rollout(site_lab, "down", tmp_path)
    hosts = hosts_of(doc)
    assert hosts["mac-008"]["status"] == "unreachable"
    assert {hosts["mac-009"]["status"], hosts["mac-010"]["status"]} == {"changed"}
    assert sorted(hosts[n]["package_from"] for n in ("mac-009", "mac-010"))[0] == "controller"
    assert sorted(hosts[n]["package_from"] for n in ("mac-009", "mac-010"))[1].startswith("relay mac-0")
    assert doc["summary"]["uplink_bytes_by_site"]["down"] == site_lab[2]["arm64"].stat().st_size


def test_a_relay_killed_mid_transfer_is_replaced(site_lab, tmp_path):
    lab, _, pkgs = site_lab
    done, doc = rollout(site_lab, "dies", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    hosts = hosts_of(doc)
    assert all(h["status"] == "changed" and h["version_after"] == "6.1.0.20" for h in hosts.values()), hosts
    notes = " ".join(h["reason"] or "" for h in hosts.values())
    assert "relay mac-011 failed" in notes
    # the relay, then the neighbour that saw it die and took over: two packages, not three
    assert doc["summary"]["uplink_bytes_by_site"]["dies"] == 2 * pkgs["arm64"].stat().st_size
    assert relay_leftovers(lab, site_macs(lab, "dies")) == []


def test_a_corrupt_copy_is_refused(site_lab, tmp_path):
    lab, _, pkgs = site_lab
    done, doc = rollout(site_lab, "bad", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    hosts = hosts_of(doc)
    refused = [s for h in hosts.values() for s in h["steps"] if s["name"] == "fetch from mac-014"]
    assert refused and all(s["status"] == "failed" and "refused" in s["detail"] for s in refused), refused
    for name, h in hosts.items():
        assert h["version_after"] == "6.1.0.20", name
        assert "version: 6.1.0.20" in lab.mac(name).ok("pkgutil --pkg-info com.qualys.cloud-agent")


def _netns(lab: Lab, name: str) -> str:
    state = json.loads((lab.dir / "state.json").read_text())
    return network.netns(state["slot"], int(name.split("-")[1]))


def test_the_one_time_key_reads_one_file_from_the_site_only(site_lab, tmp_path):
    lab, _, pkgs = site_lab
    relay_mac, neighbour = lab.mac("mac-017"), lab.mac("mac-018")
    key = relay.OneTimeKey.new()
    (tmp_path / "key").write_text(key.private)
    (tmp_path / "key").chmod(0o600)
    staged, copy = "/private/var/tmp/fleetctl-admin/k.pkg", "/private/var/tmp/fleetctl-admin/relay-k.pkg"
    relay_mac.ok("mkdir -p -m 700 /private/var/tmp/fleetctl-admin")
    relay_mac.put(pkgs["arm64"], staged)
    sha = hashlib.sha256(pkgs["arm64"].read_bytes()).hexdigest()
    relay_mac.ok("/bin/sh -s", stdin=render.render(
        "relay_open", sources=neighbour.address, copy=copy, staged=staged, sha256=sha, public_key=key.public,
        marker=relay.MARKER + "test"))

    def fetch(netns: str | None, *command: str) -> subprocess.CompletedProcess:
        ssh = ["ssh", "-F", "/dev/null", "-i", str(tmp_path / "key"), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
               "-l", "admin", relay_mac.address, *command]
        return subprocess.run(["ip", "netns", "exec", netns, *ssh] if netns else ssh, capture_output=True, timeout=60)

    from_site = fetch(_netns(lab, neighbour.name))
    assert from_site.returncode == 0 and from_site.stdout == pkgs["arm64"].read_bytes()
    other = fetch(_netns(lab, neighbour.name), "cat", "/etc/passwd")  # the forced command wins
    assert other.stdout == pkgs["arm64"].read_bytes()
    forward = fetch(_netns(lab, neighbour.name), "-W", "127.0.0.1:22")  # restrict: no forwarding
    assert forward.returncode != 0 and not forward.stdout.startswith(b"SSH-")
    elsewhere = fetch(None)  # the controller's address is not the site's
    assert elsewhere.returncode == 255 and b"Permission denied" in elsewhere.stderr
    relay_mac.ok("/bin/sh -s", stdin=relay.close_script(SimpleNamespace(staged_dir="/private/var/tmp/fleetctl-admin")))
    gone = fetch(_netns(lab, neighbour.name))
    assert gone.returncode == 255 and b"Permission denied" in gone.stderr
    assert relay_leftovers(lab, ["mac-017"]) == []
    assert "fleetlab" in relay_mac.ok("cat ~/.ssh/authorized_keys")  # the admin's own key is kept


def test_sigkill_then_resume_removes_the_relay_key(site_lab, tmp_path):
    lab, env, pkgs = site_lab
    big = {a: tmp_path / f"big-{a}.pkg" for a in ("arm64", "x86_64")}
    for arch, path in big.items():
        fleetctl("lab", "pkg", "--version", "6.1.0.20", "--arch", arch, "--size-mb", "6", "--out", str(path))
    args = ["run", str(ROOT / "playbooks/rollout.yml"), "-i", str(lab.dir / "sites.yml"), "--limit", "kill",
            "-e", f"agent_pkg_arm64={big['arm64']}", "-e", f"agent_pkg_x86_64={big['x86_64']}"]
    proc = subprocess.Popen([str(FLEETCTL), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    names = site_macs(lab, "kill")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("key" in f for f in relay_leftovers(lab, names)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert any("key" in f for f in relay_leftovers(lab, names)), "the relay never opened"
    rid = sqlite3.connect(lab.dir / "state" / "journal.db").execute(
        "SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()[0]
    resumed = subprocess.run([str(FLEETCTL), "resume", rid], capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "relay key and copy removed" in resumed.stdout
    assert relay_leftovers(lab, names) == []
    for name in names:
        assert "version: 6.1.0.20" in lab.mac(name).ok("pkgutil --pkg-info com.qualys.cloud-agent")


def test_no_relay_uploads_to_every_mac(site_lab, tmp_path):
    lab, _, pkgs = site_lab
    done, doc = rollout(site_lab, "solo", tmp_path, "--no-relay")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {h["package_from"] for h in doc["hosts"]} == {"controller"}
    assert doc["summary"]["uplink_bytes_by_site"]["solo"] == 2 * pkgs["arm64"].stat().st_size
