"""The lab's HTTP proxy with basic auth (Debian's tinyproxy) for proxy personas.

It resolves the pod's name through the lab's /etc/hosts, so it runs in its own mount
namespace like the Macs do (see boot.py).
"""
from __future__ import annotations

import json
import secrets
from pathlib import Path

from fleetctl.lab import network

USER = "fleetproxy"


def prepare(lab_dir: Path, slot: int) -> Path:
    """Write the proxy's config and boot file; the password lands in DIR/proxy-password (0600)."""
    pdir = lab_dir / "proxy"
    pdir.mkdir(parents=True, exist_ok=True)
    secret_file = lab_dir / "proxy-password"
    if not secret_file.exists():
        # tinyproxy accepts only [-a-z0-9._] in BasicAuth credentials.
        secret_file.write_text(f"lab-{secrets.token_hex(8)}.pw\n")
        secret_file.chmod(0o600)
    password = secret_file.read_text().strip()
    (pdir / "tinyproxy.conf").write_text("\n".join([
        "User nobody",
        "Group nogroup",
        f"Listen {network.controller_address(slot)}",
        f"Port {network.PROXY_PORT}",
        "Timeout 60",
        "MaxClients 500",
        "LogLevel Connect",
        f"Allow {network.controller_address(slot)}/19",
        f"BasicAuth {USER} {password}",
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


def url(lab_dir: Path, slot: int, with_credentials: bool = False) -> str:
    creds = f"{USER}:{(lab_dir / 'proxy-password').read_text().strip()}@" if with_credentials else ""
    return f"https://{creds}{network.controller_address(slot)}:{network.PROXY_PORT}"
