"""ansible-core is the oracle: for every inventory in tests/unit/inventories/ (each says in a
comment what part of Ansible's INI and YAML inventory documentation it covers), ansible-core's
own `ansible-inventory --list` and `fleetctl inventory --list` must print the same groups, the
same members in the same order, and the same value and type for every host variable; and
Ansible's ssh connection must reach each host where fleetctl would (address, port, user, key).

Where fleetctl differs on purpose, this module says so (`deliberately`, REFUSED). ansible-inventory
runs offline (no socket). It takes ~0.5 s to start, mostly importing ansible, so one Python
process imports ansible once and runs the venv's `ansible-inventory` script (runpy, as its
shebang would) in a fresh fork for each inventory, two at a time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fleetctl import inventory
from fleetctl.cli import cli
from fleetctl.errors import UsageError

CORPUS = Path(__file__).with_name("inventories")
ANSIBLE_INVENTORY = Path(sys.executable).with_name("ansible-inventory")
CASES = sorted(d.name for d in CORPUS.iterdir() if d.is_dir() and not d.name.startswith("refused-"))
GRAPH_CASES = ["ini-children", "yaml-children", "inventory-directory", "groups-without-hosts"]
# Inventories ansible-core reads with a warning (skipping the file or an entry) and fleetctl
# refuses (exit 2), deliberately: a typo must not silently shrink a rollout.
REFUSED = {
    "refused-undefined-child": ("includes undefined group 'nothere'", "includes undefined group 'nothere'"),
    "refused-vars-undefined-group": ("not valid for undefined group 'db'", "[db:vars] is for group 'db'"),
    "refused-reversed-range": (None, "host range [50:01] is empty"),
    "refused-unknown-yaml-key": ("Skipping unexpected key (hostz)", "unknown key 'hostz' in group 'macs'"),
    "refused-yaml-group-not-mapping": ("Skipping 'macs' as this is not a valid group definition",
                                       "group 'macs' must be a mapping"),
}
# Runs the ansible-inventory script once per job (a list of arguments), each in its own fork,
# two at a time; prints [exit status, stdout, stderr] per job.
DRIVER = """
import json, os, runpy, sys, tempfile
import ansible.cli.inventory, ansible.inventory.manager, ansible.vars.manager, ansible.parsing.dataloader
import ansible.plugins.inventory.ini, ansible.plugins.inventory.yaml, ansible.plugins.vars.host_group_vars

def start(args):
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.argv, code = [sys.argv[1], *args], 0
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return pid, out, err

def finish(results, running):
    pid, status = os.wait()
    index, out, err = running.pop(pid)
    out.seek(0)
    err.seek(0)
    results[index] = [os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode()]

jobs, running, results = json.load(sys.stdin), {}, {}
for index, args in enumerate(jobs):
    if len(running) == 2:
        finish(results, running)
    pid, out, err = start(args)
    running[pid] = index, out, err
while running:
    finish(results, running)
print(json.dumps([results[i] for i in range(len(jobs))]))
"""
# How Ansible's ssh connection picks its endpoint from a host's variables (run in a subprocess).
SSH_OPTIONS = """
import json, sys
from ansible.plugins.loader import connection_loader
from ansible.playbook.play_context import PlayContext
conn = connection_loader.get("ssh", PlayContext(), None)
out = {}
for key, hostvars in json.load(sys.stdin).items():
    conn.set_options(var_options=hostvars)
    out[key] = [conn.get_option(o) for o in ("host", "port", "remote_user", "private_key_file")]
