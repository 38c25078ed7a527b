"""Ansible inventory sources read unchanged: YAML and INI files, a directory of them,
`group_vars/` and `host_vars/` beside them, and host ranges like `mac[01:50].example.com`."""
from __future__ import annotations

import ast
import re
import shlex
import string
from pathlib import Path
from typing import Any

from fleetctl import yamlfile
from fleetctl.errors import UsageError
from fleetctl.inventory import Builder

RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")
VARS_DIRS = ("group_vars", "host_vars")
YAML_SUFFIXES = (".yml", ".yaml", ".json")
SKIPPED = (".retry", ".md", ".txt", ".cfg", ".pyc", "~", ".orig", ".bak")


def read(path: Path, builder: Builder) -> None:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and not p.name.endswith(SKIPPED))
        if not files:
            raise UsageError(f"{path}: the inventory directory holds no inventory files")
        for file in files:
            _read_file(file, builder)
        _read_vars_dirs(path, builder)
    else:
        _read_file(path, builder)
        _read_vars_dirs(path.parent, builder)


def _read_file(path: Path, builder: Builder) -> None:
    if not path.exists():
        raise UsageError(f"{path}: no such inventory; pass -i with an Ansible inventory (YAML or INI)")
    if path.suffix in YAML_SUFFIXES or (path.suffix != ".ini" and _looks_like_yaml(path)):
        _read_yaml(path, builder)
    else:
        _read_ini(path, builder)


def _looks_like_yaml(path: Path) -> bool:
    """No suffix (Ansible's `hosts`): YAML starts with a `group:` line, INI with `[group]` or a host."""
    for line in path.read_text(errors="replace").splitlines():
        text = line.strip()
        if text and not text.startswith(("#", ";", "---")):
            return text.startswith("all:") or (not text.startswith("[") and text.endswith(":"))
    return True


def expand(pattern: str, where: str) -> list[str]:
    """`mac[01:03].corp` -> mac01.corp, mac02.corp, mac03.corp; `[a:c]` and `[1:9:2]` too."""
    match = RANGE.search(pattern)
    if not match:
        return [pattern]
    first, last, step = match[1], match[2], int(match[3] or 1)
    head, tail = pattern[:match.start()], pattern[match.end():]
    if step < 1:
        values = []
    elif first.isdigit() and last.isdigit():
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        values = [str(n).zfill(width) for n in range(int(first), int(last) + 1, step)]
    elif len(first) == len(last) == 1 and first in string.ascii_letters and last in string.ascii_letters:
        letters = string.ascii_letters
        values = list(letters[letters.index(first):letters.index(last) + 1:step])
    else:
        values = []
    if not values:
        raise UsageError(f"{where}: host range [{match[0][1:-1]}] is empty or mixed; write e.g. mac[01:50] or [a:f]")
    return [name for value in values for name in expand(head + value + tail, where)]


# --- YAML -------------------------------------------------------------------------------------

def _mapping(path: Path, node: Any, where: str, line: int) -> dict:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise UsageError(f"{path}:{getattr(node, 'line', line)}: {where} must be a mapping of name: value")
    return node


def _read_yaml(path: Path, builder: Builder) -> None:
    data = yamlfile.load(path, "inventory")
    if data is None:
        return
    misplaced = [k for k in data if k in ("hosts", "children", "vars")] if isinstance(data, dict) else []
    if misplaced or not isinstance(data, dict) or not all(isinstance(v, dict) or v is None for v in data.values()):
        line = data.line_of(misplaced[0]) if misplaced else 1
        raise UsageError(f"{path}:{line}: an inventory starts with 'all:' (or group names) holding hosts:, "
                         "children: and vars: (Ansible's YAML layout)")
    for name, node in data.items():
        _walk_yaml(path, builder, str(name), None, node, data.line_of(name))


