"""Laptops in the lab: each Mac's hardware identity, Macs that go away, sleep and wake only
from their own LAN, and Macs that come back at another Mac's address."""
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Lab, fleetctl
from test_lab import _leftovers as lab_leftovers
from fleetctl import render
from fleetctl.lab import network, wol
from fleetctl.lab.laptops import WAKE_DELAY_S
from fleetctl.lab.state import alive

# What a Mac of the site runs to wake a neighbour (stock macOS has perl, not Python 3): one
# magic packet for the Ethernet address in $ARGV[0], to the local broadcast address, port 9.
PERL_WAKE = r"""perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(Proto => "udp", Broadcast => 1, PeerAddr => "255.255.255.255", PeerPort => 9) or die "$!\n"; $s->send(("\xff" x 6) . (pack("H12", $ARGV[0]) x 16)) or die "$!\n"; print "sent\n"'"""
NO_ROUTE = re.compile(r"ssh: connect to host 198\.18\.\d+\.\d+ port 22: No route to host")


def _state(lab: Lab) -> dict:
    return json.loads((lab.dir / "state.json").read_text())


def _host(lab: Lab, name: str) -> dict:
    return next(h for h in _state(lab)["hosts"] if h["name"] == name)


def _laptop(lab: Lab, name: str) -> str:
    return json.loads((lab.dir / "laptops" / "status.json").read_text())["macs"][name]["state"]


def _wake(lab: Lab, sender: str, target: str, address: str | None = None) -> None:
    """SENDER (over SSH) broadcasts a magic packet for TARGET's Ethernet address (or ADDRESS)."""
    hexed = (address or _host(lab, target)["ethernet"]).replace(":", "")
    assert lab.mac(sender).ok(f"{PERL_WAKE} {hexed}") == "sent\n"


def _answers(address: str) -> bool:
    try:
        socket.create_connection((address, 22), timeout=1).close()
        return True
    except OSError:
        return False


