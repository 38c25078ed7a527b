"""The lab's own life cycle: up, inventory, status, down leaving nothing, and up again;
where a Mac keeps its SSH keys; the relay-* personas."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import HOSTS, Lab, fleetctl
from fleetctl import package


def _leftovers(lab_dir: Path) -> list[str]:
    """Processes, mounts or namespaces that still mention the lab."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(lab_dir) in cmdline and "pytest" not in cmdline:
            found.append(f"process {pid}: {cmdline}")
    found += [f"mount: {l}" for l in Path("/proc/self/mountinfo").read_text().splitlines() if str(lab_dir) in l]
    return found


def _bridges() -> set[str]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return set(re.findall(r"^\d+: (flab\d+):", links, re.M))


def _namespaces() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def test_inventory_is_ansible_layout_with_real_packages(lab: Lab):
    inv = lab.inventory["all"]
    assert len(inv["hosts"]) == HOSTS
    mac = inv["hosts"]["mac-002"]
    assert mac["ansible_host"].startswith("198.18.") and mac["ansible_port"] == 22
    assert mac["ansible_user"] == "admin" and mac["lab_personas"] == ["x86_64", "macos12"]
    assert inv["hosts"]["mac-007"]["ansible_user"] == "root"
    assert Path(inv["vars"]["ansible_ssh_private_key_file"]).exists()
    for arch in ("arm64", "x86_64"):
        info = package.inspect(Path(inv["vars"][f"agent_pkg_{arch}"]))
        assert (info.identifier, info.architectures) == ("com.qualys.cloud-agent", (arch,))
        assert abs(info.size - (40 << 20)) < 1 << 20  # the default 40 MB


def test_inventory_lists_the_new_personas_and_both_proxy_accounts(lab: Lab):
    inv = lab.inventory["all"]
    assert inv["hosts"]["mac-025"]["lab_personas"] == ["arm64", "macos15", "chatty-agent"]
    assert inv["hosts"]["mac-026"]["lab_personas"] == ["arm64", "macos15", "log-errors"]
    assert inv["hosts"]["mac-031"]["lab_personas"] == ["x86_64", "macos15"]
    proxied = inv["hosts"]["mac-029"]
    assert proxied["proxy_urls"] == [inv["vars"]["lab_proxy_url"]] and "@" not in proxied["proxy_urls"][0]
    assert (proxied["proxy_user"], proxied["proxy_password_secret"]) == ("fleetproxy", "lab_proxy_password")
    assert inv["vars"]["lab_proxy_user"] == "fleetproxy" and inv["vars"]["lab_proxy2_user"] == "ops@lab;2"
    for key in ("lab_proxy_password_file", "lab_proxy2_password_file"):
        secret = Path(inv["vars"][key])
        assert secret.stat().st_mode & 0o777 == 0o600
        assert all(c in secret.read_text() for c in "@:$;")  # what the guide says must be percent-encoded
    assert lab.proxy_password("fleetproxy") != lab.proxy_password("ops@lab;2")


def test_status_lists_every_mac(lab: Lab):
    out = fleetctl("lab", "status", "--dir", str(lab.dir)).stdout
    assert "mac-031" in out and f"{HOSTS - 1}/{HOSTS} SSH servers running" in out


def test_bad_personas_are_refused_before_anything_starts(tmp_path):
    before = _namespaces()
    done = fleetctl("lab", "up", "--hosts", "2", "--personas", "arm64,bogus", "--dir", str(tmp_path), check=False)
    assert done.returncode == 2 and "unknown persona 'bogus'" in done.stderr
    done = fleetctl("lab", "up", "--hosts", "1", "--personas", "arm64*2", "--dir", str(tmp_path), check=False)
    assert done.returncode == 2 and "raise --hosts" in done.stderr
    assert _namespaces() == before and not (tmp_path / "state.json").exists()


def test_up_down_up_leaves_nothing_behind(lab: Lab, tmp_path):
    """A second lab beside the session's one (its own slot) comes and goes cleanly, twice."""
    before, bridges = _namespaces(), _bridges()
    for _ in range(2):
        fleetctl("lab", "up", "--hosts", "3", "--personas", "slowlink,unreachable", "--dir", str(tmp_path))
        inv = yaml.safe_load((tmp_path / "inventory.yml").read_text())["all"]["hosts"]
        mac = lab.mac("mac-001")
        mac.address, mac.lab = inv["mac-003"]["ansible_host"], Lab(tmp_path, {})
        assert mac.ok("hostname") == "mac-003\n"
        assert fleetctl("lab", "up", "--hosts", "1", "--dir", str(tmp_path), check=False).returncode == 2
        fleetctl("lab", "down", "--dir", str(tmp_path))
        assert _namespaces() == before
        assert _leftovers(tmp_path) == []
        assert _bridges() == bridges
    assert lab.mac("mac-001").ok("echo still-here") == "still-here\n"
    assert "no lab is running" in fleetctl("lab", "down", "--dir", str(tmp_path), check=False).stderr


