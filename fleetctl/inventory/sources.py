"""Ansible inventory sources read unchanged, file by file as ansible-core picks them: a YAML
(or JSON) file, an INI file, a directory of them (sorted, recursively), and the group_vars/
and host_vars/ files beside the -i path (only those ansible-core would load)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from fleetctl import yamlfile
from fleetctl.inventory import ini as inventory_ini
from fleetctl.errors import UsageError
from fleetctl.inventory.builder import Builder
from fleetctl.inventory.patterns import expand, split_port

YAML_SUFFIXES = (".yml", ".yaml", ".json")
SKIPPED_NAMES = re.compile(r"^\.|^host_vars$|^group_vars$|^vars_plugins$")
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry")
CONVERT = "convert it once with `ansible-inventory -i {0} --list --yaml > inventory.yml` and use that"


def read(path: Path, builder: Builder) -> None:
    if not path.exists():
        raise UsageError(f"{path}: no such inventory; pass -i with an Ansible inventory (YAML or INI)")
    if path.is_dir():
        if not _read_dir(path, builder):
            raise UsageError(f"{path}: the inventory directory holds no inventory files")
        _read_vars_dirs(path, builder)
    else:
        _read_file(path, builder)
        _read_vars_dirs(path.parent, builder)


def _read_dir(path: Path, builder: Builder) -> int:
    """Every file in name order, subdirectories too, minus what ansible-core skips."""
    count = 0
    for name in sorted(os.listdir(path)):
        entry = path / name
        if SKIPPED_NAMES.search(name) or name.endswith(SKIPPED_SUFFIXES):
            continue
        if entry.is_dir():
            count += _read_dir(entry, builder)
        else:
            _read_file(entry, builder)
            count += 1
    return count


def _read_file(path: Path, builder: Builder) -> None:
    """YAML for .yml/.yaml/.json and files without a suffix, INI when that is not YAML (ansible-core
    tries its yaml plugin, then ini); INI for any other name."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read this inventory: {e}") from None
    if text.startswith("#!") and os.access(path, os.X_OK):
        raise UsageError(f"{path}: dynamic inventory scripts are not run by fleetctl; " + CONVERT.format(path))
    if path.suffix == ".toml":
        raise UsageError(f"{path}: TOML inventories are not read by fleetctl; " + CONVERT.format(path))
    if path.suffix not in ("", *YAML_SUFFIXES):
        return inventory_ini.read(path, text, builder)
    try:
        data, problem = yamlfile.load(path, "inventory"), None
    except UsageError as e:
        data, problem = None, e
    if isinstance(data, dict) and data:
        return _read_yaml(path, data, builder)
    if not data and problem is None:
        return  # an empty file: no hosts
    try:
        inventory_ini.read(path, text, builder)
    except UsageError:
        if path.suffix or _looks_like_yaml(text):
            raise problem or UsageError(f"{path}:1: an inventory starts with 'all:' (or group names) holding "
                                        "hosts:, children: and vars: (Ansible's YAML layout)") from None
        raise


