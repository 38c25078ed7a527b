"""The lab's laptops without a lab: hardware identities, away schedules, magic packets, and
what the identity shims print (from host.json facts; no socket is opened)."""
import importlib
import itertools
import plistlib
import re
import socket
import sys
from importlib import resources

import pytest

from fleetctl.lab import hosts, identity, laptops, personas, presence, wol


def _shims(*names: str) -> list:
    """The shim modules imported as a simulated Mac does: top-level, from one directory."""
    directory = str(resources.files("fleetctl.lab.mac"))
    sys.path.insert(0, directory)
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(directory)


hardware, netports = _shims("hardware", "netports")

SERIAL = re.compile(r"C02[0-9A-HJ-NP-Z]{9}")
UUID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-5[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}")
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def test_identities_have_apple_formats_and_are_stable_per_seed_and_index():
    one = identity.derive(1, 1)
    assert SERIAL.fullmatch(one.serial) and UUID.fullmatch(one.hardware_uuid)
    assert one.ethernet.startswith("a8:20:66:") and one.wifi.startswith("3c:22:fb:")
    assert MAC.fullmatch(one.ethernet) and MAC.fullmatch(one.wifi) and MAC.fullmatch(one.bridge)
    assert int(one.bridge[:2], 16) & 0b11 == 0b10  # Thunderbolt Bridge: locally administered, unicast
    assert re.fullmatch(r"00006020-[0-9A-F]{16}", one.provisioning_udid)
    assert identity.derive(1, 1) == one  # the same lab seed and index: the same Mac
    assert identity.derive(2, 1).serial != one.serial  # another seed: other Macs


def test_no_two_macs_of_a_lab_share_any_identity():
    seen: set[str] = set()
    for index in range(1, 2001):  # the largest lab
        i = identity.derive(1, index)
        values = {i.serial, i.hardware_uuid, i.ethernet, i.wifi}
        assert len(values) == 4 and not values & seen, index
        seen |= values


def test_ports_put_the_primary_address_on_en0():
    i = identity.derive(3, 5)
    wired, laptop = identity.ports(i, wifi_only=False), identity.ports(i, wifi_only=True)
    assert [(p["port"], p["device"]) for p in wired if p["kind"] in ("ethernet", "wifi")] == \
        [("Ethernet", "en0"), ("Wi-Fi", "en1")]
    assert [(p["port"], p["device"]) for p in laptop if p["kind"] in ("ethernet", "wifi")] == [("Wi-Fi", "en0")]
    assert identity.primary(i, False) == i.ethernet == wired[0]["address"]
    assert identity.primary(i, True) == i.wifi == laptop[0]["address"]


@pytest.mark.parametrize("percent", [10, 40, 50, 90])
def test_away_schedules_are_seeded_alternate_and_keep_to_the_share(percent):
    periods = list(itertools.islice(laptops.away_periods(1, 4, percent, 20.0), 4000))
    assert periods[:50] == list(itertools.islice(laptops.away_periods(1, 4, percent, 20.0), 50))
    assert periods[:50] != list(itertools.islice(laptops.away_periods(1, 5, percent, 20.0), 50))
    assert all(a[0] != b[0] for a, b in zip(periods, periods[1:]))  # gone, back, gone, ...
    gone = sum(s for g, s in periods if g)
    assert abs(100 * gone / sum(s for _, s in periods) - percent) < 3
    assert max(s for g, s in periods if g) <= 1.5 * 20.0  # an absence never outlasts 30 s
    assert 0.9 * 20 < gone / sum(1 for g, _ in periods[1:] if g) < 1.1 * 20


def test_first_state_is_drawn_from_the_schedule():
    starts = [next(laptops.away_periods(1, index, 50, 20.0))[0] for index in range(1, 201)]
    assert 70 < sum(starts) < 130  # about half the Macs start away


ETH_SRC = bytes.fromhex("a82066000001")


def _udp_frame(mac: str, port: int, dst: bytes = wol.BROADCAST) -> bytes:
    udp = (40000).to_bytes(2, "big") + port.to_bytes(2, "big") + bytes(4)  # source port, port, length, sum
    ip = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]) + socket.inet_aton("198.18.0.11") + b"\xff" * 4
    return dst + ETH_SRC + b"\x08\x00" + ip + udp + wol.magic(mac)


def test_magic_packets_wake_only_their_card():
    mac = "a8:20:66:2c:ed:bc"
    assert wol.magic(mac) == b"\xff" * 6 + bytes.fromhex("a820662cedbc") * 16
    assert wol.wakes(_udp_frame(mac, 9), mac) and wol.wakes(_udp_frame(mac, 7), mac)
    assert wol.wakes(_udp_frame(mac, 9, dst=wol.address_bytes(mac)), mac)  # unicast to the card
    assert not wol.wakes(_udp_frame(mac, 9), "a8:20:66:2c:ed:bd")  # another Mac's packet
    assert not wol.wakes(_udp_frame(mac, 40000), mac)  # not a Wake-on-LAN port
    assert not wol.wakes(_udp_frame(mac, 9, dst=bytes.fromhex("a82066999999")), mac)  # for another card
    raw = wol.BROADCAST + ETH_SRC + b"\x08\x42" + wol.magic(mac)
    assert wol.wakes(raw, mac) and not wol.wakes(raw[:-1], mac)
    assert wol.sender(_udp_frame(mac, 9)) == "a8:20:66:00:00:01 (198.18.0.11)"


