"""YAML loading that remembers line numbers, so every error can name file and line."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fleetctl.errors import UsageError


class Mapping(dict):
    """A dict that knows the line of each of its keys (1-based) and its own."""

    line: int = 0
    key_lines: dict

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


# libyaml's parser where PyYAML has it (Ansible reads inventories with it too): the pure-Python
# one took 80 ms for a 50-Mac inventory on every command. Same nodes, same marks for file:line.
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        data = Mapping(super().construct_mapping(node, deep=True))
        data.line = node.start_mark.line + 1
        data.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}
        return data


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def _unsafe(loader: _Loader, node: yaml.Node) -> Any:
    """Ansible's `!unsafe` (never templated): fleetctl never templates, so it is the plain value."""
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    return loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else loader.construct_scalar(node)


# Ansible's tags in inventories and group_vars/: `!vault` values are kept as ansible-inventory
# shows them (fleetctl cannot decrypt them), `!unsafe` ones as their plain value.
_Loader.add_constructor("!unsafe", _unsafe)
_Loader.add_constructor("!vault", lambda loader, node: {"__ansible_vault": loader.construct_scalar(node)})


def load(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"{path}: cannot read {what}: {e.strerror}") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UsageError(f"{where}: {what} is not valid YAML: {e.problem}") from None
