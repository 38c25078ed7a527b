"""Existing Ansible inventories read unchanged: INI and YAML, ranges, group_vars/ and host_vars/,
connection variables, and ~/.ssh/config with ProxyJump, resolved before any connection."""
from __future__ import annotations

from pathlib import Path

import pytest

from fleetctl import inventory, sshconfig
from fleetctl.errors import UsageError
from fleetctl.inventory_sources import expand

ROOT = Path(__file__).resolve().parents[2]
OFFICE = ROOT / "inventories" / "ansible-office" / "hosts.ini"


@pytest.mark.parametrize("pattern, names", [
    ("mac[01:03].corp", ["mac01.corp", "mac02.corp", "mac03.corp"]),
    ("m[1:10:4]", ["m1", "m5", "m9"]),
    ("fin-[a:c]", ["fin-a", "fin-b", "fin-c"]),
    ("r[1:2]-[a:b]", ["r1-a", "r1-b", "r2-a", "r2-b"]),
    ("plain.example.com", ["plain.example.com"]),
])
def test_host_ranges(pattern, names):
    assert expand(pattern, "here") == names


@pytest.mark.parametrize("pattern", ["mac[05:01]", "mac[a:5]", "mac[1:3:0]"])
def test_bad_host_ranges_name_the_place(pattern):
    with pytest.raises(UsageError, match="here: host range"):
        expand(pattern, "here")


def test_the_published_style_office_inventory():
    inv = inventory.load(OFFICE)
    assert len(inv.hosts) == 1 + 12 + 4 + 1 + 3
    assert inv.groups["studio"] == {f"studio-mac{n:02d}.example.com" for n in range(1, 13)}
    assert inv.groups["intel"] == {"fin-mini.example.com", "legacy-mac1.example.com", "legacy-mac3.example.com",
                                   "legacy-mac5.example.com"}
    assert inv.groups["ungrouped"] == {"design-imac.example.com"}
    assert inv.children["all"] == ["macs", "ungrouped"] and inv.children["macs"] == ["finance", "intel", "studio"]
    mini = inv.hosts["fin-mini.example.com"]
    assert (mini.address, mini.port, mini.user) == ("10.20.0.15", 2222, "admin")  # host_vars/ file, INI, group vars
    assert mini.vars["asset_tag"] == "F-1009" and mini.vars["fleetctl_become_secret"] == "finance_sudo"
    assert "ansible_become_password" not in mini.vars
    assert mini.vars["agent_pkg_arm64"] == "~/Downloads/QualysCloudAgent.pkg"  # group_vars/macs/ directory
    imac = inv.hosts["design-imac.example.com"]
    assert imac.user == "ladmin" and "agent_pkg_arm64" not in imac.vars and imac.port is None
    assert [h.name for h in inv.select("finance:&intel")] == ["fin-mini.example.com"]
    jump = sshconfig.endpoint(mini).jump
    assert jump and jump.hostname == "bastion.example.com" and jump.port == 22


def test_variable_precedence_follows_ansible(tmp_path):
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "inv.yml").write_text("""all:
  vars: {a: all-inline, b: all-inline, c: all-inline, d: all-inline}
  children:
    office:
      vars: {b: office-inline, c: office-inline}
      hosts:
        h1: {d: host-inline}
""")
    (tmp_path / "group_vars" / "all.yml").write_text("a: all-file\nb: all-file\n")
    (tmp_path / "group_vars" / "office.yaml").write_text("c: office-file\n")
    (tmp_path / "host_vars" / "h1").write_text("e: host-file\n")
    h1 = inventory.load(tmp_path / "inv.yml").hosts["h1"]
    assert h1.vars == {"a": "all-file", "b": "office-inline", "c": "office-file", "d": "host-inline", "e": "host-file"}


def test_a_directory_of_inventory_files(tmp_path):
    (tmp_path / "10-macs.ini").write_text("[macs]\nm1\n")
    (tmp_path / "20-more.yml").write_text("all:\n  children:\n    macs:\n      hosts:\n        m2:\n")
    (tmp_path / "README.md").write_text("not an inventory\n")
    inv = inventory.load(tmp_path)
    assert inv.groups["macs"] == {"m1", "m2"}


@pytest.mark.parametrize("name, text, where, words", [  # YAML (inv.yml) and INI (hosts) alike
    ("inv.yml", "hosts: {}\n", ":1:", "starts with 'all:'"),
    ("inv.yml", "all:\n  hostz:\n    a:\n", ":2:", "unknown key 'hostz'"),
    ("inv.yml", "all:\n  hosts:\n    a:\n      ansible_port: 99999\n", ":3:", "ansible_port"),
    ("inv.yml", "all:\n  hosts: [a, b]\n", ":2:", "hosts: must map"),
    ("inv.yml", "all:\n  hosts:\n    a: {x: [1,\n", ":", "not valid YAML"),
    ("hosts", "[macs\nm1\n", ":1:", "is not a section"),
    ("hosts", "[macs:hostz]\nm1\n", ":1:", "is not a section"),
    ("hosts", "[macs]\nm1 port\n", ":2:", "'port' is not key=value"),
    ("hosts", "[macs]\nm1\n[macs:vars]\njust words\n", ":4:", "lines are name=value"),
    ("hosts", "[macs]\nm1 ansible_port=70000\n", ":2:", "ansible_port must be a number"),
    ("hosts", "[macs]\nm[9:1]\n", ":2:", "host range [9:1] is empty"),
    ("hosts", "[macs]\nm1 ansible_become_password=hunter2\n", ":2:", "holds a password in the inventory"),
    ("hosts", "[a:children]\nb\n[b:children]\na\n[b]\nm1\n", "", "contains itself"),
])
def test_bad_inventories(tmp_path, name, text, where, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError) as e:
        inventory.load(path)
    assert words in str(e.value), e.value
    if where:
        assert str(path) + where in str(e.value), e.value
    assert "hunter2" not in str(e.value)


