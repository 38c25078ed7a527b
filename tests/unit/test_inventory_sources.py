"""Existing Ansible inventories read unchanged: INI and YAML, ranges, group_vars/ and host_vars/,
connection variables, and ~/.ssh/config with ProxyJump, resolved before any connection.
(test_ansible_oracle.py compares the same reading with ansible-core's own, on a corpus.)"""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from fleetctl import inventory
from fleetctl.errors import UsageError
from fleetctl.inventory.patterns import expand, split_limit, split_port

ROOT = Path(__file__).resolve().parents[2]
OFFICE = ROOT / "inventories" / "ansible-office" / "hosts.ini"


@pytest.mark.parametrize("pattern, names", [
    ("mac[01:03].corp", ["mac01.corp", "mac02.corp", "mac03.corp"]),
    ("m[1:10:4]", ["m1", "m5", "m9"]),
    ("fin-[a:c]", ["fin-a", "fin-b", "fin-c"]),
    ("r[1:2]-[a:b]", ["r1-a", "r1-b", "r2-a", "r2-b"]),
    ("mail[:3]", ["mail0", "mail1", "mail2", "mail3"]),
    ("www[01:10:4]", ["www01", "www05", "www09"]),
    ("db-[A:C]", ["db-A", "db-B", "db-C"]),
    ("plain.example.com", ["plain.example.com"]),
])
def test_host_ranges(pattern, names):
    assert expand(pattern, "here") == names


@pytest.mark.parametrize("pattern", ["mac[05:01]", "mac[a:5]", "mac[1:3:0]", "mac[1:100]x[01:100]", "mac[1]"])
def test_bad_host_ranges_name_the_place(pattern):
    with pytest.raises(UsageError, match="here: host range"):
        expand(pattern, "here")


@pytest.mark.parametrize("pattern, host, port", [
    ("badwolf.example.com:5309", "badwolf.example.com", 5309),
    ("192.0.2.7:2201", "192.0.2.7", 2201),
    ("[2001:db8::7]:2202", "2001:db8::7", 2202),
    ("2001:db8::8", "2001:db8::8", None),  # a bare IPv6 address never has a port
    ("web[1:3].example.com:22", "web[1:3].example.com", 22),
    ("not a name:22", "not a name:22", None),  # Ansible too keeps what it cannot parse
])
def test_host_and_port(pattern, host, port):
    assert split_port(pattern) == (host, port)


def test_limit_terms_keep_ipv6_and_ranges_whole():
    assert split_limit("all:!lab") == ["all", "!lab"]
    assert split_limit("2001:db8::1") == ["2001:db8::1"]
    assert split_limit("web,db:&x") == ["web", "db:&x"]
    assert split_limit("mac[1:2]:!mac1") == ["mac[1:2]", "!mac1"]


def test_the_published_style_office_inventory():
    inv = inventory.load(OFFICE)
    assert len(inv.hosts) == 1 + 12 + 4 + 1 + 3
    assert inv.groups["studio"] == {f"studio-mac{n:02d}.example.com" for n in range(1, 13)}
    assert inv.groups["intel"] == {"fin-mini.example.com", "legacy-mac1.example.com", "legacy-mac3.example.com",
                                   "legacy-mac5.example.com"}
    assert inv.groups["ungrouped"] == {"design-imac.example.com"}
    assert inv.children["all"] == ["ungrouped", "macs"] and inv.children["macs"] == ["studio", "finance", "intel"]
    mini = inv.hosts["fin-mini.example.com"]
    assert (mini.address, mini.port, mini.user) == ("10.20.0.15", 2222, "admin")  # host_vars/ file, INI, group vars
    assert mini.vars["asset_tag"] == "F-1009" and mini.vars["fleetctl_become_secret"] == "finance_sudo"
    assert mini.vars["ansible_become_password"].startswith("{{ lookup(") and not mini.problems  # a reference
    assert mini.vars["agent_pkg_arm64"] == "~/Downloads/QualysCloudAgent.pkg"  # group_vars/macs/ directory
    imac = inv.hosts["design-imac.example.com"]
    assert imac.user == "ladmin" and "agent_pkg_arm64" not in imac.vars and imac.port is None
    assert [h.name for h in inv.select("finance:&intel")] == ["fin-mini.example.com"]
    jump = inventory.endpoint(mini).jump
    assert jump and jump.hostname == "bastion.example.com" and jump.port == 22


