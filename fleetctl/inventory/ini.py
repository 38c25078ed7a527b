"""Ansible's INI inventory format, read as ansible-core 2.19's `ini` plugin reads it: sections,
`[group:vars]`, `[group:children]` (a child may be declared later in the file, never not at
all), host lines split like a shell, and every value through Python's literal rules."""
from __future__ import annotations

import ast
import re
import shlex
import warnings
from pathlib import Path
from typing import Any

from fleetctl.errors import UsageError
from fleetctl.inventory.builder import Builder
from fleetctl.inventory.patterns import expand, split_port

SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?")
GROUP_NAME = re.compile(r"([^:\]\s]+)\s*(?:#.*)?")


def value(text: str, where: str) -> Any:
    """An INI value, on a host line or in [group:vars] alike (ansible-core 2.19): a Python
    literal becomes that value (`'-o ProxyJump=b'` -> -o ProxyJump=b, `2222` -> 2222,
    `"2222"` -> "2222", `True` -> true); anything else stays text, as written."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    except Exception as e:  # noqa: BLE001 - e.g. an unhashable dict key: Ansible fails the file too
        raise UsageError(f"{where}: cannot read the value {text!r} ({e})") from None
    return _plain(parsed)


def _plain(parsed: Any) -> Any:
    """What Ansible keeps of a literal: tuples and sets become lists, bytes text, `...` and
    complex numbers their text."""
    if isinstance(parsed, (list, tuple, set)):
        return [_plain(v) for v in parsed]
    if isinstance(parsed, dict):
        return {k: _plain(v) for k, v in parsed.items()}
    if parsed is ... or isinstance(parsed, complex):
        return "..." if parsed is ... else str(parsed)
    if isinstance(parsed, bytes):
        return parsed.decode("utf-8", "surrogateescape")
    return parsed


def read(path: Path, text: str, builder: Builder) -> None:
    group, kind = "ungrouped", "hosts"  # lines before any section are ungrouped hosts
    pending: dict[str, dict] = {}  # groups named before they are defined: name -> line, kind, parents
    for line_no, raw in enumerate(text.splitlines(), 1):
        line, where = raw.strip(), f"{path}:{line_no}"
        if not line or line[0] in "#;":
            continue
        section = SECTION.fullmatch(line)
        if section:
            group, kind = section[1], section[2] or "hosts"
            if kind not in ("hosts", "children", "vars"):
                raise UsageError(f"{where}: {line!r} is not a section; use [group], [group:vars] or [group:children]")
            if group not in builder.groups:
                if kind == "vars":  # [g:vars] alone does not define g
                    pending.setdefault(group, {"line": line_no, "kind": "vars", "parents": []})
                builder.add_group(group)
            if group in pending and kind != "vars":
                for parent in pending.pop(group)["parents"]:
                    builder.add_child(parent, group, where)
            continue
        if line.startswith("[") and line.endswith("]"):
            raise UsageError(f"{where}: {line!r} is not a section; use [group], [group:vars] or [group:children] "
                             "without spaces")
        if kind == "hosts":
            _host_line(path, line_no, line, group, builder)
        elif kind == "vars":
            key, eq, text_value = line.partition("=")
            if not eq:
                raise UsageError(f"{where}: [{group}:vars] lines are name=value, not {line!r}")
            builder.set_variable(group, key.strip(), value(text_value.strip(), where), where)
        else:
            match = GROUP_NAME.fullmatch(line)
            if not match:
                raise UsageError(f"{where}: [{group}:children] lists one group name per line, not {line!r}")
            if match[1] in builder.groups:
                builder.add_child(group, match[1], where)
            else:
                later = pending.setdefault(match[1], {"line": line_no, "kind": "children", "parents": []})
                later["parents"].append(group)
    for name, decl in pending.items():  # the first unresolved name, as ansible-core reports it
        where = f"{path}:{decl['line']}"
        if decl["kind"] == "vars":
            raise UsageError(f"{where}: section [{name}:vars] is for group {name!r}, which no [{name}] or "
                             f"[{name}:children] section defines (ansible-core refuses this file too)")
        raise UsageError(f"{where}: section [{decl['parents'][-1]}:children] includes undefined group {name!r}; "
                         f"define it with a [{name}] section (ansible-core refuses this file too)")


def _host_line(path: Path, line_no: int, line: str, group: str, builder: Builder) -> None:
    """`pattern [key=value ...] [# comment]`, split like a shell (quotes group, then go)."""
    where = f"{path}:{line_no}"
    try:
        words = shlex.split(line, comments=True)
    except ValueError as e:
        raise UsageError(f"{where}: cannot split this line ({e}); check its quotes") from None
    if not words:
        return
    address, port = split_port(words[0])
    if words[0].endswith(":") and port is None:
        raise UsageError(f"{where}: host {words[0]!r} ends in ':', which is reserved for a port (host:2222)")
    names = expand(address, where)
    if "---" in names:
        raise UsageError(f"{where}: '---' starts a YAML document: give a YAML inventory a .yml name")
    variables = {}
    for word in words[1:]:
        key, eq, text = word.partition("=")
        if not eq:
            raise UsageError(f"{where}: {word!r} is not key=value; write variables as name=value")
        variables[key] = value(text, where)
    for name in names:
        builder.add_host(name, group, port, path, line_no)
        for key, parsed in variables.items():
            builder.set_variable(name, key, parsed, where)
