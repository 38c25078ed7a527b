import re

import pytest

from fleetctl.errors import UsageError
from fleetctl.lab import hosts, network, personas


def test_spec_expands_in_order_and_fills_with_healthy_defaults():
    hosts = personas.parse("x86_64*3,lowdisk,sudo-password+x86_64,installer-fails,unreachable", 9)
    assert [h.personas for h in hosts] == [
        ("x86_64",), ("x86_64",), ("x86_64",), ("lowdisk",), ("sudo-password", "x86_64"),
        ("installer-fails",), ("unreachable",), (), (),
    ]
    assert hosts[4].as_list() == ["x86_64", "macos15", "sudo-password"]
    assert hosts[8].as_list() == ["arm64", "macos15"] and hosts[8].name == "mac-009"
    assert personas.parse("root-login+macos12", 1)[0].user == "root"
    assert personas.parse("", 2)[1].user == "admin"


@pytest.mark.parametrize("spec, hosts, message", [
    ("bogus", 1, "unknown persona 'bogus'"),
    ("arm64+x86_64", 1, "cannot be combined"),
    ("macos12+macos14", 1, "cannot be combined"),
    ("sudo-password+nosudo", 1, "cannot be combined"),
    ("lowdisk+lowdisk", 1, "repeated"),
    ("arm64*0", 1, "positive count"),
    ("arm64*x", 1, "positive count"),
    ("arm64,,x86_64", 3, "entry 2 is empty"),
    ("arm64*3", 2, "describes 3 hosts but --hosts is 2"),
])
def test_bad_specs_name_the_entry_and_the_fix(spec, hosts, message):
    with pytest.raises(UsageError, match=message):
        personas.parse(spec, hosts)


def test_addresses_stay_inside_the_lab_ranges_and_never_collide():
    seen = set()
    for slot in range(network.MAX_SLOTS):
        assert network.controller_address(slot).startswith("198.18.")
        assert network.pod_address(slot) == f"198.19.{slot}.1"
        for index in (1, 2, 500, 2000):
            address = network.host_address(slot, index)
            assert address.startswith("198.18.") and address not in seen
            assert address != network.controller_address(slot)
            seen.add(address)
    assert network.host_address(0, 1) == "198.18.0.10"
    assert network.host_address(1, 1) == "198.18.32.10"
    assert len(network.veth(7, 2000)) <= 15  # Linux interface name limit


def test_log_personas_combine_with_everything_and_reach_the_mac():
    host = personas.parse("chatty-agent+log-errors+x86_64+macos13", 1)[0]
    assert host.as_list() == ["x86_64", "macos13", "chatty-agent", "log-errors"]
    assert host.user == "admin"
    facts = hosts.host_facts(host, hosts.LAB_CA)  # what the simulated agent reads on that Mac
    assert facts["traits"] == ["chatty-agent", "log-errors"] and facts["arch"] == "x86_64"
    for trait in ("chatty-agent", "log-errors"):
        assert trait in personas.TRAITS and personas.TRAITS[trait]


def test_laptop_personas_parse_and_keep_their_value():
    hosts = personas.parse("away=40%*2,asleep+x86_64,asleep-wifi,renumbered*2", 7)
    assert [h.personas for h in hosts[:6]] == [("away=40%",), ("away=40%",), ("asleep", "x86_64"),
                                               ("asleep-wifi",), ("renumbered",), ("renumbered",)]
    assert hosts[0].as_list() == ["arm64", "macos15", "away=40%"]
    assert hosts[0].has("away") and hosts[0].away_percent == 40 and hosts[2].away_percent is None
    assert hosts[3].wifi_only and not hosts[2].wifi_only and not hosts[6].wifi_only
    assert hosts[4].has("renumbered") and not hosts[4].has("away")


@pytest.mark.parametrize("spec, hosts, message", [
    ("away", 1, "write away=P% with P from 1 to 99"),
    ("away=0%", 1, "write away=P% with P from 1 to 99"),
    ("away=100%", 1, "write away=P% with P from 1 to 99"),
    ("away=40", 1, "write away=P%"),
    ("away=x%", 1, "write away=P%"),
    ("asleep=3", 1, "'asleep' takes no value; write it as asleep"),
    ("away=40%+asleep", 1, "away=40% and asleep cannot be combined"),
    ("asleep+asleep-wifi", 1, "cannot be combined"),
    ("renumbered+unreachable", 1, "cannot be combined"),
    ("away=20%+away=30%", 1, "cannot be combined"),
    ("renumbered", 2, r"renumbered Macs take each other's addresses in a ring .*: give at least two"),
    ("sleepy", 1, r"unknown persona 'sleepy'; choose from .*away=P%, asleep, asleep-wifi, renumbered"),
])
def test_bad_laptop_specs_name_the_entry_and_the_fix(spec, hosts, message):
    with pytest.raises(UsageError, match=message):
        personas.parse(spec, hosts)


def test_every_mac_reports_its_own_hardware_identity():
    wired, laptop = personas.parse("x86_64,asleep-wifi", 2)
    facts = hosts.host_facts(wired, hosts.LAB_CA, seed=7)
    assert re.fullmatch(r"C02[0-9A-HJ-NP-Z]{9}", facts["serial"])
    assert [p["device"] for p in facts["ports"] if p["kind"] in ("ethernet", "wifi")] == ["en0", "en1"]
    assert facts["ports"][0]["port"] == "Ethernet" and not facts["laptop"]
    other = hosts.host_facts(laptop, hosts.LAB_CA, seed=7)
    assert [(p["port"], p["device"]) for p in other["ports"] if p["kind"] == "wifi"] == [("Wi-Fi", "en0")]
    assert not any(p["kind"] == "ethernet" for p in other["ports"]) and other["laptop"]
    assert facts["serial"] != other["serial"] and facts == hosts.host_facts(wired, hosts.LAB_CA, seed=7)
