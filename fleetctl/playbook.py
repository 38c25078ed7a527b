"""A playbook: the action, the agent's options and default variables, validated with line numbers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetctl import agent, yamlfile
from fleetctl.errors import UsageError

ACTIONS = ("install",)
KEYS = {"name", "action", "agent", "vars", "verify_timeout"}


@dataclass
class Playbook:
    path: Path
    action: str
    name: str
    options: dict[str, str]  # configuration-tool options other than the secrets and ServerUri
    vars: dict[str, Any] = field(default_factory=dict)
    verify_timeout: int = 60


def load(path: Path) -> Playbook:
    data = yamlfile.load(path, "playbook")
    if not isinstance(data, dict):
        raise UsageError(f"{path}:1: a playbook is a mapping with action:, agent: and vars:")
    for key in data:
        if key not in KEYS:
            raise UsageError(f"{path}:{data.line_of(key)}: unknown key {key!r}; use {', '.join(sorted(KEYS))}")
    action = data.get("action")
    if action not in ACTIONS:
        raise UsageError(f"{path}:{data.line_of('action')}: action must be one of {', '.join(ACTIONS)}, "
                         f"not {action!r}")
    options = data.get("agent") or yamlfile.Mapping()
    if not isinstance(options, dict):
        raise UsageError(f"{path}:{data.line_of('agent')}: agent: must map option names to values")
    clean: dict[str, str] = {}
    for key, value in options.items():
        line = options.line_of(key) if isinstance(options, yamlfile.Mapping) else 0
        if key in agent.SECRET_OPTIONS:
            raise UsageError(f"{path}:{line}: {key} is a secret; store it with `fleetctl secrets set "
                             f"{key.replace('Id', '_id').lower()}` instead of writing it in a playbook")
        if key == "ServerUri":
            raise UsageError(f"{path}:{line}: set the platform with the server_uri variable, not agent: ServerUri")
        problem = agent.option_problem(key, value)
        if problem:
            raise UsageError(f"{path}:{line}: {problem}")
        clean[key] = str(value).lower() if isinstance(value, bool) else str(value)
    variables = data.get("vars") or {}
    if not isinstance(variables, dict):
        raise UsageError(f"{path}:{data.line_of('vars')}: vars: must map names to values")
    timeout = data.get("verify_timeout", 60)
    if not isinstance(timeout, int) or not 5 <= timeout <= 3600:
        raise UsageError(f"{path}:{data.line_of('verify_timeout')}: verify_timeout must be 5 to 3600 seconds")
    return Playbook(path, action, str(data.get("name") or action), clean, dict(variables), timeout)