print(json.dumps(out))
"""


def source(case: str) -> Path:
    """The -i path of a case: its one entry named hosts* (a file, or a directory of files)."""
    (path,) = [p for p in (CORPUS / case).iterdir() if p.name.startswith("hosts")]
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """An empty directory to run Ansible in, with an empty ansible.cfg of its own."""
    home = tmp_path_factory.mktemp("ansible")
    (home / "ansible.cfg").write_text("")
    return home


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(home / "ansible.cfg"), "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}


@pytest.fixture(scope="module")
def ansible(home) -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """ansible-inventory --list (and --graph for a few) on every case, offline."""
    jobs = [(c, "--list") for c in [*CASES, *REFUSED]] + [(c, "--graph") for c in GRAPH_CASES]
    done = subprocess.run([sys.executable, "-c", DRIVER, str(ANSIBLE_INVENTORY)], capture_output=True, text=True,
                          input=json.dumps([["-i", str(source(c)), what] for c, what in jobs]), timeout=300,
                          env=_env(home), cwd=home)
    assert done.returncode == 0, done.stderr
    return {job: subprocess.CompletedProcess(job, *result) for job, result in zip(jobs, json.loads(done.stdout))}


@pytest.fixture(scope="module")
def ansible_endpoints(ansible, home) -> dict[str, list]:
    """(host, port, user, key file) as Ansible's ssh connection resolves them, per case/host."""
    hostvars = {}
    for case in CASES:
        listed = json.loads(ansible[(case, "--list")].stdout)
        names = {h for g in listed.values() for h in g.get("hosts", [])} if isinstance(listed, dict) else set()
        for name in names:
            hostvars[f"{case}/{name}"] = {**_plain(listed["_meta"]["hostvars"].get(name, {})),
                                          "inventory_hostname": name}
    done = subprocess.run([sys.executable, "-c", SSH_OPTIONS], input=json.dumps(hostvars), capture_output=True,
                          text=True, timeout=60, env=_env(home), cwd=home)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _plain(value: Any) -> Any:
    """ansible-inventory marks text it will not template as {"__ansible_unsafe": text}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def deliberately(listed: dict) -> dict:
    """What fleetctl shows instead of ansible-core's listing, on purpose:
    - a password written in the inventory (sudo or SSH) is never shown: REFUSED stands in for it
      (and `run`/`plan` refuse that host);
    - a sudo password given as a keyring reference also yields fleetctl_become_secret: NAME;
    - `_meta.profile` (ansible-core's internal encoder name) is left out."""
    listed = _plain(listed)
    listed["_meta"].pop("profile", None)
    for hostvars in listed["_meta"]["hostvars"].values():
        for key in (*inventory.BECOME_PASSWORDS, *inventory.LOGIN_PASSWORDS):
            value = hostvars.get(key)
            match = inventory.KEYRING_LOOKUP.fullmatch(str(value).strip()) if value is not None else None
            if match and key in inventory.BECOME_PASSWORDS:
                hostvars.setdefault("fleetctl_become_secret", match[1])
            elif value is not None and not match:
                hostvars[key] = inventory.REFUSED
    return listed


def fleetctl(*args: str):
    return CliRunner().invoke(cli, ["inventory", *args], catch_exceptions=False)


def test_the_corpus_covers_the_documentation():
    assert len(CASES) + len(REFUSED) >= 25
    for path in CORPUS.rglob("*"):
        if path.is_file():
            assert "covers" in path.read_text(), f"{path} does not say what it covers"
    assert set(REFUSED) == {d.name for d in CORPUS.iterdir() if d.name.startswith("refused-")}


@pytest.mark.parametrize("case", CASES)
def test_fleetctl_lists_what_ansible_inventory_lists(ansible, case):
    done = ansible[(case, "--list")]
    assert done.returncode == 0 and "Failed to parse" not in done.stderr, done.stderr
    expected = deliberately(json.loads(done.stdout))
    ours = fleetctl("-i", str(source(case)), "--list")
    assert ours.exit_code == 0, ours.output
    assert json.loads(ours.stdout) == expected  # groups, member order, every variable's value and type


@pytest.mark.parametrize("case", CASES)
def test_fleetctl_connects_where_ansible_would(ansible_endpoints, case):
    """Address, port, user and key file, after old spellings, aliases and precedence."""
    hosts = inventory.load(source(case), warn=None).hosts
    for name, host in hosts.items():
        address, port, user, key = ansible_endpoints[f"{case}/{name}"]
        assert (host.address, host.port, host.user, host.key_file) == (address, port, user, key), name


@pytest.mark.parametrize("case", GRAPH_CASES)
def test_graph_matches_ansible_inventory(ansible, case):
    assert fleetctl("-i", str(source(case)), "--graph").stdout == ansible[(case, "--graph")].stdout


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_fleetctl_refuses_on_purpose(ansible, case):
    ansible_says, fleetctl_says = REFUSED[case]
    done = ansible[(case, "--list")]
    assert done.returncode == 0  # ansible-core goes on, without (some of) the hosts
    if ansible_says:
        assert ansible_says in " ".join(done.stderr.split()), done.stderr
    with pytest.raises(UsageError) as refused:
        inventory.load(source(case), warn=None)
    assert fleetctl_says in str(refused.value) and str(source(case)) + ":" in str(refused.value)


def test_both_warn_about_a_host_named_like_a_group(ansible):
    assert "Found both group and host with same name: db" in ansible[("same-name-host-group", "--list")].stderr
    ours = fleetctl("-i", str(source("same-name-host-group")), "--list")
    assert "host 'db' and group 'db' share a name" in ours.stderr and "'cache'" in ours.stderr
