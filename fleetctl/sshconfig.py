"""Where and how to reach a Mac, as OpenSSH would: the inventory first, then ~/.ssh/config
(Host patterns, HostName, User, Port, IdentityFile, ProxyJump, ConnectTimeout), then defaults.

Resolved before the first connection, so a broken ssh config is a usage error, not a host failure.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import paramiko

from fleetctl.errors import UsageError

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


def resolve(alias: str, user: str | None, port: int | None, key_file: str | None, jump: str | None,
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
    inner = resolve(host, match["user"], int(match["port"]) if match["port"] else None, None,
                     "none" if via else None, config_path, where, depth)
    return Endpoint(inner.hostname, inner.port, inner.user, inner.key_files or keys, inner.timeout, via or inner.jump)


