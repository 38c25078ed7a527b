"""One simulated fleet for the whole fleet test session, reached with plain OpenSSH."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from fleetctl.lab import podlimits, proxy

# One host per persona (and a few healthy spares), so tests that change a Mac never collide.
PERSONAS = ",".join([
    "arm64",                    # mac-001 install/provision walk-through
    "x86_64+macos12",           # mac-002
    "macos13+lowdisk",          # mac-003
    "macos14+lowmem",           # mac-004
    "sudo-password",            # mac-005
    "nosudo",                   # mac-006
    "root-login",               # mac-007
    "installer-fails",          # mac-008
    "drop-mid-transfer",        # mac-009
    "unreachable",              # mac-010
    "slowlink",                 # mac-011
    "proxy-only",               # mac-012
    "agent-crashes",            # mac-013
    "arm64",                    # mac-014 upgrade/uninstall
    "x86_64",                   # mac-015 legacy tool path
    "proxy-only",               # mac-016 several proxies
    "arm64",                    # mac-017 no_proxy / options
    "arm64",                    # mac-018 on-demand scans
    "jump-host",                # mac-019 the bastion for the next three
    "behind-bastion",           # mac-020 reached with ProxyJump only
    "behind-bastion+x86_64",    # mac-021
    "behind-bastion",           # mac-022
    "arm64",                    # mac-023 MDM exports
    "x86_64",                   # mac-024 MDM exports
    "chatty-agent",             # mac-025 unknown log lines with alarming words
    "log-errors",               # mac-026 an [Error] line after every contact
    "arm64",                    # mac-027 LogDestType=syslog and `log show`
    "arm64",                    # mac-028 HostIdSearchDir change
    "proxy-only",               # mac-029 per-proxy credentials / proxy removal
    "arm64",                    # mac-030 run-as user / uninstall keeps the hostid
    "x86_64",                   # mac-031 upgrade with no x86 package
    # mac-025..031 serve the controller's tests fresh; the lab's own agent tests use these:
    "chatty-agent",             # mac-032 lab: the chatty agent's lines
    "log-errors",               # mac-033 lab: an [Error] after each contact
    "arm64",                    # mac-034 lab: LogDestType=syslog and `log show`
    "proxy-only",               # mac-035 lab: per-proxy credentials, string-util, proxy removal
    "arm64",                    # mac-036 lab: HostIdSearchDir, run-as account, reinstall keeps the hostid
    # fleetctl doctor: Macs built to differ from what fleetctl assumes
    "rsr-extra",                # mac-037 sw_vers prints ProductVersionExtra
    "odd-log",                  # mac-038 the agent's log in another format
    "clock-skew",               # mac-039 10 minutes ahead
    "no-openssl",               # mac-040 no openssl
    # fleetctl doctor: Macs untouched by other tests where every assumption must hold
    "x86_64+macos12",           # mac-041
    "sudo-password+macos13",    # mac-042
    "root-login+macos14",       # mac-043
    "proxy-only",               # mac-044
    "slowlink",                 # mac-045
    "behind-bastion",           # mac-046
])
HOSTS = 46
FLEETCTL = Path(sys.executable).with_name("fleetctl")
ACTIVATION = "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11"
CUSTOMER = "8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22"
APP_BIN = "/Applications/QualysCloudAgent.app/Contents/MacOS"
LOG = "/var/log/qualys/qualys-cloud-agent.log"
HOSTID = "/etc/qualys/hostid"
MANIFESTS = "'/Library/Application Support/QualysCloudAgent/Data/manifests'"


def fleetctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(FLEETCTL), *args], capture_output=True, text=True, timeout=180)
    if check and done.returncode != 0:
        raise AssertionError(f"fleetctl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


@dataclass
class Mac:
    """A simulated Mac as an SSH client sees it."""

    name: str
    address: str
    user: str
    personas: list[str]
    lab: "Lab"

    def _ssh(self, user: str | None) -> list[str]:
        return ["ssh", "-i", str(self.lab.key), "-o", f"UserKnownHostsFile={self.lab.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "LogLevel=ERROR", "-l", user or self.user, self.address]

    def run(self, command: str, user: str | None = None, stdin: str | bytes | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        text = not isinstance(stdin, bytes)
        done = subprocess.run([*self._ssh(user), command], input=stdin, capture_output=True, text=text,
                              timeout=timeout)
        return done

    def ok(self, command: str, **kw) -> str:
        done = self.run(command, **kw)
        assert done.returncode == 0, f"{self.name}: {command!r} -> {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout

    def put(self, local: Path, remote: str) -> None:
        subprocess.run(["scp", "-q", "-i", str(self.lab.key), "-o", f"UserKnownHostsFile={self.lab.known_hosts}",
                        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", str(local),
                        f"{self.user}@{self.address}:{remote}"], check=True, timeout=120)

    def count(self, command: str) -> int:
        done = self.run(f"cat /private/var/fleetlab/counts/{command} 2>/dev/null || echo 0")
        return int(done.stdout.strip())

    def install(self, pkg: Path | None = None) -> str:
        pkg = pkg or self.lab.pkg(self.arch)
        self.put(pkg, "/private/var/tmp/agent.pkg")
        return self.ok("sudo installer -pkg /private/var/tmp/agent.pkg -target /")

    def provision(self, *extra: str) -> str:
        return self.ok(f"sudo {APP_BIN}/qualys-cloud-agent.sh ActivationId={ACTIVATION} CustomerId={CUSTOMER} "
                       + " ".join(extra))

    def wait_log(self, needle: str, timeout: float = 15, after: str = "") -> str:
        """The agent log once it contains NEEDLE (bounded wait); AFTER: only the text after
        that earlier content of the log (pass a previous read to wait for new lines)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.run(f"cat {LOG} 2>/dev/null").stdout
            if after and text.startswith(after):
                text = text[len(after):]
            if needle in text or time.monotonic() > deadline:
                assert needle in text, f"{self.name}: {needle!r} not in agent log within {timeout}s:\n{text}"
                return text
            time.sleep(0.3)

    def wait_hostid(self, path: str = HOSTID, timeout: float = 15) -> str:
        """The hostid the agent wrote after reaching the platform (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            hostid = self.run(f"cat {path} 2>/dev/null").stdout.strip()
            if hostid or time.monotonic() > deadline:
                assert hostid, f"{self.name}: no hostid at {path} within {timeout}s"
                return hostid
            time.sleep(0.2)

    def wait_manifests(self, timeout: float = 15) -> None:
        """The module manifests the agent fetches on its first contact."""
        deadline = time.monotonic() + timeout
        while self.run(f"sudo test -e {MANIFESTS}/inv.db").returncode:
            assert time.monotonic() < deadline, f"{self.name}: no manifests within {timeout}s"
            time.sleep(0.2)

    def log_show(self, options: str, sudo: bool = True) -> subprocess.CompletedProcess:
        """macOS `log show` for the agent's process (the unified log store is root-only)."""
        predicate = "--predicate 'process == \"qualys-cloud-agent\"'"
        return self.run(f"{'sudo ' if sudo else ''}log show {options} {predicate}")

    @property
    def arch(self) -> str:
        return self.personas[0]


