"""One simulated fleet for the whole fleet test session, reached with plain OpenSSH."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

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
])
HOSTS = 24
FLEETCTL = Path(sys.executable).with_name("fleetctl")
ACTIVATION = "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11"
CUSTOMER = "8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22"
APP_BIN = "/Applications/QualysCloudAgent.app/Contents/MacOS"
LOG = "/var/log/qualys/qualys-cloud-agent.log"


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

    def wait_log(self, needle: str, timeout: float = 15) -> str:
        """The agent log once it contains NEEDLE (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.run(f"cat {LOG} 2>/dev/null").stdout
            if needle in text or time.monotonic() > deadline:
                assert needle in text, f"{self.name}: {needle!r} not in agent log within {timeout}s:\n{text}"
                return text
            time.sleep(0.3)

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

    def wait_checkin(self, hostid: str, timeout: float = 15, **fields) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.checkins() if c["hostid"] == hostid and fields.items() <= c.items()]
            if found or time.monotonic() > deadline:
                assert found, f"no check-in from {hostid} with {fields} within {timeout}s"
                return found[-1]
            time.sleep(0.3)

    def proxy_password(self) -> str:
        return (self.dir / "proxy-password").read_text().strip()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    if os.geteuid() != 0:
        pytest.fail("fleet tests need root (network and mount namespaces): run them with `make test` as root")
    lab_dir = tmp_path_factory.mktemp("fleetlab")
    fleetctl("lab", "up", "--hosts", str(HOSTS), "--personas", PERSONAS, "--dir", str(lab_dir))
    try:
        yield Lab(lab_dir, yaml.safe_load((lab_dir / "inventory.yml").read_text()))
    finally:
        fleetctl("lab", "down", "--dir", str(lab_dir))