def test_keys_live_where_sshd_looks_on_a_mac(lab: Lab):
    """OpenSSH's default, as on a Mac: ~/.ssh/authorized_keys of the account logging in."""
    config = (lab.dir / "hosts" / "mac-001" / "root" / "private/var/fleetlab/sshd/sshd_config").read_text()
    assert "AuthorizedKeysFile" not in config
    mac = lab.mac("mac-001")
    assert mac.ok("stat -c '%U %G %a %n' ~/.ssh ~/.ssh/authorized_keys") == (
        "admin staff 700 /Users/admin/.ssh\nadmin staff 600 /Users/admin/.ssh/authorized_keys\n")
    assert mac.ok("sudo stat -c '%U %a' /private/var/root/.ssh/authorized_keys") == "root 600\n"
    root = lab.mac("mac-007")  # root-login: the key is root's own
    assert root.ok("id -un; echo $HOME; stat -c '%U %a' ~/.ssh/authorized_keys") == "root\n/private/var/root\nroot 600\n"
    jump, behind = lab.mac("mac-019"), lab.mac("mac-020")
    hop = " ".join(jump._ssh(None)[:-3])  # the same key and known_hosts for the jump
    done = subprocess.run([*behind._ssh(None)[:-1], "-o", f"ProxyCommand={hop} -W %h:%p {jump.user}@{jump.address}",
                           behind.address, "hostname"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "mac-020\n", done.stderr


RELAY = "/private/var/tmp/fleetctl-admin/relay-0123456789abcdef.pkg"


@pytest.fixture(scope="module")
def relay_lab(make_lab) -> tuple[Lab, bytes]:
    """mac-001 a relay that dies, mac-002 one that corrupts, mac-003 their neighbour; each relay holds
    a staged package (odd size) and takes a one-time key whose forced command serves it."""
    relays, _ = make_lab(3, "relay-dies,relay-corrupts", "relay")
    data = os.urandom((1 << 20) + 3)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "one-time", "-f", str(relays.dir / "otk")],
                   check=True)
    entry = f'command="/bin/cat {RELAY}",restrict {(relays.dir / "otk.pub").read_text()}'
    for name in ("mac-001", "mac-002"):
        mac = relays.mac(name)
        mac.ok(f"mkdir -p {os.path.dirname(RELAY)} && cat > {RELAY}", stdin=data)
        mac.ok("cat >> ~/.ssh/authorized_keys", stdin=entry)
    return relays, data


def _neighbour_fetch(relays: Lab, relay: str) -> subprocess.CompletedProcess:
    """What fleetctl's neighbours do: ssh -i <one-time key> admin@<relay>, from mac-003's network."""
    slot = json.loads((relays.dir / "state.json").read_text())["slot"]
    return subprocess.run(["ip", "netns", "exec", f"flab{slot}-mac-003", "ssh", "-i", str(relays.dir / "otk"),
                           "-o", f"UserKnownHostsFile={relays.known_hosts}", "-o", "BatchMode=yes",
                           "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", f"admin@{relays.mac(relay).address}"],
                          capture_output=True, timeout=60)


def test_relay_personas_leave_every_other_cat_byte_exact(relay_lab: tuple[Lab, bytes]):
    relays, data = relay_lab
    other = os.urandom(70000)
    for name in ("mac-001", "mac-002"):
        mac = relays.mac(name)
        assert mac.run(f"cat < {RELAY}", stdin=b"").stdout == data  # no argument: the real cat
        assert mac.run("cat > /private/var/tmp/other && cat /private/var/tmp/other", stdin=other).stdout == other
        assert mac.run(f"cat /dev/null {RELAY}", stdin=b"").stdout == data  # two arguments
        assert mac.run("cat -", stdin=other).stdout == other
        assert mac.ok("ls -l /usr/local/bin/.lib/cat-real | cut -c1-10") == "-rwxr-xr-x\n"
    assert relays.mac("mac-003").run(f"cat {RELAY}", stdin=b"").returncode == 1  # no file there, the real cat


def test_relay_dies_serves_half_then_its_session_drops(relay_lab: tuple[Lab, bytes]):
    relays, data = relay_lab
    done = relays.mac("mac-001").run(f"cat {RELAY}", stdin=b"")
    assert done.returncode == 255 and done.stdout == data[:len(data) // 2]  # ssh: the connection was lost
    fetched = _neighbour_fetch(relays, "mac-001")
    assert fetched.returncode == 255 and fetched.stdout == data[:len(data) // 2], fetched.stderr
    assert relays.mac("mac-001").ok("echo alive") == "alive\n"  # only that session died


def test_relay_corrupts_flips_the_middle_byte(relay_lab: tuple[Lab, bytes]):
    relays, data = relay_lab
    for done in (relays.mac("mac-002").run(f"cat {RELAY}", stdin=b""), _neighbour_fetch(relays, "mac-002")):
        assert done.returncode == 0 and len(done.stdout) == len(data), done.stderr
        differ = [i for i, (a, b) in enumerate(zip(data, done.stdout)) if a != b]
        assert differ == [len(data) // 2] and done.stdout[differ[0]] == data[differ[0]] ^ 0xFF
