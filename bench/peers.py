"""The same rollout as fleetctl's, written the way a good user of each peer tool would.

Each function writes its tool's files into WORK and returns the command line to measure.
The steps are the same everywhere: upload the arch's package, installer with sudo, the
provisioning tool, wait (bounded) for the hostid the platform assigns, verify with pkgutil;
each tool's own idempotency makes its rerun cheap. fleetctl's run ends only once every agent
has reached the platform (its verify waits up to verify_timeout, 60 s, for the hostid), so the
peers wait for the same thing inside their run, each the way that tool waits for a file:
Ansible's wait_for with path=, pyinfra an operation polling as its own server.wait does, raw
OpenSSH a polling loop in the same session. All poll every 0.5 s (Ansible's wait_for sleeps
in whole seconds: 1 s, its default and least) for at most HOSTID_TIMEOUT_S.

WAIT_HOSTID=False gives the old shape: the peers stop when the configuration tool returns.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

APP_BIN = "/Applications/QualysCloudAgent.app/Contents/MacOS"
STAGED = "/private/var/tmp/agent.pkg"
HOSTID = "/etc/qualys/hostid"  # HostIdSearchDir's default, /etc/, as fleetctl's playbook sets it
HOSTID_TIMEOUT_S = 60  # fleetctl's verify_timeout in playbooks/rollout.yml
POLL_S = 0.5  # fleetctl's verify polls every 0.5 s
WAIT_HOSTID = True


def wait_loop(path: str = HOSTID) -> str:
    """A bounded polling loop in sh: until PATH exists and is not empty, at most HOSTID_TIMEOUT_S."""
    tries = int(HOSTID_TIMEOUT_S / POLL_S)
    return (f"i=0; until [ -s {path} ]; do [ $i -ge {tries} ] && echo 'no hostid after {HOSTID_TIMEOUT_S} s' >&2 "
            f"&& exit 1; sleep {POLL_S}; i=$((i + 1)); done")


def hosts_of(inventory: dict) -> list[dict]:
    return [{"name": n, **h} for n, h in inventory["all"]["hosts"].items()]


def ansible(work: Path, inventory: dict, pkgs: dict[str, Path], ids: dict[str, str], forks: int,
            peers_bin: Path) -> list[str]:
    v = inventory["all"]["vars"]
    work.mkdir(parents=True, exist_ok=True)
    lines = []
    for arch in ("arm64", "x86_64"):
        lines.append(f"[{arch}]")
        lines += [f"{h['name']} ansible_host={h['ansible_host']}" for h in hosts_of(inventory) if h["lab_personas"][0] == arch]
        lines += [f"[{arch}:vars]", f"pkg={pkgs[arch]}"]
    lines += ["[all:vars]", "ansible_user=admin", f"ansible_ssh_private_key_file={v['ansible_ssh_private_key_file']}",
              "ansible_python_interpreter=/usr/bin/python3"]
    (work / "inventory.ini").write_text("\n".join(lines) + "\n")
    (work / "ansible.cfg").write_text(f"""[defaults]
inventory = {work / 'inventory.ini'}
forks = {forks}
gathering = explicit
strategy = free
host_key_checking = True
retry_files_enabled = False
[ssh_connection]
pipelining = True
control_path_dir = {work / 'cp'}
ssh_args = -o ControlMaster=auto -o ControlPersist=120s -o UserKnownHostsFile={v['fleetctl_known_hosts']} -o StrictHostKeyChecking=yes
""")
    wait_task = (f"""    - name: wait for the hostid (the agent has reached the platform)
      wait_for: {{path: {HOSTID}, search_regex: ".", timeout: {HOSTID_TIMEOUT_S}}}
""" if WAIT_HOSTID else "")
    (work / "rollout.yml").write_text(f"""- hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: upload the package
      copy: {{src: "{{{{ pkg }}}}", dest: {STAGED}, mode: "0600"}}
    - name: install
      command: installer -pkg {STAGED} -target /
      args: {{creates: {APP_BIN}/qualys-cloud-agent.sh}}
    - name: provision
      command: {APP_BIN}/qualys-cloud-agent.sh ActivationId={ids['activation']} CustomerId={ids['customer']} ServerUri={v['server_uri']}
      args: {{creates: {HOSTID}}}
{wait_task}    - name: verify
      command: pkgutil --pkg-info com.qualys.cloud-agent
      changed_when: false
