"""Branch-office sites in the lab: a LAN of their own, one shaped uplink to the lab's network."""
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import Lab, fleetctl
from fleetctl.errors import LabError, UsageError
from fleetctl.lab import fleet, network, personas

MB = 1 << 20
CONNECT = "import socket, sys\nfor a in sys.argv[1:]:\n    h, p = a.rsplit(':', 1)\n" \
          "    socket.create_connection((h, int(p)), timeout=5).close()\nprint('ok')\n"


@pytest.fixture(scope="module")
def site_lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """mac-001 on the lab's own bridge, mac-002 and mac-003 in the site east behind 8 Mbit/s."""
    if os.geteuid() != 0:
        pytest.fail("fleet tests need root (network and mount namespaces): run them with `make test` as root")
    lab_dir = tmp_path_factory.mktemp("sites")
    try:
        fleetctl("lab", "up", "--hosts", "1", "--sites", "east=2@8mbit", "--dir", str(lab_dir))
        yield Lab(lab_dir, yaml.safe_load((lab_dir / "inventory.yml").read_text()))
    finally:
        fleetctl("lab", "down", "--dir", str(lab_dir), check=False)


def _state(lab: Lab) -> dict:
    return json.loads((lab.dir / "state.json").read_text())


def _in_netns(lab: Lab, mac: str, argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess:
    """ARGV run from inside MAC's network namespace (the controller's files, the Mac's network)."""
    index = int(mac.removeprefix("mac-"))
    return subprocess.run(["ip", "netns", "exec", network.netns(_state(lab)["slot"], index), *argv],
                          input=stdin, capture_output=True, timeout=60)


def _ssh(lab: Lab, address: str, command: str) -> list[str]:
    return ["ssh", "-i", str(lab.key), "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"admin@{address}", command]


def _links() -> set[str]:
    return set(re.findall(r"^\d+: ([^:@]+)[:@]", subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                                 text=True).stdout, re.M))


def _namespaces() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def test_each_site_is_an_inventory_group_with_its_macs(site_lab: Lab):
    inv = site_lab.inventory["all"]
    assert list(inv["hosts"]) == ["mac-001", "mac-002", "mac-003"]  # --hosts first, then the sites
    assert inv["children"] == {"east": {"vars": {"fleetctl_site": "east"}, "hosts": {"mac-002": None, "mac-003": None}}}
    out = fleetctl("inventory", "-i", str(site_lab.dir / "inventory.yml"), "--host", "mac-003").stdout
    assert json.loads(out)["fleetctl_site"] == "east"
    assert "fleetctl_site" not in json.loads(fleetctl("inventory", "-i", str(site_lab.dir / "inventory.yml"),
                                                      "--host", "mac-001").stdout)


def test_state_records_the_site_and_status_shows_it(site_lab: Lab):
    state = _state(site_lab)
    slot = state["slot"]
    assert state["sites"] == [{"name": "east", "index": 1, "rate": "8mbit", "bridge": f"flab{slot}s1",
                               "uplink_main": f"fl{slot}u1m", "uplink_site": f"fl{slot}u1s",
                               "hosts": ["mac-002", "mac-003"]}]
    assert [h["site"] for h in state["hosts"]] == [None, "east", "east"]
    out = fleetctl("lab", "status", "--dir", str(site_lab.dir)).stdout
    assert re.search(r"mac-003 .* east ", out) and "site east: 2 Macs" in out


def test_the_uplink_is_the_sites_only_way_out_and_is_shaped_both_ways(site_lab: Lab):
    slot = _state(site_lab)["slot"]
    main_end, site_end = network.uplink(slot, 1)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert re.search(rf"{main_end}@{site_end}: .* master flab{slot} ", links)
    assert re.search(rf"{site_end}@{main_end}: .* master flab{slot}s1 ", links)
    for index in (2, 3):
        assert re.search(rf"{network.veth(slot, index)}@\S+: .* master flab{slot}s1 ", links)
    assert re.search(rf"{network.veth(slot, 1)}@\S+: .* master flab{slot} ", links)
    for dev in (main_end, site_end):
        qdisc = subprocess.run(["tc", "qdisc", "show", "dev", dev], capture_output=True, text=True).stdout
        assert re.search(r"qdisc tbf .*rate 8Mbit", qdisc), qdisc


def test_site_macs_reach_their_neighbour_and_the_controller_pod_and_proxy(site_lab: Lab):
    slot = _state(site_lab)["slot"]
    neighbour = site_lab.inventory["all"]["hosts"]["mac-003"]["ansible_host"]
    done = _in_netns(site_lab, "mac-002", [sys.executable, "-I", "-c", CONNECT, f"{neighbour}:22",
                                           f"{network.controller_address(slot)}:{network.PROXY_PORT}",
                                           f"{network.pod_address(slot)}:{network.POD_PORT}"])
    assert done.returncode == 0 and done.stdout == b"ok\n", done.stderr
    assert site_lab.mac("mac-002").ok("hostname") == "mac-002\n"  # and the controller reaches it over SSH


def test_controller_traffic_crosses_the_uplink_and_lan_traffic_does_not(site_lab: Lab):
    hosts = site_lab.inventory["all"]["hosts"]
    data = os.urandom(MB)
    before = fleet.site_uplink_bytes(site_lab.dir, "east")
    assert site_lab.mac("mac-002").run("cat > /dev/null", stdin=data).returncode == 0
    assert fleet.site_uplink_bytes(site_lab.dir, "east") - before >= MB

    down, up = fleet.site_uplink_bytes(site_lab.dir, "east"), fleet.site_uplink_bytes(site_lab.dir, "east", True)
    done = _in_netns(site_lab, "mac-003", _ssh(site_lab, hosts["mac-002"]["ansible_host"], "cat > /dev/null"), data)
    assert done.returncode == 0, done.stderr
    # Not a byte of the megabyte: at most a stray broadcast of the lab's network floods over.
    assert fleet.site_uplink_bytes(site_lab.dir, "east") - down < 16 << 10
    assert fleet.site_uplink_bytes(site_lab.dir, "east", from_site=True) - up < 16 << 10
    with pytest.raises(LabError, match="no site 'west'"):
        fleet.site_uplink_bytes(site_lab.dir, "west")


@pytest.mark.parametrize("spec, message", [
    ("berlin=20@fast", "--sites 'berlin=20@fast': write NAME=COUNT@RATE, e.g. berlin=20@20mbit"),
    ("berlin=20", "write NAME=COUNT@RATE"),
    ("berlin=x@1mbit", "write NAME=COUNT@RATE"),
    ("berlin=20@20mbps", "write NAME=COUNT@RATE"),
    ("Berlin=2@1mbit", "NAME is a lower-case letter"),
    ("2nd=2@1mbit", "NAME is a lower-case letter"),
    ("berlin=0@1mbit", "at least one Mac"),
    ("berlin=1@1mbit,berlin=2@1mbit", "site 'berlin' is given twice"),
    ("all=1@1mbit", "'all' is taken"),
    ("berlin=1@1mbit,,paris=1@1mbit", "entry 2 is empty"),
    ("berlin=1990@1mbit,paris=10@1mbit", "at most 2000"),
])
def test_bad_site_specs_are_refused_before_anything_starts(tmp_path, spec, message):
    done = fleetctl("lab", "up", "--hosts", "1", "--sites", spec, "--dir", str(tmp_path), check=False)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []  # refused before any key, package, namespace or state


def test_hosts_or_sites_must_be_given_and_personas_count_both(tmp_path):
    done = fleetctl("lab", "up", "--dir", str(tmp_path), check=False)
    assert done.returncode == 2 and "give --hosts N" in done.stderr
    done = fleetctl("lab", "up", "--sites", "a=2@1mbit", "--personas", "x86_64*3", "--dir", str(tmp_path), check=False)
    assert done.returncode == 2 and "--personas describes 3 hosts but --hosts 0 and --sites give 2" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_site_specs_parse_in_order():
    sites = personas.parse_sites("berlin=20@20mbit, paris-2=10@1.5Mbit,x=1@1gbit")
    assert [(s.index, s.name, s.count, s.rate, s.rate_bps) for s in sites] == [
        (1, "berlin", 20, "20mbit", 20_000_000), (2, "paris-2", 10, "1.5mbit", 1_500_000),
        (3, "x", 1, "1gbit", 1_000_000_000)]
    assert personas.parse_sites("") == []
    with pytest.raises(UsageError, match="at least 8kbit"):
        personas.parse_sites("a=1@1kbit")


def test_down_removes_the_sites_bridges_and_uplinks(tmp_path, site_lab: Lab):
    """A second lab with sites and personas beside the first comes and goes, leaving nothing."""
    before_links = _links()
    fleetctl("lab", "up", "--sites", "a=1@1mbit,b=2@2mbit", "--personas", "slowlink,unreachable,proxy-only",
             "--dir", str(tmp_path))
    slot = _state(Lab(tmp_path, {}))["slot"]
    ours = {n for n in _links() - before_links if n.startswith((f"flab{slot}", f"fl{slot}"))}
    assert {f"flab{slot}", f"flab{slot}s1", f"flab{slot}s2", f"fl{slot}u1m", f"fl{slot}u2s"} <= ours
    assert f"fl{slot}h002" not in ours  # unreachable: no namespace, no veth
    fleetctl("lab", "down", "--dir", str(tmp_path))
    assert not [n for n in _links() if n.startswith((f"flab{slot}", f"fl{slot}"))]
    assert not [n for n in _namespaces() if n.startswith(f"flab{slot}-")]
    assert site_lab.mac("mac-003").ok("echo still-here") == "still-here\n"  # the other lab's site is untouched