def test_variable_precedence_follows_ansible(tmp_path):
    """Inline group vars < group_vars/all < group_vars/<group> < inline host vars < host_vars/:
    an inline [office:vars] loses to group_vars/all.yml (fleetctl used to let it win)."""
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
    (tmp_path / "host_vars" / "h1.sh").write_text("#!/bin/sh\necho not vars: never read\n")
    h1 = inventory.load(tmp_path / "inv.yml").hosts["h1"]
    assert h1.vars == {"a": "all-file", "b": "all-file", "c": "office-file", "d": "host-inline", "e": "host-file"}


def test_a_directory_of_inventory_files(tmp_path):
    (tmp_path / "10-macs.ini").write_text("[macs]\nm1\n")
    (tmp_path / "20-more.yml").write_text("all:\n  children:\n    macs:\n      hosts:\n        m2:\n")
    (tmp_path / "README.md").write_text("not an inventory\n")
    inv = inventory.load(tmp_path)
    assert inv.groups["macs"] == {"m1", "m2"}


@pytest.mark.parametrize("name, text, where, words", [  # YAML (inv.yml) and INI (hosts) alike
    ("inv.yml", "hosts: {}\n", ":1:", "starts with 'all:'"),
    ("inv.yml", "all:\n  hostz:\n    a:\n", ":2:", "unknown key 'hostz'"),
    ("inv.yml", "all:\n  hosts: [a, b]\n", ":2:", "hosts: must map"),
    ("inv.yml", "all:\n  hosts:\n    a: {x: [1,\n", ":", "not valid YAML"),
    ("inv.yml", "plugin: amazon.aws.aws_ec2\n", ":1:", "ansible-inventory -i"),
    ("hosts", "[macs\nm1\n", ":1:", "host range in '[macs' is not closed"),
    ("hosts", "[macs:hostz]\nm1\n", ":1:", "is not a section"),
    ("hosts", "[macs]\nm1 port\n", ":2:", "'port' is not key=value"),
    ("hosts", "[macs]\nm1\n[macs:vars]\njust words\n", ":4:", "lines are name=value"),
    ("hosts", "[macs]\nm[9:1]\n", ":2:", "host range [9:1] is empty"),
    ("hosts", "[macs]\nmac01:\n", ":2:", "reserved for a port"),
    ("hosts", "[a:children]\nb\n[b:children]\na\n[b]\nm1\n", "", "contains itself"),
    ("hosts", "[macs:children]\nnothere\n[macs]\nm1\n", ":2:", "includes undefined group 'nothere'"),
    ("hosts", "[macs]\nm1\n[intel:vars]\nx=1\n", ":3:", "[intel:vars] is for group 'intel'"),
    ("hosts", "[macs]\nm1\n[macs:vars]\nansible_group_priority=high\n", ":4:", "ansible_group_priority"),
])
def test_bad_inventories(tmp_path, name, text, where, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError) as e:
        inventory.load(path)
    assert words in str(e.value), e.value
    if where:
        assert str(path) + where in str(e.value), e.value


@pytest.mark.parametrize("text, words", [
    ("all:\n  hosts:\n    a:\n      ansible_port: 99999\n    b:\n", "ansible_port must be a number"),
    ("[macs]\na ansible_port=70000\nb\n", "ansible_port must be a number"),
    ("[macs]\na ansible_ssh_port=ssh\nb\n", "ansible_ssh_port must be a number"),
    ("[macs]\na ansible_become_password=hunter2\nb\n", "holds a password in the inventory"),
    ("[macs]\na ansible_ssh_pass=hunter2\nb\n", "fleetctl logs in with SSH keys"),
    ("[macs]\na ansible_ssh_private_key_file=/nonexistent/key\nb\n", "/nonexistent/key does not exist"),
])
def test_one_bad_host_is_refused_only_when_selected(tmp_path, text, words):
    """It is read and shown (`fleetctl inventory`, --graph); `run` and `plan` refuse it by name
    before any contact, unless --limit leaves it out."""
    path = tmp_path / ("inv.yml" if text.startswith("all:") else "hosts")
    path.write_text(text)
    inv = inventory.load(path)
    assert set(inv.hosts) == {"a", "b"}
    assert any(words in note and "host 'a'" in note for note in inventory.notes(inv))
    assert "hunter2" not in inventory.describe(inv, None, False, None)
    assert "|--a" in inventory.describe(inv, None, True, None)
    with pytest.raises(UsageError) as e:
        [inventory.endpoint(h) for h in inv.select("all")]
    assert words in str(e.value) and f"{path}:" in str(e.value) and "host 'a'" in str(e.value)
    assert "hunter2" not in str(e.value)
    assert [inventory.endpoint(h).hostname for h in inv.select("all:!a")] == ["b"]