@dataclass
class Lab:
    dir: Path
    inventory: dict

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def mac(self, name: str) -> Mac:
        h = self.inventory["all"]["hosts"][name]
        return Mac(name, h["ansible_host"], h["ansible_user"], h["lab_personas"], self)

    def pkg(self, arch: str) -> Path:
        return Path(self.inventory["all"]["vars"][f"agent_pkg_{arch}"])

    def checkins(self) -> list[dict]:
        path = self.dir / "pod" / "checkins.jsonl"
        return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []

    def checkins_from(self, mac: Mac) -> list[dict]:
        return [c for c in self.checkins() if c["hostname"] == mac.name]

    def wait_checkin(self, hostid: str, timeout: float = 15, after: int = 0, **fields) -> dict:
        """The latest check-in for HOSTID with FIELDS, among those after the first AFTER ones."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.checkins()[after:] if c["hostid"] == hostid and fields.items() <= c.items()]
            if found or time.monotonic() > deadline:
                assert found, f"no check-in from {hostid} with {fields} within {timeout}s"
                return found[-1]
            time.sleep(0.3)

    def proxy_password(self, user: str = proxy.USER) -> str:
        return proxy.password(self.dir, user)

    def proxy_url(self, user: str | None = None, password: str | None = None) -> str:
        """The lab proxy as the agent's proxy file writes it: credentials percent-encoded."""
        base = self.inventory["all"]["vars"]["lab_proxy_url"]
        if user is None:
            return base
        secret = self.proxy_password(user) if password is None else password
        return base.replace("https://", f"https://{quote(user, safe='')}:{quote(secret, safe='')}@")

    def api_settings(self) -> dict:
        """DIR/pod/api.json: the pod API's user, subscription, modules and limits (lab/podlimits.py)."""
        return json.loads((self.dir / "pod" / "api.json").read_text())

    def set_api(self, **changes) -> dict:
        """Change api.json while the lab runs (the pod reads it on every call); returns the old settings."""
        old = self.api_settings()
        (self.dir / "pod" / "api.json").write_text(json.dumps({**old, **changes}))
        return old

    def api_credentials(self) -> tuple[str, str]:
        """The pod API's user and password, as the inventory points to them."""
        vars_ = self.inventory["all"]["vars"]
        return vars_["lab_api_user"], Path(vars_["lab_api_password_file"]).read_text().strip()

    def proxy_access(self) -> list[dict]:
        """What the lab proxy's front recorded: client, target, user, outcome."""
        path = self.dir / "proxy" / "access.jsonl"
        return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def lab_env(lab_dir: Path) -> dict:
    """What a rollout on LAB_DIR's Macs needs: the lab's secrets and a journal of its own."""
    env = {**os.environ, "FLEETCTL_ACTIVATION_ID": ACTIVATION, "FLEETCTL_CUSTOMER_ID": CUSTOMER,
           "FLEETCTL_STATE_DIR": str(lab_dir / "state")}
    for secret, name in (("FLEETCTL_LAB_SUDO_PASSWORD", "sudo-password"),
                         ("FLEETCTL_LAB_PROXY_PASSWORD", "proxy-password"),
                         ("FLEETCTL_QUALYS_API_PASSWORD", "api-password")):
        if (lab_dir / name).exists():
            env[secret] = (lab_dir / name).read_text().strip()
    if (lab_dir / "api-password").exists():  # the pod API's user (lab/podlimits.py), for fleetctl platform
        env["FLEETCTL_QUALYS_API_USER"] = podlimits.API_USER
    return env