def test_gratuitous_arp_says_who_has_the_address():
    frame = presence.garp("a8:20:66:2c:ed:bc", "198.18.0.12")
    assert frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x06" and len(frame) == 42
    assert frame[20:22] == b"\x00\x01"  # a request
    assert frame[28:32] == frame[38:42] == socket.inet_aton("198.18.0.12")  # sender = target address


@pytest.fixture
def mac_facts(monkeypatch):
    def use(spec: str, seed: int = 1) -> dict:
        facts = hosts.host_facts(personas.parse(spec, 1)[0], hosts.LAB_CA, seed)
        for module in (hardware, netports):
            monkeypatch.setattr(module, "facts", lambda: facts)
        monkeypatch.setattr(netports, "_kernel_ipv4", lambda: (True, ("198.18.0.10", "255.255.224.0",
                                                                        "198.18.31.255")))
        return facts
    return use


def test_ioreg_prints_the_platform_device_as_macos_does(mac_facts, capsys):
    facts = mac_facts("arm64")
    hardware.ioreg(["-rd1", "-c", "IOPlatformExpertDevice"])
    out = capsys.readouterr().out
    lines = out.split("\n")
    assert re.fullmatch(r"\+-o J474sAP  <class IOPlatformExpertDevice, id 0x[0-9a-f]+, registered, matched, active, "
                        r"busy 0 \(\d+ ms\), retain \d+>", lines[0])
    assert lines[1] == "    {" and lines[-3:] == ["    }", "    ", ""]
    assert f'      "IOPlatformSerialNumber" = "{facts["serial"]}"' in lines
    assert f'      "IOPlatformUUID" = "{facts["hardware_uuid"]}"' in lines
    assert '      "compatible" = <"J474sAP","Mac14,12","AppleARM">' in lines
    hardware.ioreg(["-r", "-d", "1", "-w0", "-c", "IOPlatformExpertDevice", "-a"])
    entry = plistlib.loads(capsys.readouterr().out.encode())[0]
    assert entry["IOPlatformSerialNumber"] == facts["serial"] and entry["model"] == b"Mac14,12\0"
    hardware.ioreg(["-rd1", "-c", "IOUSBDevice"])
    assert capsys.readouterr().out == ""  # no such object: nothing, as ioreg does
    with pytest.raises(SystemExit) as bad:
        hardware.ioreg(["-Z"])
    assert bad.value.code == 1 and "ioreg: illegal option -- Z" in capsys.readouterr().err


def test_intel_ioreg_and_system_profiler(mac_facts, capsys):
    facts = mac_facts("x86_64")
    hardware.ioreg(["-rd1", "-c", "IOPlatformExpertDevice"])
    out = capsys.readouterr().out
    assert out.startswith("+-o Macmini8,1  <class IOPlatformExpertDevice") and '"board-id" = <"Mac-' in out
    overview = hardware.hardware_overview(facts)
    assert overview[:4] == ["Hardware:", "", "    Hardware Overview:", ""] and overview[-1] == ""
    assert f"      Serial Number (system): {facts['serial']}" in overview
    assert f"      Hardware UUID: {facts['hardware_uuid']}" in overview
    assert "      Processor Name: 6-Core Intel Core i7" in overview


def test_networksetup_lists_the_ports_in_macos_shape(mac_facts, capsys):
    facts = mac_facts("arm64")
    netports.networksetup(["-listallhardwareports"])
    out = capsys.readouterr().out
    ether = next(p["address"] for p in facts["ports"] if p["port"] == "Ethernet")
    assert out.startswith(f"\nHardware Port: Ethernet\nDevice: en0\nEthernet Address: {ether}\n\n")
    assert out.endswith("\n\nVLAN Configurations\n===================\n")
    assert re.findall(r"Hardware Port: (.*)\nDevice: (.*)\n", out)[:3] == [
        ("Ethernet", "en0"), ("Thunderbolt Bridge", "bridge0"), ("Wi-Fi", "en1")]
    netports.networksetup(["-getmacaddress", "en0"])
    assert capsys.readouterr().out == f"Ethernet Address: {ether} (Device: en0)\n"
    with pytest.raises(SystemExit) as bad:
        netports.networksetup(["-getmacaddress", "en9"])
    assert bad.value.code == 4
    assert capsys.readouterr().out == "Could not find hardware port or device named en9.\n"


def test_ifconfig_shows_en0_with_its_ether_line(mac_facts, capsys):
    facts = mac_facts("asleep-wifi")  # a Wi-Fi-only laptop: Wi-Fi is en0
    netports.ifconfig(["en0"])
    lines = capsys.readouterr().out.split("\n")
    assert lines[0] == "en0: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500"
    assert f"\tether {facts['ports'][0]['address']} " in lines and facts["ports"][0]["address"].startswith("3c:22:fb")
    assert "\tinet 198.18.0.10 netmask 0xffffe000 broadcast 198.18.31.255" in lines
    assert lines[-3:] == ["\tmedia: autoselect", "\tstatus: active", ""]
    netports.ifconfig(["-l"])
    assert capsys.readouterr().out == "lo0 gif0 stf0 en0 en1 en2 en3 bridge0\n"
    with pytest.raises(SystemExit) as bad:
        netports.ifconfig(["en7"])
    assert bad.value.code == 1 and capsys.readouterr().err == "ifconfig: interface en7 does not exist\n"