def test_ini_values_are_typed_as_ansible_types_them(tmp_path):
    """Host lines: Python literals; [group:vars]: always text."""
    path = tmp_path / "hosts"
    path.write_text("[macs]\nm1 ansible_host=198.18.5.5 ansible_port=2200 wave='2' tags=\"a b\"\n"
                    "[macs:vars]\nflag=True\nnote=spaces are kept\n")
    m1 = inventory.load(path).hosts["m1"]
    assert m1.vars == {"ansible_host": "198.18.5.5", "ansible_port": 2200, "wave": 2, "tags": "a b",
                       "flag": "True", "note": "spaces are kept"}


def _host(tmp_path: Path, config: str, **hvars) -> inventory.Host:
    (tmp_path / "ssh_config").write_text(config)
    return inventory.Host("mac01", {"fleetctl_ssh_config": str(tmp_path / "ssh_config"), **hvars}, ["macs"], 3,
                          tmp_path / "inv.yml")


def test_ssh_config_supplies_what_the_inventory_leaves_out(tmp_path):
    config = """Host bastion
  HostName 198.18.9.9
  User jump
  Port 2022
  IdentityFile ~/.ssh/jump_key
Host mac*
  HostName %h.corp.example
  User macadmin
  Port 2200
  IdentityFile ~/.ssh/macs
  ProxyJump bastion,hop2@198.18.9.10:23
  ConnectTimeout 4
"""
    where = sshconfig.endpoint(_host(tmp_path, config))
    assert (where.hostname, where.port, where.user, where.timeout) == ("mac01.corp.example", 2200, "macadmin", 4.0)
    assert where.key_files == (str(Path("~/.ssh/macs").expanduser()),)
    hop2 = where.jump
    assert (hop2.hostname, hop2.port, hop2.user) == ("198.18.9.10", 23, "hop2")
    first = hop2.jump
    assert (first.hostname, first.port, first.user, first.jump) == ("198.18.9.9", 2022, "jump", None)
    pinned = sshconfig.endpoint(_host(tmp_path, config, ansible_user="admin", ansible_port=22, ansible_host="mac01",
                                      ansible_ssh_private_key_file=str(tmp_path / "ssh_config")))
    assert (pinned.user, pinned.port, pinned.key_files) == ("admin", 22, (str(tmp_path / "ssh_config"),))


@pytest.mark.parametrize("args", ["-J admin@jumpbox:2222", "-o ProxyJump=admin@jumpbox:2222",
                                  "-o 'ProxyJump admin@jumpbox:2222' -o ControlMaster=auto"])
def test_proxyjump_the_ansible_way(tmp_path, args):
    jump = sshconfig.endpoint(_host(tmp_path, "", ansible_ssh_common_args=args)).jump
    assert (jump.hostname, jump.port, jump.user) == ("jumpbox", 2222, "admin")


@pytest.mark.parametrize("config, words", [
    ("Host *\n  ProxyCommand nc %h %p\n", "ProxyCommand"),
    ("Host *\n  ConnectTimeout soon\n", "ConnectTimeout must be a whole number"),
    ("Host *\n  ProxyJump a@b@c\n", "is not [user@]host[:port]"),
])
def test_bad_ssh_config_is_a_usage_error_naming_the_host(tmp_path, config, words):
    with pytest.raises(UsageError) as e:
        sshconfig.endpoint(_host(tmp_path, config))
    assert words in str(e.value) and "inv.yml:3: host 'mac01'" in str(e.value)


def test_describe_has_ansible_inventorys_shapes():
    import json

    listing = json.loads(inventory.describe(inventory.load(OFFICE), "intel", False, None))
    assert listing["all"] == {"children": ["macs", "ungrouped"]}
    assert listing["intel"]["hosts"] == ["fin-mini.example.com", "legacy-mac1.example.com",
                                         "legacy-mac3.example.com", "legacy-mac5.example.com"]
    assert set(listing["_meta"]["hostvars"]) == set(listing["intel"]["hosts"])
    one = json.loads(inventory.describe(inventory.load(OFFICE), None, False, "fin-mini.example.com"))
    assert one["ansible_host"] == "10.20.0.15"
    with pytest.raises(UsageError, match="'nope' is not in"):
        inventory.describe(inventory.load(OFFICE), None, False, "nope")
