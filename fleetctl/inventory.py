"""Hosts and their variables from an Ansible-layout YAML inventory, and --limit.

Variables merge all -> groups (shallow first) -> host, as Ansible does.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetctl import yamlfile
from fleetctl.errors import UsageError


@dataclass
class Host:
    name: str
    vars: dict[str, Any]
    groups: list[str] = field(default_factory=list)
    line: int = 0

    @property
    def address(self) -> str:
        return str(self.vars.get("ansible_host", self.name))

    @property
    def port(self) -> int:
        return int(self.vars.get("ansible_port", 22))

    @property
    def user(self) -> str | None:
        return self.vars.get("ansible_user")

    @property
    def key_file(self) -> str | None:
        return self.vars.get("ansible_ssh_private_key_file")

    @property
    def known_hosts(self) -> Path:
        return Path(str(self.vars.get("fleetctl_known_hosts", "~/.ssh/known_hosts"))).expanduser()


@dataclass
class Inventory:
    path: Path
    hosts: dict[str, Host]
    groups: dict[str, set[str]]  # group -> host names (including children's)

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
        for group, members in self.groups.items():
            if fnmatch.fnmatchcase(group, pattern):
                found |= members
        return found


def _check_vars(path: Path, node: Any, where: str) -> dict:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise UsageError(f"{path}:{getattr(node, 'line', '?')}: {where} vars must be a mapping of name: value")
    return node


def load(path: Path) -> Inventory:
    """Read and validate an inventory; errors name the file, the line and the fix."""
    data = yamlfile.load(path, "inventory")
    if not isinstance(data, dict) or "all" not in data or not isinstance(data["all"], dict):
        raise UsageError(f"{path}:1: an inventory starts with 'all:' holding hosts:, children: and vars: "
                         "(Ansible's YAML layout)")
    hosts: dict[str, Host] = {}
    groups: dict[str, set[str]] = {}
    # (depth, group name, vars) per host, merged in order afterwards
    layers: dict[str, list[tuple[int, str, dict]]] = {}
    host_vars: dict[str, dict] = {}

    def walk(group: str, node: Any, depth: int, seen: tuple[str, ...]) -> set[str]:
        if node is None:
            node = yamlfile.Mapping()
        if not isinstance(node, dict):
            raise UsageError(f"{path}: group {group!r} must be a mapping with hosts:, children: or vars:")
        unknown = set(node) - {"hosts", "children", "vars"}
        if unknown:
            key = sorted(unknown)[0]
            raise UsageError(f"{path}:{node.line_of(key)}: unknown key {key!r} in group {group!r}; "
                             "use hosts:, children: or vars:")
        group_vars = _check_vars(path, node.get("vars"), f"group {group!r}")
        members: set[str] = set()
        entries = node.get("hosts") or {}
        if not isinstance(entries, dict):
            raise UsageError(f"{path}:{node.line_of('hosts')}: hosts: must map host names to their variables")
        for name, hvars in entries.items():
            name = str(name)
            hvars = _check_vars(path, hvars, f"host {name!r}")
            line = entries.line_of(name) if isinstance(entries, yamlfile.Mapping) else 0
            if name not in hosts:
                hosts[name] = Host(name, {}, [], line)
            host_vars.setdefault(name, {}).update(hvars)
            hosts[name].groups.append(group)
            layers.setdefault(name, []).append((depth, group, group_vars))
            members.add(name)
        children = node.get("children") or {}
        if not isinstance(children, dict):
            raise UsageError(f"{path}:{node.line_of('children')}: children: must map group names to groups")
        for child, child_node in children.items():
            if child in seen:
                raise UsageError(f"{path}:{children.line_of(child)}: group {child!r} contains itself")
            child_members = walk(str(child), child_node, depth + 1, (*seen, str(child)))
            members |= child_members
            for name in child_members:
                layers[name].append((depth, group, group_vars))
        groups[group] = groups.get(group, set()) | members
        return members

    walk("all", data["all"], 0, ("all",))
    for name, host in hosts.items():
        merged: dict[str, Any] = {}
        done = set()
        for _, group, gvars in sorted(layers[name], key=lambda layer: (layer[0], layer[1])):
            if group not in done:
                merged.update(gvars)
                done.add(group)
        merged.update(host_vars[name])
        host.vars = merged
        _validate_host(path, host)
    if not hosts:
        raise UsageError(f"{path}: the inventory lists no hosts")
    groups.pop("all", None)
    return Inventory(path, hosts, groups)


def _validate_host(path: Path, host: Host) -> None:
    where = f"{path}:{host.line}: host {host.name!r}"
    port = host.vars.get("ansible_port", 22)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"{where}: ansible_port must be a number from 1 to 65535, not {port!r}")
    for key in ("ansible_host", "ansible_user", "ansible_ssh_private_key_file"):
        value = host.vars.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip() or "\n" in value):
            raise UsageError(f"{where}: {key} must be a single-line text value")
    key_file = host.key_file
    if key_file and not Path(key_file).expanduser().exists():
        raise UsageError(f"{where}: ansible_ssh_private_key_file {key_file} does not exist")


def apply_extra_vars(hosts: list[Host], extra: dict[str, Any]) -> None:
    """-e KEY=VALUE wins over everything, as Ansible's extra vars do."""
    for host in hosts:
        host.vars.update(extra)