def _walk_yaml(path: Path, builder: Builder, group: str, parent: str | None, node: Any, line: int) -> None:
    node = _mapping(path, node, f"group {group!r}", line)
    unknown = set(node) - {"hosts", "children", "vars"}
    if unknown:
        key = sorted(unknown)[0]
        raise UsageError(f"{path}:{node.line_of(key)}: unknown key {key!r} in group {group!r}; "
                         "use hosts:, children: or vars:")
    builder.group(group, parent, dict(_mapping(path, node.get("vars"), f"vars of group {group!r}", line)))
    entries = node.get("hosts") or {}
    if not isinstance(entries, dict):
        raise UsageError(f"{path}:{node.line_of('hosts')}: hosts: must map host names to their variables")
    for pattern, hvars in entries.items():
        at = entries.line_of(pattern)
        hvars = dict(_mapping(path, hvars, f"vars of host {pattern!r}", at))
        for name in expand(str(pattern), f"{path}:{at}"):
            builder.host(name, group, hvars, path, at)
    children = node.get("children") or {}
    if not isinstance(children, dict):
        raise UsageError(f"{path}:{node.line_of('children')}: children: must map group names to groups")
    for child, child_node in children.items():
        if child == group:
            raise UsageError(f"{path}:{children.line_of(child)}: group {child!r} contains itself")
        _walk_yaml(path, builder, str(child), group, child_node, children.line_of(child))


# --- INI --------------------------------------------------------------------------------------

def _value(text: str) -> Any:
    """Host-line values, like Ansible's: Python literals become values, anything else stays text
    ([group:vars] values stay text, also as in Ansible)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _pairs(path: Path, line_no: int, words: list[str]) -> dict[str, Any]:
    out = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key.isidentifier():
            raise UsageError(f"{path}:{line_no}: {word!r} is not key=value; write variables as name=value")
        out[key] = _value(value)
    return out


def _read_ini(path: Path, builder: Builder) -> None:
    section, kind = "ungrouped", "hosts"
    for line_no, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        text = raw.strip()
        if not text or text.startswith(("#", ";")):
            continue
        if text.startswith("["):
            match = re.fullmatch(r"\[([^\]:\s]+)(?::(\w+))?\]", text)
            if not match or (match[2] or "hosts") not in ("hosts", "vars", "children"):
                raise UsageError(f"{path}:{line_no}: {text!r} is not a section; use [group], [group:vars] "
                                 "or [group:children]")
            section, kind = match[1], match[2] or "hosts"
            builder.group(section)
            continue
        try:
            words = shlex.split(text, comments=True)
        except ValueError as e:
            raise UsageError(f"{path}:{line_no}: cannot split this line ({e}); check its quotes") from None
        if not words:
            continue
        if kind == "hosts":
            for name in expand(words[0], f"{path}:{line_no}"):
                builder.host(name, section, _pairs(path, line_no, words[1:]), path, line_no)
        elif kind == "vars":
            key, eq, value = text.partition("=")
            if not eq or not key.strip().isidentifier():
                raise UsageError(f"{path}:{line_no}: [{section}:vars] lines are name=value, not {text!r}")
            builder.group(section, None, {key.strip(): value.strip()})
        else:
            if len(words) != 1:
                raise UsageError(f"{path}:{line_no}: [{section}:children] lists one group name per line")
            builder.group(words[0], section)


# --- group_vars/ and host_vars/ ---------------------------------------------------------------

def _read_vars_dirs(base: Path, builder: Builder) -> None:
    for kind in VARS_DIRS:
        folder = base / kind
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            name = entry.stem if entry.suffix in YAML_SUFFIXES else entry.name
            files = sorted(f for f in entry.rglob("*") if f.is_file()) if entry.is_dir() else [entry]
            for file in files:
                data = yamlfile.load(file, f"{kind} file")
                variables = dict(_mapping(file, data, f"{kind} file", 1))
                if kind == "group_vars":
                    if name in builder.group_files:  # vars for groups the inventory does not use are ignored
                        builder.group_files[name].append(variables)
                elif name in builder.hosts:
                    builder.host_vars[name].append(variables)