""")
    (work / "status.yml").write_text("""- hosts: all
  gather_facts: false
  become: true
  tasks:
    - command: pkgutil --pkg-info com.qualys.cloud-agent
      changed_when: false
    - command: launchctl list com.qualys.cloud-agent
      changed_when: false
    - command: test -s /etc/qualys/hostid
      changed_when: false
    - command: tail -n 500 /var/log/qualys/qualys-cloud-agent.log
      changed_when: false
""")
    return [str(peers_bin / "ansible-playbook"), str(work / "rollout.yml")]


def pyinfra(work: Path, inventory: dict, pkgs: dict[str, Path], ids: dict[str, str], forks: int,
            peers_bin: Path) -> list[str]:
    v = inventory["all"]["vars"]
    work.mkdir(parents=True, exist_ok=True)
    hosts = [(h["ansible_host"], {"ssh_user": "admin", "ssh_key": v["ansible_ssh_private_key_file"],
                                  "ssh_known_hosts_file": v["fleetctl_known_hosts"],
                                  "ssh_strict_host_key_checking": "yes", "pkg": str(pkgs[h["lab_personas"][0]])})
             for h in hosts_of(inventory)]
    (work / "inventory.py").write_text(f"macs = {hosts!r}\n")
    wait_op = (f"""

@operation(is_idempotent=False)
def wait_for_file(path: str, timeout: int = {HOSTID_TIMEOUT_S}):
    \"\"\"Until PATH exists and is not empty, at most TIMEOUT s (a polling loop, as server.wait).\"\"\"
    tries = int(timeout / {POLL_S})
    yield f"i=0; until [ -s {{path}} ]; do [ $i -ge {{tries}} ] && exit 1; sleep {POLL_S}; i=$((i + 1)); done"


wait_for_file(name="wait for the hostid (the agent has reached the platform)", path="{HOSTID}")
""" if WAIT_HOSTID else "")
    (work / "deploy.py").write_text(f"""from pyinfra import host
from pyinfra.api import operation
from pyinfra.operations import files, server

files.put(name="upload the package", src=host.data.pkg, dest="{STAGED}", mode="600", _sudo=True)
server.shell(name="install", _sudo=True,
             commands=["test -e {APP_BIN}/qualys-cloud-agent.sh || installer -pkg {STAGED} -target /"])
server.shell(name="provision", _sudo=True, commands=[
    "test -s {HOSTID} || {APP_BIN}/qualys-cloud-agent.sh ActivationId={ids['activation']} "
    "CustomerId={ids['customer']} ServerUri={v['server_uri']}"])
{wait_op}
server.shell(name="verify", commands=["pkgutil --pkg-info com.qualys.cloud-agent"])
""")
    return [str(peers_bin / "pyinfra"), str(work / "inventory.py"), str(work / "deploy.py"), "-y",
            "--parallel", str(forks)]


def raw(work: Path, inventory: dict, pkgs: dict[str, Path], ids: dict[str, str], forks: int,
        peers_bin: Path) -> list[str]:
    """The floor: plain OpenSSH, every Mac at once, one session streaming the package into cat."""
    v = inventory["all"]["vars"]
    work.mkdir(parents=True, exist_ok=True)
    script = (f"cat > {STAGED} && sudo installer -pkg {STAGED} -target / && sudo {APP_BIN}/qualys-cloud-agent.sh "
              f"ActivationId={ids['activation']} CustomerId={ids['customer']} ServerUri={v['server_uri']} "
              + (f"&& {{ {wait_loop()}; }} " if WAIT_HOSTID else "")
              + "&& pkgutil --pkg-info com.qualys.cloud-agent")
    jobs = [{"argv": ["ssh", "-i", v["ansible_ssh_private_key_file"], "-o", f"UserKnownHostsFile={v['fleetctl_known_hosts']}",
                      "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"admin@{h['ansible_host']}", script],
             "stdin": str(pkgs[h["lab_personas"][0]])} for h in hosts_of(inventory)]
    (work / "jobs.json").write_text(json.dumps(jobs))
    return [sys.executable, "-m", "bench.parallel_ssh", str(work / "jobs.json")]