def test_plan_refuses_the_bad_host_and_limit_leaves_it_out(tmp_path):
    from rich.console import Console

    from fleetctl import rollout

    (tmp_path / "ssh_config").write_text("")
    path = tmp_path / "hosts.ini"
    path.write_text(f"[macs]\ngood\nbad ansible_ssh_private_key_file={tmp_path}/missing\n"
                    f"[macs:vars]\nfleetctl_ssh_config={tmp_path}/ssh_config\n")
    book = ROOT / "playbooks" / "configure.yml"
    with pytest.raises(UsageError, match=f"{path}:3: host 'bad': ansible_ssh_private_key_file .* does not exist"):
        rollout.show_plan(book, path, None, (), Console(file=io.StringIO()))
    out = io.StringIO()
    rollout.show_plan(book, path, "all:!bad", (), Console(file=out, width=200))
    assert "1 host(s): good" in out.getvalue()


def test_an_inventory_without_hosts_is_empty_and_run_stops(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "hosts.ini"
    path.write_text("# nothing yet\n[planned]\n")
    inv = inventory.load(path)
    assert inventory.listing(inv) == {"_meta": {"hostvars": {}}, "all": {"children": ["ungrouped", "planned"]}}
    with pytest.raises(UsageError, match="lists no hosts"):
        inv.select(None)
    fleetctl = Path(sys.executable).with_name("fleetctl")
    done = subprocess.run([str(fleetctl), "run", str(ROOT / "playbooks/configure.yml"), "-i", str(path)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin", "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
                               "FLEETCTL_STATE_DIR": str(tmp_path / "state")})
    assert done.returncode == 2 and "lists no hosts" in done.stderr, done.stderr


def test_ini_values_are_typed_as_ansible_core_2_19_types_them(tmp_path):
    """Host lines and [group:vars] alike: Python literals become values, anything else is text."""
    path = tmp_path / "hosts"
    path.write_text("[macs]\nm1 ansible_host=198.18.5.5 ansible_port=2200 wave='2' tags=\"a b\"\n"
                    "[macs:vars]\nflag=True\nnote=spaces are kept\nuser=\"admin\"\nport=\"2222\"\n")
    m1 = inventory.load(path).hosts["m1"]
    assert m1.vars == {"ansible_host": "198.18.5.5", "ansible_port": 2200, "wave": 2, "tags": "a b",
                       "flag": True, "note": "spaces are kept", "user": "admin", "port": "2222"}


def test_quoted_group_vars_give_the_bastion_the_user_and_the_port(tmp_path):
    (tmp_path / "ssh_config").write_text("")
    path = tmp_path / "hosts.ini"
    path.write_text(f"[web]\nweb1\n[web:vars]\nansible_ssh_common_args='-o ProxyJump=bastion.example.com'\n"
                    f"ansible_user=\"admin\"\nansible_port=\"2222\"\nfleetctl_ssh_config={tmp_path}/ssh_config\n")
    where = inventory.endpoint(inventory.load(path).hosts["web1"])
    assert (where.user, where.port, where.jump.hostname) == ("admin", 2222, "bastion.example.com")
    path.write_text(f"[web]\nweb1\n[web:vars]\nansible_ssh_common_args='-o ProxyCommand=\"ssh -W %h:%p b\"'\n"
                    f"fleetctl_ssh_config={tmp_path}/ssh_config\n")
    with pytest.raises(UsageError, match="ProxyCommand in ansible_ssh_common_args is not supported; use -J bastion"):
        inventory.endpoint(inventory.load(path).hosts["web1"])


def test_old_spellings_win_as_in_ansible_and_ipv6_prints_in_brackets(tmp_path):
    (tmp_path / "ssh_config").write_text("")
    path = tmp_path / "hosts.ini"
    path.write_text(f"[macs]\nm1 ansible_ssh_host=2001:db8::5 ansible_host=192.0.2.9 ansible_ssh_user=old "
                    f"ansible_user=new ansible_ssh_port=2201\n[macs:vars]\nfleetctl_ssh_config={tmp_path}/ssh_config\n")
    m1 = inventory.load(path).hosts["m1"]
    assert str(inventory.endpoint(m1)) == "old@[2001:db8::5]:2201"


def test_a_host_named_like_a_group_warns(tmp_path, capsys):
    path = tmp_path / "hosts.ini"
    path.write_text("[db]\ndb1\n[servers]\ndb\n")
    inventory.load(path)
    assert "warning: host 'db' and group 'db' share a name" in capsys.readouterr().err


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
    where = inventory.endpoint(_host(tmp_path, config))
    assert (where.hostname, where.port, where.user, where.timeout) == ("mac01.corp.example", 2200, "macadmin", 4.0)
    assert where.key_files == (str(Path("~/.ssh/macs").expanduser()),)
    hop2 = where.jump
    assert (hop2.hostname, hop2.port, hop2.user) == ("198.18.9.10", 23, "hop2")
    first = hop2.jump
    assert (first.hostname, first.port, first.user, first.jump) == ("198.18.9.9", 2022, "jump", None)
    pinned = inventory.endpoint(_host(tmp_path, config, ansible_user="admin", ansible_port=22, ansible_host="mac01",
                                      ansible_ssh_private_key_file=str(tmp_path / "ssh_config")))
    assert (pinned.user, pinned.port, pinned.key_files) == ("admin", 22, (str(tmp_path / "ssh_config"),))


@pytest.mark.parametrize("name, args", [
    ("ansible_ssh_common_args", "-J admin@jumpbox:2222"),
    ("ansible_ssh_common_args", "-o ProxyJump=admin@jumpbox:2222"),
    ("ansible_ssh_common_args", "-o 'ProxyJump admin@jumpbox:2222' -o ControlMaster=auto"),
    ("ansible_ssh_common_args", "'-o ProxyJump=admin@jumpbox:2222'"),  # one word, as a kept quote leaves it
    ("ansible_ssh_extra_args", "-o ProxyJump=admin@jumpbox:2222"),  # ssh gets these too: never dial around it
])
def test_proxyjump_the_ansible_way(tmp_path, name, args):
    jump = inventory.endpoint(_host(tmp_path, "", **{name: args})).jump
    assert (jump.hostname, jump.port, jump.user) == ("jumpbox", 2222, "admin")


@pytest.mark.parametrize("config, words", [
    ("Host *\n  ProxyCommand nc %h %p\n", "ProxyCommand"),
    ("Host *\n  ConnectTimeout soon\n", "ConnectTimeout must be a whole number"),
    ("Host *\n  ProxyJump a@b@c\n", "is not [user@]host[:port]"),
])
def test_bad_ssh_config_is_a_usage_error_naming_the_host(tmp_path, config, words):
    with pytest.raises(UsageError) as e:
        inventory.endpoint(_host(tmp_path, config))
    assert words in str(e.value) and "inv.yml:3: host 'mac01'" in str(e.value)


def test_describe_has_ansible_inventorys_shapes():
    import json

    listing = json.loads(inventory.describe(inventory.load(OFFICE), "intel", False, None))
    assert listing["all"] == {"children": ["ungrouped", "macs"]}
    assert listing["intel"]["hosts"] == ["fin-mini.example.com", "legacy-mac1.example.com",
                                         "legacy-mac3.example.com", "legacy-mac5.example.com"]
    assert set(listing["_meta"]["hostvars"]) == set(listing["intel"]["hosts"])
    one = json.loads(inventory.describe(inventory.load(OFFICE), None, False, "fin-mini.example.com"))
    assert one["ansible_host"] == "10.20.0.15"
    with pytest.raises(UsageError, match="'nope' is not in"):
        inventory.describe(inventory.load(OFFICE), None, False, "nope")


def test_a_vault_encrypted_vars_file_is_skipped_with_a_warning(tmp_path, capsys):
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "group_vars" / "all" / "main.yml").write_text("ansible_user: admin\n")
    (tmp_path / "group_vars" / "all" / "vault.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n6338\n")
    (tmp_path / "hosts").write_text("[macs]\nm1\n")
    assert inventory.load(tmp_path / "hosts").hosts["m1"].vars == {"ansible_user": "admin"}
    assert "vault.yml is encrypted with ansible-vault: fleetctl does not read it" in capsys.readouterr().err


def test_a_host_ansible_would_not_reach_over_ssh_is_refused(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("localhost ansible_connection=local\nmac1 ansible_connection=ssh\n")
    inv = inventory.load(path)
    assert inventory.problems(inv.hosts["mac1"]) == []
    with pytest.raises(UsageError, match="ansible_connection is 'local'; fleetctl reaches Macs over SSH only"):
        inventory.check(inv.hosts["localhost"])
