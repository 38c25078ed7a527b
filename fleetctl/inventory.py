"""Hosts and their variables from an existing Ansible inventory, and --limit.

Sources (YAML or INI files, or a directory of them, with group_vars/ and host_vars/ beside
them) are read by `inventory_sources`; this module merges variables as Ansible does:
all -> groups (shallow first, then by name) -> host, each layer's inline vars before its
group_vars/host_vars files.
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetctl.errors import UsageError

# Ansible's older spellings of the connection variables, mapped to the names used here.
ALIASES = {"ansible_ssh_host": "ansible_host", "ansible_ssh_port": "ansible_port", "ansible_ssh_user": "ansible_user",
           "ansible_private_key_file": "ansible_ssh_private_key_file", "ansible_become_pass": "ansible_become_password",
           "ansible_sudo_pass": "ansible_become_password"}
KEYRING_LOOKUP = re.compile(r"""\{\{\s*lookup\(\s*['"](?:community\.general\.)?keyring['"]\s*,\s*"""
                            r"""['"]fleetctl\s+([A-Za-z0-9_]+)['"]\s*\)\s*\}\}""")


@dataclass
class Host:
    name: str
    vars: dict[str, Any]
    groups: list[str] = field(default_factory=list)
    line: int = 0
    source: Path = Path("inventory")

    @property
    def address(self) -> str:
        return str(self.vars.get("ansible_host", self.name))

    @property
    def port(self) -> int | None:
        """None when the inventory does not say: ~/.ssh/config or 22 decides."""
        port = self.vars.get("ansible_port")
        return None if port is None else int(port)

    @property
    def user(self) -> str | None:
        return self.vars.get("ansible_user")

    @property
    def key_file(self) -> str | None:
        return self.vars.get("ansible_ssh_private_key_file")

    @property
    def known_hosts(self) -> Path:
        return Path(str(self.vars.get("fleetctl_known_hosts", "~/.ssh/known_hosts"))).expanduser()

    @property
    def ssh_config(self) -> Path:
        return Path(str(self.vars.get("fleetctl_ssh_config", "~/.ssh/config"))).expanduser()

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}: host {self.name!r}"


@dataclass
class Inventory:
    path: Path
    hosts: dict[str, Host]
    groups: dict[str, set[str]]  # group -> host names (including children's); without 'all'
    children: dict[str, list[str]] = field(default_factory=dict)  # group -> child groups, 'all' included
    direct: dict[str, list[str]] = field(default_factory=dict)  # group -> hosts listed in it

    def select(self, limit: str | None) -> list[Host]:
        """Hosts matching an Ansible-like pattern: 'web,db', 'mac-0*', 'all:!lab', 'x:&y'."""
        if not limit:
            return list(self.hosts.values())
        chosen: set[str] = set()
        parts = [p for p in limit.replace(":", ",").split(",") if p]
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
        found = {n for n in self.hosts if fnmatch.fnmatchcase(n, pattern)}
        if pattern == "all":
            return set(self.hosts)
        for group, members in self.groups.items():
            if fnmatch.fnmatchcase(group, pattern):
                found |= members
        return found


class Builder:
    """What the sources declare, before merging: groups, their parents and vars, hosts."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self.host_vars: dict[str, list[dict]] = {}  # inline, then host_vars/ files
        self.group_vars: dict[str, list[dict]] = {"all": []}  # inline in the inventory
        self.group_files: dict[str, list[dict]] = {"all": []}  # from group_vars/
        self.parents: dict[str, set[str]] = {"all": set()}
        self.direct: dict[str, dict[str, None]] = {"all": {}}  # group -> its own hosts (an ordered set)
        self._seen: dict[str, frozenset[str]] = {}  # group -> itself and its ancestors, once built

    def group(self, name: str, parent: str | None = None, variables: dict | None = None) -> None:
        self.group_vars.setdefault(name, [])
        self.group_files.setdefault(name, [])
        self.parents.setdefault(name, set())
        self.direct.setdefault(name, {})
        if parent and parent != name:
            self.group(parent)
            self.parents[name].add(parent)
        if variables:
            self.group_vars[name].append(variables)

    def host(self, name: str, group: str, variables: dict, source: Path, line: int) -> None:
        self.group(group)
        if name not in self.hosts:
            self.hosts[name] = Host(name, {}, [], line, source)
            self.host_vars[name] = []
        self.direct[group][name] = None
        if variables:
            self.host_vars[name].append(variables)

    def _ancestors(self, group: str, path: tuple[str, ...] = ()) -> frozenset[str]:
        if group in self._seen:
            return self._seen[group]
        if group in path:
            raise UsageError(f"group {group!r} contains itself (via {' -> '.join(path + (group,))}); "
                             "remove one of the children: entries")
        found = {group}
        for parent in self.parents.get(group, ()):
            found |= self._ancestors(parent, path + (group,))
        self._seen[group] = frozenset(found)
        return self._seen[group]

    def _depth(self, group: str) -> int:
        parents = self.parents.get(group) or ({"all"} if group != "all" else set())
        return 0 if group == "all" else 1 + max(self._depth(p) for p in parents)

    def build(self, path: Path) -> Inventory:
        if not self.hosts:
            raise UsageError(f"{path}: the inventory lists no hosts")
        direct_of: dict[str, list[str]] = {}
        for group, names in self.direct.items():
            for name in names:
                direct_of.setdefault(name, []).append(group)
        for name, host in self.hosts.items():
            if not set(direct_of[name]) - {"all", "ungrouped"} and "ungrouped" not in direct_of[name]:
                self.host(name, "ungrouped", {}, host.source, host.line)
                direct_of[name].append("ungrouped")
        groups: dict[str, set[str]] = {g: set() for g in self.parents if g != "all"}
        for name, host in self.hosts.items():
            member_of = {"all"}
            for group in direct_of[name]:
                member_of |= self._ancestors(group)
            # Ansible's order: all's inline vars, group_vars/all, other groups' inline vars
            # (shallow first), their group_vars/ files, the host's inline vars, host_vars/.
            others = sorted(member_of - {"all"}, key=lambda g: (self._depth(g), g))
            layers = [*self.group_vars["all"], *self.group_files["all"],
                      *(v for g in others for v in self.group_vars[g]), *(v for g in others for v in self.group_files[g]),
                      *self.host_vars[name]]
            merged: dict[str, Any] = {}
            for layer in layers:
                merged.update(layer)
            host.vars = _normalise(host, merged)
            host.groups = sorted(member_of - {"all"})
            for group in host.groups:
                groups[group].add(name)
            _validate(host)
        children = {g: sorted(c for c, ps in self.parents.items() if g in ps or (g == "all" and not ps and c != "all"))
                    for g in self.parents}
        return Inventory(path, self.hosts, groups, children, {g: sorted(n) for g, n in self.direct.items()})


def _normalise(host: Host, variables: dict[str, Any]) -> dict[str, Any]:
    """Ansible's aliases to one spelling; a become password must be a keyring reference."""
    out = dict(variables)
    for old, new in ALIASES.items():
        if old in out:
            out.setdefault(new, out.pop(old))
    password = out.pop("ansible_become_password", None)
    if password is not None:
        match = KEYRING_LOOKUP.fullmatch(str(password).strip())
        if not match:
            raise UsageError(
                f"{host.where}: ansible_become_password holds a password in the inventory; store it with "
                "`fleetctl secrets set NAME` and write ansible_become_password: "
                "\"{{ lookup('community.general.keyring', 'fleetctl NAME') }}\" (or fleetctl_become_secret: NAME)")
        out.setdefault("fleetctl_become_secret", match[1])
    return out


def _validate(host: Host) -> None:
    port = host.vars.get("ansible_port", 22)
    if isinstance(port, str) and port.isdigit():
        port = host.vars["ansible_port"] = int(port)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"{host.where}: ansible_port must be a number from 1 to 65535, not {port!r}")
    for key in ("ansible_host", "ansible_user", "ansible_ssh_private_key_file"):
        value = host.vars.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip() or "\n" in value):
            raise UsageError(f"{host.where}: {key} must be a single-line text value")
    key_file = host.key_file
    if key_file and not Path(key_file).expanduser().exists():
        raise UsageError(f"{host.where}: ansible_ssh_private_key_file {key_file} does not exist")


