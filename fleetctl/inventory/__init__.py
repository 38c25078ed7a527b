"""Hosts and their variables from an existing Ansible inventory, read as ansible-core 2.19 does.

`sources` reads the files (YAML, INI via `ini`, a directory of them, group_vars/, host_vars/)
into a `builder.Builder`, which merges each host's variables in Ansible's order into the
`model`. Variables keep the names Ansible shows; the Host properties pick between old and new
spellings (ansible_ssh_user, ...) as Ansible's ssh connection does. A host whose variables
cannot work is kept and shown; `check` refuses it when a run selects it.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Callable

from fleetctl import sshconfig
from fleetctl.errors import UsageError
from fleetctl.inventory import sources
from fleetctl.inventory.builder import Builder
from fleetctl.inventory.model import (BECOME_PASSWORDS, KEYRING_LOOKUP, LOGIN_PASSWORDS, REFUSED, Host, Inventory,
                                      apply_extra_vars, check, problems)
from fleetctl.inventory.view import describe, graph, listing, notes
from fleetctl.sshconfig import Endpoint

__all__ = ["BECOME_PASSWORDS", "KEYRING_LOOKUP", "LOGIN_PASSWORDS", "REFUSED", "Host", "Inventory", "apply_extra_vars", "check", "describe", "endpoint", "graph", "listing",
           "load", "notes", "problems"]


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load(path: Path, warn: Callable[[str], None] | None = _stderr) -> Inventory:
    """Read an inventory; syntax errors name the file, the line and the fix. A host whose own
    variables cannot work is kept (see `problems`): `check` refuses it when it is selected."""
    builder = Builder()
    sources.read(path, builder)
    inv = builder.build(path)
    for message in inv.warnings if warn else ():
        warn(message)
    return inv


def endpoint(host: Host) -> Endpoint:
    """Where HOST is reached: inventory variables win over ~/.ssh/config, as with Ansible. A host
    whose variables cannot work (see problems) is refused here, before any connection."""
    check(host)
    return sshconfig.resolve(host.address, host.user, host.port, host.key_file, _jump(host), host.ssh_config,
                             host.where)


def _jump(host: Host) -> str | None:
    """ProxyJump given the Ansible way, in any of the variables whose words Ansible passes to ssh:
    ansible_ssh_common_args, ansible_ssh_extra_args, ansible_ssh_args ('-J bastion',
    '-o ProxyJump=bastion'). A ProxyCommand there is refused, never ignored."""
    for name in ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args"):
        try:
            words = shlex.split(str(host.vars.get(name) or ""))
        except ValueError:
            raise UsageError(f"{host.where}: {name} has unbalanced quotes") from None
        for i, word in enumerate(words):
            if word == "-J" and i + 1 < len(words):
                return words[i + 1]
            if word.startswith("-J") and len(word) > 2:
                return word[2:].strip()
            option = words[i + 1] if word == "-o" and i + 1 < len(words) else word[2:] if word.startswith("-o") else ""
            key, _, value = option.strip().replace("=", " ", 1).partition(" ")
            if key.lower() == "proxyjump":
                return value.strip()
            if key.lower() == "proxycommand":
                raise UsageError(f"{host.where}: ProxyCommand in {name} is not supported; use -J bastion")
    return None
