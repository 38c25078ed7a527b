"""The lab's HTTP proxy for proxy personas: an authenticating front before Debian's tinyproxy.

Why two pieces: the guide says proxy users and passwords may contain `@ : $ ;` (written
percent-encoded in the proxy file), so the lab's accounts contain them. Debian 12 ships
tinyproxy 1.11.1, whose BasicAuth directive takes only [-a-z0-9._] (conf.c: ALNUM WS ALNUM;
quoting does not help). tinyproxy 1.11.2+ takes any password (upstream PR #516), but it is not
packaged here, and its user names still cannot hold ':'. So tinyproxy keeps proxying (CONNECT,
ConnectPort 443, its log) on a loopback address no Mac can reach, and proxyauth.py (stdlib)
listens where the Macs look for the proxy, checks Basic credentials with any characters, and
hands authorised CONNECTs to tinyproxy. tinyproxy resolves the pod's name through the lab's
/etc/hosts, so it runs in its own mount namespace like the Macs do (see boot.py).

Two accounts, for per-proxy credentials: USER (password in DIR/proxy-password) and USER2, whose
name has special characters too (password in DIR/proxy2-password). Both files are 0600.
"""
from __future__ import annotations

import json
import secrets
import sys
import urllib.parse
from pathlib import Path

from fleetctl.lab import network

USER = "fleetproxy"
USER2 = "ops@lab;2"
PASSWORD_FILES = {USER: "proxy-password", USER2: "proxy2-password"}


def inner_address(slot: int) -> str:
    """Where tinyproxy listens: loopback in the root network namespace, out of the Macs' reach."""
    return f"127.77.{slot}.1"


def _new_password() -> str:
    """Random, with every character the guide says must be percent-encoded."""
    return f"lab@{secrets.token_hex(4)}:{secrets.token_hex(4)}${secrets.token_hex(2)};pw"


def password(lab_dir: Path, user: str = USER) -> str:
    return (lab_dir / PASSWORD_FILES[user]).read_text().strip()


def accounts(lab_dir: Path) -> dict[str, str]:
    return {user: password(lab_dir, user) for user in PASSWORD_FILES}


def prepare(lab_dir: Path, slot: int) -> Path:
    """Write the passwords (0600, once), tinyproxy's config and boot file; returns DIR/proxy."""
    pdir = lab_dir / "proxy"
    pdir.mkdir(parents=True, exist_ok=True)
    for name in PASSWORD_FILES.values():
        secret_file = lab_dir / name
        if not secret_file.exists():
            secret_file.write_text(_new_password() + "\n")
            secret_file.chmod(0o600)
    (pdir / "tinyproxy.conf").write_text("\n".join([
        "User nobody",
        "Group nogroup",
        f"Listen {inner_address(slot)}",
        f"Port {network.PROXY_PORT}",
        "Timeout 60",
        "MaxClients 500",
        "LogLevel Connect",
        "Allow 127.0.0.0/8",  # only the front reaches it; credentials are checked there
        "ConnectPort 443",
        "DisableViaHeader Yes",
    ]) + "\n")
    boot = {
        "binds": [[str(lab_dir / "etc" / "hosts"), "/etc/hosts"]],
        "hostname": "",
        "argv": ["/usr/bin/tinyproxy", "-d", "-c", str(pdir / "tinyproxy.conf")],
    }
    (pdir / "boot.json").write_text(json.dumps(boot))
    return pdir


def front_argv(lab_dir: Path, slot: int) -> list[str]:
    """The command that runs the authenticating front (fleetctl/lab/proxyauth.py)."""
    return [sys.executable, "-m", "fleetctl.lab.proxyauth", "--dir", str(lab_dir),
            "--listen", network.controller_address(slot), "--port", str(network.PROXY_PORT),
            "--upstream", f"{inner_address(slot)}:{network.PROXY_PORT}"]


def _encode(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def url(lab_dir: Path, slot: int, with_credentials: bool = False, user: str = USER) -> str:
    """The proxy URL as the agent's proxy file wants it; credentials percent-encoded."""
    creds = ""
    if with_credentials:
        creds = f"{_encode(user)}:{_encode(password(lab_dir, user))}@"
    return f"https://{creds}{network.controller_address(slot)}:{network.PROXY_PORT}"
