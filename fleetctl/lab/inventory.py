"""DIR/inventory.yml and DIR/known_hosts: the lab's Macs as an admin's inventory knows them.

Written once by `lab up`. Both are the admin's view: `lab renumber` moves Macs to other
addresses and changes neither (that is what a fleet with DHCP laptops looks like).
"""
from __future__ import annotations

from pathlib import Path

import yaml

from fleetctl.lab import hosts, network, podlimits, proxy
from fleetctl.lab.personas import HostSpec
from fleetctl.lab.state import LabState


def write_inventory(state: LabState, pkgs: dict[str, Path]) -> Path:
    lab_dir = Path(state.dir)
    host_vars = {}
    jump = next((h for h in state.hosts if "jump-host" in h.personas), None)
    for h in state.hosts:
        host_vars[h.name] = {
            "ansible_host": h.address,
            "ansible_port": 22,
            "ansible_user": h.user,
            "lab_personas": h.personas,
            # The Mac's hardware, for tests and demos (an admin's inventory would not know it):
            "lab_serial": h.serial,
            "lab_hardware_uuid": h.hardware_uuid,
            "lab_ethernet": h.ethernet,
            "lab_wifi": h.wifi,
        }
        if "sudo-password" in h.personas:
            host_vars[h.name]["fleetctl_become_secret"] = "lab_sudo_password"
        if "behind-bastion" in h.personas and jump:
            host_vars[h.name]["ansible_ssh_common_args"] = f"-J {jump.user}@{jump.address}"
        if "proxy-only" in h.personas:
            host_vars[h.name].update({"proxy_urls": [proxy.url(lab_dir, state.slot)], "proxy_user": proxy.USER,
                                      "proxy_password_secret": "lab_proxy_password"})
    children = {}
    for s in state.sites:
        children[s.name] = {"vars": {"fleetctl_site": s.name}, "hosts": {name: None for name in s.hosts}}
    inventory = {"all": {
        "vars": {
            "ansible_ssh_private_key_file": str(lab_dir / "id_ed25519"),
            "fleetctl_known_hosts": str(lab_dir / "known_hosts"),
            "agent_pkg_arm64": str(pkgs["arm64"]),
            "agent_pkg_x86_64": str(pkgs["x86_64"]),
            "server_uri": f"https://{hosts.POD_NAME}/CloudAgent",
            "fleetctl_pod_ca": hosts.LAB_CA,
            "lab_proxy_url": proxy.url(lab_dir, state.slot),
            "lab_proxy_user": proxy.USER,
            "lab_proxy_password_file": str(lab_dir / "proxy-password"),
            "lab_proxy2_user": proxy.USER2,  # a second account, for per-proxy credentials
            "lab_proxy2_password_file": str(lab_dir / "proxy2-password"),
            "lab_sudo_password_file": str(lab_dir / "sudo-password"),
            # The platform API (lab/podapi.py) at the pod's address, its certificate the CA to trust;
            # fleetctl takes the user and password from its secrets qualys_api_user/_password.
            "qualys_api_url": f"https://{network.pod_address(state.slot)}",
            "qualys_api_ca": str(lab_dir / "pod" / "cert.pem"),
            "lab_api_user": podlimits.API_USER,
            "lab_api_password_file": str(lab_dir / "api-password"),
        },
        "hosts": host_vars,
        **({"children": children} if children else {}),
    }}
    path = lab_dir / "inventory.yml"
    header = "# Written by `fleetctl lab up`: the simulated Macs, in Ansible's inventory layout.\n"
    path.write_text(header + yaml.safe_dump(inventory, sort_keys=False))
    return path


def write_known_hosts(lab_dir: Path, slot: int, reachable: list[HostSpec]) -> Path:
    """One `<address> <key type> <key>` line per reachable Mac, at the address it started with."""
    path = lab_dir / "known_hosts"
    path.write_text("".join(hosts.known_hosts_line(lab_dir, slot, s) for s in reachable))
    return path