def _looks_like_yaml(text: str) -> bool:
    """Which error to show for a file without a suffix that is neither: YAML starts `group:`."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "---")):
            return line.startswith("all:") or (not line.startswith("[") and line.endswith(":"))
    return True


# --- YAML -------------------------------------------------------------------------------------

def _line(node: Any, key: Any, default: int) -> int:
    return node.line_of(key) if isinstance(node, yamlfile.Mapping) else default


def _read_yaml(path: Path, data: dict, builder: Builder) -> None:
    if "plugin" in data:
        raise UsageError(f"{path}:{_line(data, 'plugin', 1)}: this configures the {data['plugin']!r} inventory "
                         "plugin (a dynamic inventory); " + CONVERT.format(path))
    misplaced = [k for k in data if k in ("hosts", "children", "vars")]
    if misplaced:
        raise UsageError(f"{path}:{_line(data, misplaced[0], 1)}: an inventory starts with 'all:' (or group names) "
                         "holding hosts:, children: and vars: (Ansible's YAML layout)")
    for name, node in data.items():
        _yaml_group(path, builder, name, node, _line(data, name, 1))


def _yaml_group(path: Path, builder: Builder, group: Any, node: Any, line: int) -> str:
    """One group, its keys in file order (that order decides Ansible's host and group order).
    Where ansible-core skips a malformed entry with a warning, fleetctl stops: a typo must not
    silently drop Macs from a rollout."""
    where = f"{path}:{line}"
    if not isinstance(group, str) or not group:
        raise UsageError(f"{where}: group name {group!r} must be text")
    if node is not None and not isinstance(node, dict):
        raise UsageError(f"{where}: group {group!r} must be a mapping of hosts:, children: and vars:")
    builder.add_group(group)
    for key, entries in (node or {}).items():
        at = f"{path}:{_line(node, key, line)}"
        if key not in ("hosts", "children", "vars"):
            raise UsageError(f"{at}: unknown key {key!r} in group {group!r}; use hosts:, children: or vars:")
        if isinstance(entries, str):  # `hosts: mac01` is one host without variables
            entries = {entries: None}
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise UsageError(f"{at}: {key}: must map " + {"hosts": "host names to their variables",
                             "children": "group names to groups", "vars": "names to values"}[key])
        for name, item in entries.items():
            item_line = _line(entries, name, _line(node, key, line))
            if key == "vars":
                builder.set_variable(group, name, item, f"{path}:{item_line}")
            elif key == "children":
                builder.add_child(group, _yaml_group(path, builder, name, item, item_line), f"{path}:{item_line}")
            else:
                _yaml_hosts(path, builder, group, name, item, item_line)
    return group


def _yaml_hosts(path: Path, builder: Builder, group: str, pattern: Any, variables: Any, line: int) -> None:
    where = f"{path}:{line}"
    if not isinstance(pattern, str):
        raise UsageError(f"{where}: host {pattern!r} must be text; quote numbers")
    if variables is not None and not isinstance(variables, dict):
        raise UsageError(f"{where}: the variables of host {pattern!r} must be a mapping of name: value")
    address, port = split_port(pattern)
    for name in expand(address, where):
        builder.add_host(name, group, port, path, line)
        for key, value in (variables or {}).items():
            builder.set_variable(name, key, value, where)


# --- group_vars/ and host_vars/ ---------------------------------------------------------------

def _read_vars_dirs(base: Path, builder: Builder) -> None:
    """For each group and host, `<dir>/<name>` or `<name>.yml|.yaml|.json` (the first that exists),
    a directory being all its YAML/JSON files in name order; nothing else is read."""
    for kind, names, target in (("group_vars", builder.groups, builder.group_files),
                                ("host_vars", builder.hosts, builder.host_files)):
        folder = base / kind
        if not folder.is_dir():
            continue
        present = set(os.listdir(folder))
        for name in names:
            found = next((c for c in (name, *(name + s for s in YAML_SUFFIXES)) if c in present), None)
            if found is None or name.startswith("/"):
                continue
            files = _vars_files(folder / found) if (folder / found).is_dir() else [folder / found]
            for file in files:
                variables = _vars_file(file, kind, builder)
                if variables:
                    target.setdefault(name, []).append(variables)


def _vars_files(folder: Path) -> list[Path]:
    found = []
    for name in sorted(os.listdir(folder)):
        entry, suffix = folder / name, os.path.splitext(name)[1]
        if name.startswith(".") or name.endswith("~"):
            continue
        if entry.is_dir() and not suffix:
            found += _vars_files(entry)
        elif entry.is_file() and suffix in ("", *YAML_SUFFIXES):
            found.append(entry)
    return found


def _vars_file(file: Path, kind: str, builder: Builder) -> dict | None:
    try:
        head = file.read_text(errors="replace")[:14]
    except OSError as e:
        raise UsageError(f"{file}: cannot read this {kind} file: {e.strerror}") from None
    if head == "$ANSIBLE_VAULT":
        builder.warnings.append(f"{file} is encrypted with ansible-vault: fleetctl does not read it (keep the "
                                "secrets fleetctl needs in the keyring, see `fleetctl secrets`)")
        return None
    data = yamlfile.load(file, f"{kind} file")
    if data is not None and not isinstance(data, dict):
        raise UsageError(f"{file}:1: a {kind} file must be a mapping of name: value")
    return data
