"""The inventory's model: hosts with Ansible's variable names, groups, --limit, and the
checks that refuse a host whose variables cannot work (only when a run selects it)."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetctl.errors import UsageError

KEYRING_LOOKUP = re.compile(r"""\{\{\s*lookup\(\s*['"](?:community\.general\.)?keyring['"]\s*,\s*"""
                            r"""['"]fleetctl\s+([A-Za-z0-9_]+)['"]\s*\)\s*\}\}""")
BECOME_PASSWORDS = ("ansible_become_password", "ansible_become_pass", "ansible_sudo_pass")  # last set wins
LOGIN_PASSWORDS = ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password")
REFUSED = "<refused: a password in the inventory>"
SSH_CONNECTIONS = ("ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh", "ansible.legacy.ssh",
                   "ansible.builtin.paramiko_ssh")


@dataclass
class Host:
    name: str
    vars: dict[str, Any]
    groups: list[str] = field(default_factory=list)
    line: int = 0
    source: Path = Path("inventory")
    problems: list[str] = field(default_factory=list)  # found while reading: run and plan refuse the host

    def setting(self, *names: str) -> tuple[str, Any]:
        """The last of NAMES that is set and not null, as Ansible's ssh connection reads its
        options (ansible_ssh_user wins over ansible_user when both are set)."""
        found: tuple[str, Any] = (names[-1], None)
        for name in names:
            if self.vars.get(name) is not None:
                found = (name, self.vars[name])
        return found

    @property
    def address(self) -> str:
        value = self.setting("ansible_host", "ansible_ssh_host")[1]
        return self.name if value is None else str(value)

    @property
    def port(self) -> int | None:
        """None when the inventory does not say: ~/.ssh/config or 22 decides."""
        value = self.setting("ansible_port", "ansible_ssh_port")[1]
        return None if value is None else int(value)

    @property
    def user(self) -> str | None:
        return self.setting("ansible_user", "ansible_ssh_user")[1]

    @property
    def key_file(self) -> str | None:
        return self.setting("ansible_private_key_file", "ansible_ssh_private_key_file")[1]

    @property
    def known_hosts(self) -> Path:
        return Path(str(self.vars.get("fleetctl_known_hosts", "~/.ssh/known_hosts"))).expanduser()

    @property
    def ssh_config(self) -> Path:
        return Path(str(self.vars.get("fleetctl_ssh_config", "~/.ssh/config"))).expanduser()

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}: host {self.name!r}"


def problems(host: Host) -> list[str]:
    """Why fleetctl cannot reach HOST as its variables say (empty: nothing wrong)."""
    found = list(host.problems)
    name, port = host.setting("ansible_port", "ansible_ssh_port")
    if port is not None and (isinstance(port, bool) or not re.fullmatch(r"[0-9]{1,5}", str(port))
                             or not 1 <= int(port) <= 65535):
        found.append(f"{name} must be a number from 1 to 65535, not {port!r}")
    for names in (("ansible_host", "ansible_ssh_host"), ("ansible_user", "ansible_ssh_user"),
                  ("ansible_private_key_file", "ansible_ssh_private_key_file")):
        name, value = host.setting(*names)
        if value is not None and (not isinstance(value, str) or not value.strip() or "\n" in value):
            found.append(f"{name} must be a single-line text value")
    connection = host.vars.get("ansible_connection")
    if connection is not None and connection not in SSH_CONNECTIONS:
        found.append(f"ansible_connection is {connection!r}; fleetctl reaches Macs over SSH only")
    key = host.key_file
    if isinstance(key, str) and key.strip() and not Path(key).expanduser().exists():
        found.append(f"{host.setting('ansible_private_key_file', 'ansible_ssh_private_key_file')[0]} {key} "
                     "does not exist")
    return found


def check(host: Host) -> None:
    """Refuse HOST before any connection if its variables cannot work (called for the selected hosts)."""
    found = problems(host)
    if found:
        raise UsageError(f"{host.where}: {found[0]}")


@dataclass
class Inventory:
    path: Path
    hosts: dict[str, Host]
    groups: dict[str, set[str]]  # group -> its hosts and its children's; no 'all', 'ungrouped' only if used
    children: dict[str, list[str]] = field(default_factory=dict)  # group -> child groups in Ansible's order
    direct: dict[str, list[str]] = field(default_factory=dict)  # group -> hosts listed in it, in order
    warnings: list[str] = field(default_factory=list)

    def select(self, limit: str | None) -> list[Host]:
        """The hosts a run works on: an Ansible-like pattern ('web,db', 'mac-0*', 'all:!lab', 'x:&y')."""
        if not self.hosts:
            raise UsageError(f"{self.path}: the inventory lists no hosts")
        return self.matching(limit)

    def matching(self, limit: str | None) -> list[Host]:
        if not limit:
            return list(self.hosts.values())
        from fleetctl.inventory.patterns import split_limit

        chosen: set[str] = set()
        parts = split_limit(limit)
        for part in [p for p in parts if p[0] not in "!&"]:
            chosen |= self._match(part)
        for part in [p for p in parts if p[0] == "&"]:
            chosen &= self._match(part[1:])
        for part in [p for p in parts if p[0] == "!"]:
            chosen -= self._match(part[1:])
        if not chosen:
            raise UsageError(f"--limit {limit!r} matches no host in {self.path}; "
                             f"groups are: {', '.join(sorted(self.groups)) or 'none'}")
        return [h for n, h in self.hosts.items() if n in chosen]

    def _match(self, pattern: str) -> set[str]:
        """Ansible's rule: groups whose name matches; hosts too when no group does or the
        pattern is a glob or regex (~...)."""
        if pattern == "all" or pattern == "*":
            return set(self.hosts)
        regex = re.compile(pattern[1:] if pattern.startswith("~") else fnmatch.translate(pattern))
        found: set[str] = set()
        groups = [g for g in self.groups if regex.match(g)]
        for group in groups:
            found |= self.groups[group]
        if not groups or pattern[0] == "~" or any(c in pattern for c in ".?*["):
            found |= {n for n in self.hosts if regex.match(n)}
        return found


def apply_extra_vars(hosts: list[Host], extra: dict[str, Any]) -> None:
    """-e KEY=VALUE wins over everything, as Ansible's extra vars do."""
    for host in hosts:
        host.vars.update(extra)