def _wait(condition, timeout: float, what: str) -> float:
    """Seconds until CONDITION() held (bounded wait)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what} within {timeout}s"
        time.sleep(0.2)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def ring(make_lab) -> Lab:
    """mac-001 an ordinary Mac, mac-002..004 renumbered (mac-003 an Intel Mac)."""
    return make_lab(4, "arm64,renumbered,renumbered+x86_64,renumbered", "ring")[0]


@pytest.fixture(scope="module")
def office(make_lab) -> Lab:
    """On the lab's own network: mac-001, an ordinary Mac, and mac-002, away half the time (for
    1-3 s each time). The site east: mac-003 asleep, mac-004 its neighbour, awake, and mac-005, a
    Wi-Fi-only laptop, asleep."""
    return make_lab(2, "arm64,away=50%,asleep,arm64,asleep-wifi", "office", "--sites", "east=3@100mbit",
                    "--away-period", "2", "--seed", "5")[0]


IDENTITY = ("ioreg -rd1 -c IOPlatformExpertDevice; system_profiler SPHardwareDataType; ifconfig en0; "
            "networksetup -listallhardwareports")


def _identity(text: str) -> dict:
    return {
        "ioreg_serial": re.search(r'^      "IOPlatformSerialNumber" = "(.*)"$', text, re.M).group(1),
        "ioreg_uuid": re.search(r'^      "IOPlatformUUID" = "(.*)"$', text, re.M).group(1),
        "serial": re.search(r"^      Serial Number \(system\): (.*)$", text, re.M).group(1),
        "uuid": re.search(r"^      Hardware UUID: (.*)$", text, re.M).group(1),
        "en0": re.search(r"^\tether (\S+) $", text, re.M).group(1),
        "ethernet": re.search(r"^Hardware Port: Ethernet\nDevice: en0\nEthernet Address: (\S+)$", text, re.M).group(1),
        "wifi": re.search(r"^Hardware Port: Wi-Fi\nDevice: en1\nEthernet Address: (\S+)$", text, re.M).group(1),
    }


def test_every_shim_tells_the_macs_own_identity_and_keeps_it(ring: Lab):
    seen = {}
    for name in ("mac-001", "mac-003"):
        mac, recorded = ring.mac(name), _host(ring, name)
        before = mac.count("ioreg")
        first, second = _identity(mac.ok(IDENTITY)), _identity(mac.ok(IDENTITY))
        assert first == second  # stable across calls
        assert first["ioreg_serial"] == first["serial"] == recorded["serial"] == ring.inventory["all"]["hosts"][
            name]["lab_serial"]
        assert first["ioreg_uuid"] == first["uuid"] == recorded["hardware_uuid"]
        assert first["en0"] == first["ethernet"] == recorded["ethernet"] and first["wifi"] == recorded["wifi"]
        assert mac.count("ioreg") == before + 2 and mac.count("networksetup") >= 2
        seen[name] = first
    assert all(seen["mac-001"][k] != seen["mac-003"][k] for k in seen["mac-001"])  # no two Macs alike
    assert "Processor Name: 6-Core Intel Core i7" in ring.mac("mac-003").ok("system_profiler SPHardwareDataType")
    assert ring.mac("mac-003").ok("sysctl -n hw.model") == "Macmini8,1\n"
    assert ring.mac("mac-001").ok("/sbin/ifconfig en0 | grep ether") == f"\tether {seen['mac-001']['en0']} \n"


def test_the_macs_interface_really_has_its_hardware_address(ring: Lab, office: Lab):
    for lab, name, port in ((ring, "mac-001", "ethernet"), (office, "mac-004", "ethernet"),
                            (office, "mac-005", "wifi")):
        host, slot = _host(lab, name), _state(lab)["slot"]
        link = subprocess.run(["ip", "-n", network.netns(slot, host["index"]), "link", "show", "eth0"],
                              capture_output=True, text=True).stdout
        assert f"link/ether {host[port]} " in link, link
    host, slot = _host(ring, "mac-001"), _state(ring)["slot"]
    ring.mac("mac-001").ok("true")
    neigh = subprocess.run(["ip", "neigh", "show", host["address"], "dev", network.bridge(slot)],
                           capture_output=True, text=True).stdout
    assert f"lladdr {host['ethernet']} " in neigh  # what the controller's ARP learned


def test_status_shows_each_macs_identity_and_the_seed(ring: Lab, office: Lab):
    out = fleetctl("lab", "status", "--dir", str(ring.dir)).stdout
    for h in _state(ring)["hosts"]:
        assert re.search(rf"{h['name']} .*{h['serial']} .*{h['hardware_uuid']} .*{h['ethernet']} .*{h['wifi']}", out)
    assert "hardware (seed 1)" in out
    assert _state(office)["seed"] == 5 and _host(office, "mac-001")["serial"] != _host(ring, "mac-001")["serial"]
    out = fleetctl("lab", "status", "--dir", str(office.dir)).stdout
    assert re.search(r"mac-005 .* asleep-wifi .* asleep ", out) and re.search(r"mac-005 .*3c:22:fb:\S+ ", out)


def test_an_away_mac_is_gone_then_back(office: Lab):
    address = _host(office, "mac-002")["address"]
    _wait(lambda: not _answers(address), 15, "mac-002 away")  # absences of 1-3 s, half the time
    _wait(lambda: _answers(address), 15, "mac-002 back")
    assert office.mac("mac-002").ok("hostname") == "mac-002\n"
    log = (office.dir / "laptops" / "laptops.log").read_text()
    assert re.search(r"mac-002: away \(for \d+\.\d s\)", log) and "mac-002: present" in log


def test_an_asleep_mac_answers_nothing(office: Lab):
    started = time.monotonic()
    done = office.mac("mac-003").run("true")
    assert done.returncode == 255 and NO_ROUTE.search(done.stderr), done.stderr
    assert time.monotonic() - started < 5.5  # ARP gave up (about 3 s), nothing refused or timed out
    assert _laptop(office, "mac-003") == "asleep" and _laptop(office, "mac-005") == "asleep"


def test_a_magic_packet_from_outside_the_site_wakes_nothing(office: Lab):
    slot, target = _state(office)["slot"], _host(office, "mac-003")
    main_end, site_end = network.uplink(slot, 1)
    dropped = network.wake_drops(main_end)
    _wake(office, "mac-001", "mac-003")  # a Mac on the lab's network, not the site's
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # the controller, on the lab's bridge only
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, network.bridge(slot).encode())
        s.sendto(wol.magic(target["ethernet"]), ("255.255.255.255", 9))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:  # EtherType 0x0842, on the lab's bridge
        raw.bind((network.bridge(slot), 0))
        raw.send(wol.BROADCAST + bytes(6) + b"\x08\x42" + wol.magic(target["ethernet"]))
    time.sleep(1.5)  # a packet that reached the Mac's card would have it waking by now
    assert _laptop(office, "mac-003") == "asleep" and not _answers(target["address"])
    assert network.wake_drops(main_end) - dropped >= 3  # each stopped at the site's uplink
    assert "mac-003: waking" not in (office.dir / "laptops" / "laptops.log").read_text()


def test_a_neighbour_of_its_site_wakes_it_with_perl(office: Lab):
    target = _host(office, "mac-003")
    sent = time.monotonic()
    _wake(office, "mac-004", "mac-003")
    waited = _wait(lambda: _answers(target["address"]), WAKE_DELAY_S + 10, "mac-003 awake")
    assert time.monotonic() - sent >= WAKE_DELAY_S - 0.5 and waited < WAKE_DELAY_S + 10
    assert office.mac("mac-003").ok("hostname") == "mac-003\n"  # and its processes run again
    assert _laptop(office, "mac-003") == "awake"
    log = (office.dir / "laptops" / "laptops.log").read_text()
    assert f"mac-003: waking (magic packet from {_host(office, 'mac-004')['ethernet']} " in log


def test_a_wifi_only_laptop_sleeps_through_magic_packets(office: Lab):
    target = _host(office, "mac-005")
    assert target["ethernet"] is None
    _wake(office, "mac-004", "mac-005", address=target["wifi"])
    time.sleep(1.5)
    assert _laptop(office, "mac-005") == "asleep" and not _answers(target["address"])
    assert "mac-005: waking" not in (office.dir / "laptops" / "laptops.log").read_text()


def test_lab_sleep_puts_it_back_and_the_controllers_wake_script_wakes_it(office: Lab):
    done = fleetctl("lab", "sleep", "mac-003", "--dir", str(office.dir))
    assert done.stdout == "asleep: mac-003\n" and _laptop(office, "mac-003") == "asleep"
    assert NO_ROUTE.search(office.mac("mac-003").run("true").stderr)
    refused = fleetctl("lab", "sleep", "mac-004", "--dir", str(office.dir), check=False)
    assert refused.returncode == 2 and "mac-004 is not an asleep Mac" in refused.stderr
    script = render.render("wake", addresses=[_host(office, "mac-003")["ethernet"]])  # fleetctl's own
    done = office.mac("mac-004").run("sh -s", stdin=script)
    assert done.returncode == 0, done.stderr
    _wait(lambda: _answers(_host(office, "mac-003")["address"]), WAKE_DELAY_S + 10, "mac-003 awake again")


def test_renumber_moves_addresses_in_a_ring_and_keys_stay_with_their_macs(ring: Lab):
    before = {h["name"]: h["address"] for h in _state(ring)["hosts"]}
    kept = {f: (ring.dir / f).read_bytes() for f in ("known_hosts", "inventory.yml")}
    out = fleetctl("lab", "renumber", "--dir", str(ring.dir)).stdout
    assert out.splitlines() == [f"mac-002: {before['mac-002']} -> {before['mac-003']}",
                                f"mac-003: {before['mac-003']} -> {before['mac-004']}",
                                f"mac-004: {before['mac-004']} -> {before['mac-002']}"]
    assert {f: (ring.dir / f).read_bytes() for f in kept} == kept  # the admin's files are the admin's
    first = before["mac-002"]  # now mac-004's: it answers with mac-004's host key and serial
    key = (ring.dir / "hosts" / "mac-004" / "root/private/var/fleetlab/sshd/ssh_host_ed25519_key.pub").read_text()
    scanned = subprocess.run(["ssh-keyscan", "-t", "ed25519", first], capture_output=True, text=True).stdout
    assert scanned.split()[1:3] == key.split()[:2]
    ssh = ["ssh", "-i", str(ring.key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"admin@{first}"]
    told = subprocess.run([*ssh, "hostname; ioreg -rd1 -c IOPlatformExpertDevice | grep IOPlatformSerialNumber"],
                          capture_output=True, text=True, timeout=30).stdout
    assert told.splitlines() == ["mac-004", f'      "IOPlatformSerialNumber" = "{_host(ring, "mac-004")["serial"]}"']
    refused = ring.mac("mac-002").run("true")  # the inventory's address and host key for mac-002
    assert refused.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    assert ring.mac("mac-001").ok("hostname") == "mac-001\n"  # not renumbered, not moved
    slot, now = _state(ring)["slot"], {h["name"]: h["address"] for h in _state(ring)["hosts"]}
    assert now["mac-002"] == before["mac-003"]
    inside = subprocess.run(["ip", "-n", network.netns(slot, 2), "-4", "-o", "addr", "show", "eth0"],
                            capture_output=True, text=True).stdout
    assert f"inet {before['mac-003']}/19 " in inside
    assert re.search(rf"mac-002 +. {re.escape(before['mac-003'])} ", fleetctl("lab", "status", "--dir",
                                                                              str(ring.dir)).stdout)


def test_lab_up_refuses_a_lone_renumbered_mac(tmp_path):
    done = fleetctl("lab", "up", "--hosts", "2", "--personas", "renumbered", "--dir", str(tmp_path), check=False)
    assert done.returncode == 2 and "give at least two" in done.stderr
    done = fleetctl("lab", "up", "--hosts", "1", "--away-period", "0", "--dir", str(tmp_path), check=False)
    assert done.returncode == 2 and "--away-period 0: give seconds" in done.stderr
    assert list(tmp_path.iterdir()) == []


def _leftovers(lab_dir: Path, slot: int) -> list[str]:
    """test_lab's processes and mounts that mention the lab, and its slot's links and namespaces."""
    found = lab_leftovers(lab_dir)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    ours = (f"flab{slot}", f"fl{slot}")
    found += [f"link: {n}" for n in re.findall(r"^\d+: ([^:@]+)", links, re.M) if n.startswith(ours)]
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return found + [f"netns: {n}" for n in netns if n.startswith(f"flab{slot}-")]


def test_down_leaves_nothing_whatever_the_laptops_are_doing(tmp_path):
    fleetctl("lab", "up", "--hosts", "3", "--sites", "west=2@50mbit", "--away-period", "1",
             "--personas", "away=50%,asleep,asleep-wifi,renumbered*2", "--dir", str(tmp_path))
    state = json.loads((tmp_path / "state.json").read_text())
    fleetctl("lab", "renumber", "--dir", str(tmp_path))
    time.sleep(1.5)  # the away Mac has come and gone at least once
    fleetctl("lab", "down", "--dir", str(tmp_path))
    deadline = time.monotonic() + 5  # namespaces and links go a moment after `ip` returns
    while _leftovers(tmp_path, state["slot"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _leftovers(tmp_path, state["slot"]) == []
    assert not alive(state["laptops_pid"]) and not (tmp_path / "state.json").exists()

