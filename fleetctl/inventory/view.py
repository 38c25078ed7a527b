"""`fleetctl inventory`: the --list JSON (ansible-inventory's shape), the --graph tree, one --host."""
from __future__ import annotations

import json
from typing import Any

from fleetctl.errors import UsageError
from fleetctl.inventory.model import Inventory, problems


def describe(inv: Inventory, limit: str | None, as_graph: bool, host: str | None) -> str:
    """`fleetctl inventory`: the --list JSON, the --graph tree, or one --host's variables."""
    if limit:
        keep = {h.name for h in inv.matching(limit)}
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
    """`ansible-inventory --list`'s shape: groups with their hosts and children (empty ones
    left out, but still named as children), `_meta.hostvars` for hosts that have variables."""
    out: dict[str, Any] = {"_meta": {"hostvars": {n: h.vars for n, h in inv.hosts.items() if h.vars}}}
    for group in inv.children:
        entry: dict[str, list[str]] = {}
        if inv.children[group]:
            entry["children"] = inv.children[group]
        if group != "all" and inv.direct.get(group):
            entry["hosts"] = inv.direct[group]
        if entry:
            out[group] = entry
    return out


def graph(inv: Inventory, group: str = "all", depth: int = 0) -> list[str]:
    """`ansible-inventory --graph`: groups as @name:, hosts beneath."""
    pad = "  |" * depth
    lines = [f"{pad}--@{group}:" if depth else f"@{group}:"]
    for child in inv.children.get(group, []):
        lines += graph(inv, child, depth + 1)
    lines += [f"{pad}  |--{name}" for name in inv.direct.get(group, []) if group != "all"]
    return lines


def notes(inv: Inventory) -> list[str]:
    """What `fleetctl inventory` warns about: hosts that run and plan would refuse, no hosts."""
    found = [f"{h.where}: {p}; run and plan refuse this host" for h in inv.hosts.values() for p in problems(h)]
    return found + ([f"{inv.path}: the inventory lists no hosts"] if not inv.hosts else [])
