"""The Builder: what inventory sources declare, recorded in the order they declare it, as
ansible-core's InventoryData records it; `build()` reconciles (`all`, `ungrouped`) and merges
each host's variables in ansible-core 2.19's order, lowest first:
inventory group vars (`all`, then each group by depth, ansible_group_priority and name)
< group_vars/all < group_vars/<group> (same order) < inventory host vars < host_vars/<host>.
Playbook vars and -e come after (rollout).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetctl.errors import UsageError
from fleetctl.inventory.model import BECOME_PASSWORDS, KEYRING_LOOKUP, LOGIN_PASSWORDS, REFUSED, Host, Inventory


@dataclass
class _Group:
    vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    priority: int = 1


class Builder:
    """What the sources declare, in the order they declare it (ansible-core's InventoryData)."""

    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {}
        self.hosts: dict[str, Host] = {}
        self.host_inline: dict[str, dict[str, Any]] = {}
        self.direct_of: dict[str, list[str]] = {}  # host -> the groups it is listed in
        self.group_files: dict[str, list[dict]] = {}  # group -> its group_vars/ files, in load order
        self.host_files: dict[str, list[dict]] = {}
        self.warnings: list[str] = []
        self.add_group("all")
        self.add_group("ungrouped")
        self.add_child("all", "ungrouped", "")

    def add_group(self, name: str) -> None:
        self.groups.setdefault(name, _Group())

    def ancestors(self, group: str) -> set[str]:
        found: set[str] = set()
        for parent in self.groups[group].parents:
            if parent not in found:
                found |= {parent} | self.ancestors(parent)
        return found

    def add_child(self, parent: str, child: str, where: str) -> None:
        if child == parent or child in self.ancestors(parent):
            raise UsageError(f"{where}: group {child!r} contains itself (as a child of {parent!r}); "
                             "remove one of the children: entries")
        if child not in self.groups[parent].children:
            self.groups[parent].children.append(child)
            self.groups[child].parents.append(parent)

    def add_host(self, name: str, group: str, port: int | None, source: Path, line: int) -> None:
        if name not in self.hosts:  # a port given on a later line for the same host is ignored, as in Ansible
            self.hosts[name] = Host(name, {}, [], line, source)
            self.host_inline[name] = {"ansible_port": port} if port else {}
            self.direct_of[name] = []
        if group not in self.direct_of[name]:
            self.direct_of[name].append(group)
            self.groups[group].hosts.append(name)

    def set_variable(self, entity: str, key: str, value: Any, where: str) -> None:
        """Ansible looks the name up among groups first: a host named like an existing group
        gives its inline variables to that group (Ansible warns about such names, so do we)."""
        if entity in self.groups:
            if key == "ansible_group_priority":
                try:
                    self.groups[entity].priority = int(value)
                except (TypeError, ValueError):
                    raise UsageError(f"{where}: ansible_group_priority must be a whole number, not {value!r}") from None
            else:
                self.groups[entity].vars[key] = value
        else:
            self.host_inline[entity][key] = value

    def build(self, path: Path) -> Inventory:
        for name, group in self.groups.items():  # every group hangs below 'all'
            if name != "all" and not group.parents:
                self.add_child("all", name, str(path))
        up = {g: {g} | self.ancestors(g) for g in self.groups}
        member: dict[str, set[str]] = {}
        for name, direct in self.direct_of.items():  # 'ungrouped': the hosts in no other group
            member_of = set().union(*(up[g] for g in direct))
            if "ungrouped" in direct and member_of - {"all", "ungrouped"}:
                direct.remove("ungrouped")
                self.groups["ungrouped"].hosts.remove(name)
            elif member_of <= {"all"}:
                direct.append("ungrouped")
                self.groups["ungrouped"].hosts.append(name)
            member[name] = set().union(*(up[g] for g in direct)) - {"all"}
        self.warnings += [f"host {n!r} and group {n!r} share a name (Ansible warns too); --limit {n} means the group"
                          for n in self.hosts if n in self.groups]
        groups: dict[str, set[str]] = {g: set() for g in self.groups if g != "all"}
        depth: dict[str, int] = {"all": 0}
        for name, host in self.hosts.items():
            member_of = member[name]
            order = sorted(member_of, key=lambda g: (self._depth(g, depth), self.groups[g].priority, g))
            layers = [self.groups["all"].vars, *(self.groups[g].vars for g in order),
                      *self.group_files.get("all", []), *(f for g in order for f in self.group_files.get(g, [])),
                      self.host_inline[name], *self.host_files.get(name, [])]
            merged: dict[str, Any] = {}
            for layer in layers:
                merged.update(layer)
            host.vars, host.groups = merged, sorted(member_of)
            _passwords(host)
            for group in member_of:
                groups[group].add(name)
        if not groups["ungrouped"]:
            del groups["ungrouped"]
        return Inventory(path, self.hosts, groups, {g: list(d.children) for g, d in self.groups.items()},
                         {g: list(d.hosts) for g, d in self.groups.items()}, self.warnings)

    def _depth(self, group: str, memo: dict[str, int]) -> int:
        """The longest path from 'all', as ansible-core counts a group's depth."""
        if group not in memo:
            memo[group] = 1 + max(self._depth(p, memo) for p in self.groups[group].parents)
        return memo[group]


def _passwords(host: Host) -> None:
    """A sudo password is a keyring reference (-> fleetctl_become_secret) or refused; an SSH
    password is refused (fleetctl logs in with keys). A refused value is never shown."""
    secret = None
    for key in (*BECOME_PASSWORDS, *LOGIN_PASSWORDS):
        value = host.vars.get(key)
        match = KEYRING_LOOKUP.fullmatch(str(value).strip()) if value is not None else None
        if value is None or (match and key in LOGIN_PASSWORDS):
            continue
        if match:
            secret = match[1]
            continue
        host.vars[key] = REFUSED
        if isinstance(value, dict) and "__ansible_vault" in value:
            host.problems.append(f"{key} is encrypted with ansible-vault, which fleetctl cannot open; store the "
                                 "password with `fleetctl secrets set NAME` and use fleetctl_become_secret: NAME")
        elif key in BECOME_PASSWORDS:
            host.problems.append(
                f"{key} holds a password in the inventory; store it with `fleetctl secrets set NAME` and write "
                f"{key}: \"{{{{ lookup('community.general.keyring', 'fleetctl NAME') }}}}\" "
                "(or fleetctl_become_secret: NAME)")
        else:
            host.problems.append(f"{key} holds a password in the inventory; fleetctl logs in with SSH keys "
                                 "(ansible_ssh_private_key_file or ssh-agent): remove it")
    if secret:
        host.vars.setdefault("fleetctl_become_secret", secret)
