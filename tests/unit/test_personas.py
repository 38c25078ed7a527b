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