def _start(lab_dir: Path, hosts: int, personas: str, *extra: str) -> Lab:
    if os.geteuid() != 0:
        pytest.fail("fleet tests need root (network and mount namespaces): run them with `make test` as root")
    fleetctl("lab", "up", "--hosts", str(hosts), "--personas", personas, "--dir", str(lab_dir), *extra)
    return Lab(lab_dir, yaml.safe_load((lab_dir / "inventory.yml").read_text()))


@pytest.fixture(scope="module")
def make_lab(tmp_path_factory: pytest.TempPathFactory):
    """A lab of its own for one test module: make_lab(hosts, personas, name, *lab_up_options) -> (Lab, env).
    Every lab it started is taken down when the module ends, whatever happened."""
    started: list[Path] = []

    def make(hosts: int, personas: str = "", name: str = "lab", *extra: str) -> tuple[Lab, dict]:
        lab_dir = tmp_path_factory.mktemp(name)
        started.append(lab_dir)
        return _start(lab_dir, hosts, personas, *extra), lab_env(lab_dir)

    yield make
    for lab_dir in started:
        fleetctl("lab", "down", "--dir", str(lab_dir), check=False)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """The session's lab: one host per persona, shared by the modules that use `lab`."""
    lab_dir = tmp_path_factory.mktemp("fleetlab")
    try:
        yield _start(lab_dir, HOSTS, PERSONAS)
    finally:
        fleetctl("lab", "down", "--dir", str(lab_dir), check=False)
