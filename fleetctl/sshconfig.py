"""Where and how to reach a Mac, as OpenSSH would: the inventory first, then ~/.ssh/config
(Host patterns, HostName, User, Port, IdentityFile, ProxyJump, ConnectTimeout), then defaults.

Resolved before the first connection, so a broken ssh config is a usage error, not a host failure.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import paramiko

from fleetctl import inventory
from fleetctl.errors import UsageError
from fleetctl.inventory import Host

DEFAULT_TIMEOUT = 10.0
MAX_JUMPS = 5
JUMP_SPEC = re.compile(r"(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:\s@]+)(?::(?P<port>\d+))?")


@dataclass(frozen=True)
class Endpoint:
    hostname: str
    port: int
    user: str | None
    key_files: tuple[str, ...]
    timeout: float
    jump: "Endpoint | None" = None

    def __str__(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname  # IPv6, as OpenSSH writes it
        return f"{self.user + '@' if self.user else ''}{host}:{self.port}"


@lru_cache(maxsize=8)
def _config(path: Path) -> paramiko.SSHConfig:
    if not path.exists():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except (OSError, ValueError, paramiko.ConfigParseError) as e:
        raise UsageError(f"{path}: cannot read this ssh config: {e}") from None


def _timeout(value: str | None, where: str) -> float:
    if value is None:
        return DEFAULT_TIMEOUT
    if not value.isdigit() or int(value) == 0:
        raise UsageError(f"{where}: ConnectTimeout must be a whole number of seconds, not {value!r}")
    return float(value)


def _resolve(alias: str, user: str | None, port: int | None, key_file: str | None, jump: str | None,
             config_path: Path, where: str, depth: int = 0) -> Endpoint:
    if depth > MAX_JUMPS:
        raise UsageError(f"{where}: ProxyJump chain is longer than {MAX_JUMPS} hops (a loop?); check {config_path}")
    cfg = _config(config_path).lookup(alias)
    if "proxycommand" in cfg and not (jump or cfg.get("proxyjump")):
        raise UsageError(f"{where}: ProxyCommand in {config_path} is not supported; use ProxyJump")
    keys = tuple(str(Path(k).expanduser()) for k in ([key_file] if key_file else cfg.get("identityfile", [])))
    config_port = cfg.get("port", "22")
    if not config_port.isdigit():
        raise UsageError(f"{where}: Port {config_port!r} in {config_path} is not a number")
    chain = [s for s in (jump or cfg.get("proxyjump") or "").split(",") if s.strip()]
    hop = None
    if chain and chain != ["none"]:
        for spec in chain:  # the first jump is reached first; each next one through the previous
            hop = _jump(spec.strip(), hop, keys, config_path, where, depth + 1)
    return Endpoint(cfg.get("hostname", alias), port or int(config_port), user or cfg.get("user"), keys,
                    _timeout(cfg.get("connecttimeout"), where), hop)


def _jump(spec: str, via: Endpoint | None, keys: tuple[str, ...], config_path: Path, where: str,
          depth: int) -> Endpoint:
    """A jump host without an IdentityFile of its own uses the Mac's key (one key for the fleet)."""
    match = JUMP_SPEC.fullmatch(spec)
    if not match:
        raise UsageError(f"{where}: ProxyJump {spec!r} is not [user@]host[:port]")
    host = match["host"].strip("[]")
    inner = _resolve(host, match["user"], int(match["port"]) if match["port"] else None, None,
                     "none" if via else None, config_path, where, depth)
    return Endpoint(inner.hostname, inner.port, inner.user, inner.key_files or keys, inner.timeout, via or inner.jump)


def _jump_from_ansible(host: Host) -> str | None:
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


def endpoint(host: Host) -> Endpoint:
    """Where HOST is reached: inventory variables win over ~/.ssh/config, as with Ansible. A host
    whose variables cannot work (see inventory.problems) is refused here, before any connection."""
    inventory.check(host)
    return _resolve(host.address, host.user, host.port, host.key_file, _jump_from_ansible(host),
                    host.ssh_config, host.where)