def load(path: Path) -> Inventory:
    """Read and validate an inventory; errors name the file, the line and the fix."""
    from fleetctl import inventory_sources

    builder = Builder()
    inventory_sources.read(path, builder)
    return builder.build(path)


def describe(inv: Inventory, limit: str | None, as_graph: bool, host: str | None) -> str:
    """`fleetctl inventory`: the --list JSON, the --graph tree, or one --host's variables."""
    if limit:
        keep = {h.name for h in inv.select(limit)}
        inv.hosts = {n: h for n, h in inv.hosts.items() if n in keep}
        inv.direct = {g: [n for n in names if n in keep] for g, names in inv.direct.items()}
    if as_graph:
        return "\n".join(graph(inv))
    if host is not None:
        if host not in inv.hosts:
            raise UsageError(f"host {host!r} is not in {inv.path}" + (f" (with --limit {limit})" if limit else ""))
        return json.dumps(inv.hosts[host].vars, indent=4, sort_keys=True, default=str)
    return json.dumps(listing(inv), indent=4, sort_keys=True, default=str)


def listing(inv: Inventory) -> dict:
    """`ansible-inventory --list`'s shape, so tools that read that can read this."""
    out: dict[str, Any] = {"_meta": {"hostvars": {n: h.vars for n, h in inv.hosts.items()}}}
    for group in ["all", *sorted(inv.groups)]:
        entry = {}
        if inv.children.get(group):
            entry["children"] = inv.children[group]
        if group != "all" and inv.direct.get(group):
            entry["hosts"] = inv.direct[group]
        out[group] = entry
    return out


def graph(inv: Inventory, group: str = "all", depth: int = 0) -> list[str]:
    """`ansible-inventory --graph`: groups as @name:, hosts beneath."""
    pad = "  |" * depth
    lines = [f"{pad[:-1] + '|--' if depth else ''}@{group}:"]
    for child in inv.children.get(group, []):
        lines += graph(inv, child, depth + 1)
    lines += [f"{pad}  |--{name}" for name in inv.direct.get(group, []) if group != "all"]
    return lines


def apply_extra_vars(hosts: list[Host], extra: dict[str, Any]) -> None:
    """-e KEY=VALUE wins over everything, as Ansible's extra vars do."""
    for host in hosts:
        host.vars.update(extra)
