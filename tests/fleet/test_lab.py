"""The lab's own life cycle: up, inventory, status, down leaving nothing, and up again."""
import os
import re
import subprocess
from pathlib import Path

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
