"""Bad inventories, playbooks, options and secrets stop `fleetctl run` with file:line and a fix,
before any Mac is contacted (the inventory's addresses are never reachable from here)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleetctl import agent, inventory
from fleetctl.errors import UsageError
from fleetctl.lab import pkgbuild

FLEETCTL = Path(sys.executable).with_name("fleetctl")
ACTIVATION = "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11"
CUSTOMER = "8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22"


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pkgs")
    return {a: pkgbuild.build(d / f"{a}.pkg", "6.1.0.20", a, size_mb=1) for a in ("arm64", "x86_64")}


def write_inventory(path: Path, pkgs: dict[str, Path], **host_vars) -> Path:
    doc = {"all": {
        "vars": {"agent_pkg_arm64": str(pkgs["arm64"]), "agent_pkg_x86_64": str(pkgs["x86_64"]),
                 "server_uri": "https://qagpublic.qg1.fleetlab.test/CloudAgent"},
        "hosts": {"mac-a": {"ansible_host": "198.18.255.254", **host_vars}},
        "children": {"office": {"hosts": {"mac-b": {"ansible_host": "198.18.255.253"}}, "vars": {"LogLevel": 1}}},
    }}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def fleetctl(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "FLEETCTL_ACTIVATION_ID": ACTIVATION, "FLEETCTL_CUSTOMER_ID": CUSTOMER,
           "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring", **(env_extra or {})}
    return subprocess.run([str(FLEETCTL), *args], capture_output=True, text=True, timeout=60, env=env)


def test_inventory_merges_all_group_host_and_limits(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text("""all:
  vars: {a: all, b: all, c: all}
  hosts:
    h1: {c: host}
  children:
    site:
      vars: {a: site, b: site}
      children:
        office:
          vars: {b: office}
          hosts:
            h2:
            h1:
""")
    inv = inventory.load(path)
    assert inv.hosts["h1"].vars == {"a": "site", "b": "office", "c": "host"}
    assert inv.hosts["h2"].vars == {"a": "site", "b": "office", "c": "all"}
    assert inv.groups == {"site": {"h1", "h2"}, "office": {"h1", "h2"}}
    assert [h.name for h in inv.select("office:!h2")] == ["h1"]
    assert [h.name for h in inv.select("h*")] == ["h1", "h2"]
    with pytest.raises(UsageError, match="matches no host"):
        inv.select("nothere")


@pytest.mark.parametrize("agent_options, words", [
    ({"LogLevel": 7}, "LogLevel must be a whole number from 0 to 5"),
    ({"ProcessPriority": 40}, "ProcessPriority must be a whole number from -20 to 19"),
    ({"Colour": "blue"}, "unknown option 'Colour'"),
    ({"ActivationId": ACTIVATION}, "is a secret"),
    ({"LogDestType": "console"}, "LogDestType must be one of file, syslog"),
])
def test_bad_playbook_options_exit_2_with_line(tmp_path, pkgs, agent_options, words):
    playbook = tmp_path / "p.yml"
    playbook.write_text(yaml.safe_dump({"action": "install", "agent": agent_options}))
    done = fleetctl("run", str(playbook), "-i", str(write_inventory(tmp_path / "i.yml", pkgs)))
    assert done.returncode == 2, done.stderr
    assert f"{playbook}:3:" in done.stderr.replace("\n", "") and words in done.stderr.replace("\n", " ")


@pytest.mark.parametrize("host_vars, words", [
    ({"proxy_urls": [f"https://p{i}.example:3128" for i in range(6)]}, "1 to 5 proxies"),
    ({"proxy_urls": ["proxy.example:3128"]}, "has no scheme"),
    ({"proxy_urls": ["https://u:p@proxy.example:3128"]}, "contains credentials"),
    ({"proxy_urls": ["https://proxy.example"], "proxy_user": "u"}, "proxy_password_secret"),
    ({"agent_pkg_arm64": "/nonexistent/QualysCloudAgent.pkg"}, "cannot read package"),
    ({"server_uri": "http://qualys.example/CloudAgent"}, "server_uri"),
    ({"agent_pkg_ppc": "/x.pkg"}, "unknown architecture 'ppc'"),
])
def test_bad_host_settings_exit_2(tmp_path, pkgs, host_vars, words):
    playbook = Path(__file__).resolve().parents[2] / "playbooks/rollout.yml"
    done = fleetctl("run", str(playbook), "-i", str(write_inventory(tmp_path / "i.yml", pkgs, **host_vars)))
    assert done.returncode == 2 and words in done.stderr.replace("\n", " "), done.stderr
    assert "i.yml:" in done.stderr.replace("\n", "")


def test_package_for_the_wrong_arch_is_refused(tmp_path, pkgs):
    inv = write_inventory(tmp_path / "i.yml", {"arm64": pkgs["x86_64"], "x86_64": pkgs["x86_64"]})
    done = fleetctl("plan", str(Path(__file__).resolve().parents[2] / "playbooks/rollout.yml"), "-i", str(inv))
    assert done.returncode == 2 and "built for x86_64, not arm64" in done.stderr.replace("\n", " ")


def test_secrets_must_exist_and_be_uuids(tmp_path, pkgs):
    playbook = str(Path(__file__).resolve().parents[2] / "playbooks/rollout.yml")
    inv = str(write_inventory(tmp_path / "i.yml", pkgs))
    missing = fleetctl("run", playbook, "-i", inv, env_extra={"FLEETCTL_ACTIVATION_ID": ""})
    assert missing.returncode == 2 and "fleetctl secrets set activation_id" in missing.stderr.replace("\n", " ")
    bad = fleetctl("run", playbook, "-i", inv, env_extra={"FLEETCTL_CUSTOMER_ID": "not-a-uuid-secret"})
    assert bad.returncode == 2 and "must be a UUID" in bad.stderr and "not-a-uuid-secret" not in bad.stderr


def test_plan_shows_scripts_with_placeholders_not_secrets(tmp_path, pkgs):
    inv = write_inventory(tmp_path / "i.yml", pkgs, proxy_urls=["https://proxy.example:3128"], proxy_user="svc",
                          proxy_password_secret="proxy_pw")
    done = fleetctl("plan", str(Path(__file__).resolve().parents[2] / "playbooks/rollout.yml"), "-i", str(inv),
                    env_extra={"FLEETCTL_PROXY_PW": "hunter2hunter2"})
    assert done.returncode == 0, done.stderr
    assert "installer -pkg" in done.stdout and "ActivationId=SECRET.activation_id" in done.stdout
    assert "qualys_https_proxy=https://svc:SECRET.proxy_pw@proxy.example:3128" in done.stdout
    assert ACTIVATION not in done.stdout and "hunter2" not in done.stdout
    assert "1 host(s): mac-a" in done.stdout and "1 host(s): mac-b" in done.stdout


S = agent.ProxyServer


@pytest.mark.parametrize("proxy, content", [
    (agent.Proxy((S("https://10.0.0.1:3128"),)), "qualys_https_proxy=https://10.0.0.1:3128\n"),
    (agent.Proxy((S("https://a:1", "u", "p@ss:w$rd;"), S("https://b:2", "o@x;2", "b")), "https_proxy"),
     'https_proxy="https://u:p%40ss%3Aw%24rd%3B@a:1;https://o%40x%3B2:b@b:2"\n'),
    (agent.Proxy((S("https://a:1", "#dXNlcg==", "#cGFzcw=="),)), "qualys_https_proxy=https://#dXNlcg==:#cGFzcw==@a:1\n"),
    # the guide's own example encrypts only the password
    (agent.Proxy((S("https://a:1", "svc@corp", "#cGFzcw=="),)), "qualys_https_proxy=https://svc%40corp:#cGFzcw==@a:1\n"),
    (agent.Proxy((S("https://a:1"), S("https://b", "u", "p")), no_proxy="qualys.com"),
     'export qualys_https_proxy="https://a:1;https://u:p@b"\nexport no_proxy=qualys.com\n'),
])
def test_proxy_file_content_is_exactly_per_spec(proxy, content):
    assert proxy.file_content() == content


def test_secrets_cli_round_trip_with_a_file_keyring(tmp_path):
    env = {"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring", "XDG_DATA_HOME": str(tmp_path),
           "HOME": str(tmp_path)}
    stored = subprocess.run([str(FLEETCTL), "secrets", "set", "activation_id"], input=ACTIVATION + "\n",
                            capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin"})
    assert stored.returncode == 0 and ACTIVATION not in stored.stdout
    got = fleetctl("secrets", "get", "activation_id", env_extra=env)
    assert got.stdout.strip() == "activation_id is set"
    assert fleetctl("secrets", "get", "activation_id", "--show", env_extra=env).stdout.strip() == ACTIVATION
    assert fleetctl("secrets", "delete", "activation_id", env_extra=env).returncode == 0
    assert fleetctl("secrets", "get", "activation_id", env_extra=env).returncode == 1
