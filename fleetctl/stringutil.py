"""`fleetctl proxy-encrypt`: the package's own string-util, run once on one Mac, as the guide shows.

The guide: string-util is "included in the installation package; install or extract the
package to get it", run as root as `./string-util "<text>"` once per credential, printing
the encoded value; the proxy file then holds it after a `#`. Where string-util sits inside
an installed app is not documented, so fleetctl takes it from the package itself.
"""
from __future__ import annotations

import gzip
import io
import os
import secrets as random
import urllib.parse
from pathlib import Path

from fleetctl import agent, facts, render, sshconfig, ssh, xar
from fleetctl.errors import FleetError, UsageError
from fleetctl.inventory import Host
from fleetctl.lab import cpio  # the odc cpio format of package payloads (shared with the lab's installer)
from fleetctl.plan import APPLIED_FILE
from fleetctl.secrets import Secrets

NAME = "string-util"


def extract(pkg: Path) -> bytes:
    """The bytes of the one string-util inside PKG's payload(s)."""
    try:
        with open(pkg, "rb") as f:
            reader = xar.Reader(f)
            payloads = [m for m in reader.members if m == "Payload" or m.endswith("/Payload")]
            found = [data for m in payloads for name, _mode, data in cpio.read(io.BytesIO(gzip.decompress(reader.read(m))))
                     if os.path.basename(name) == NAME]
    except OSError as e:
        raise UsageError(f"{pkg}: cannot read package: {e.strerror or e}") from None
    except (xar.XarError, ValueError, EOFError) as e:
        raise UsageError(f"{pkg}: cannot read the package payload: {e}") from None
    if len(found) != 1:
        raise UsageError(f"{pkg}: expected one {NAME} in the package payload, found {len(found)}")
    return found[0]


def _package(host: Host, arch: str, given: Path | None) -> Path:
    if given:
        return given
    value = host.vars.get(f"agent_pkg_{arch}")
    if not value:
        raise UsageError(f"{host.where}: no agent_pkg_{arch} for this {arch} Mac; pass --pkg")
    return Path(os.path.expanduser(str(value)))


def encrypt(host: Host, text: str, pkg: Path | None, secrets: Secrets, accept_new: bool) -> str:
    """TEXT URL-encoded, then encrypted by string-util on HOST; returned with its leading '#'."""
    conn = ssh.Connection(sshconfig.endpoint(host), host.known_hosts, accept_new)
    try:
        probe = facts.parse(conn.run(render.render("probe", package_id=agent.PACKAGE_ID, label=agent.LABEL,
                                                   defaults=agent.Paths(), applied_file=APPLIED_FILE)).out)
        mode, password = _privilege(host, facts.first(probe, "privilege"), secrets)
        tool = extract(_package(host, facts.first(probe, "arch"), pkg))
        staged = f"/private/var/tmp/fleetctl-{host.user or 'user'}/{random.token_hex(8)}"  # private, this call only
        path = f"{staged}/{NAME}"
        sent = conn.stream(render.render("upload", staged_dir=staged, staged=path), io.BytesIO(tool), lambda n: None)
        if sent.rc != 0:
            raise FleetError(f"{host.name}: could not copy {NAME}: {sent.err.strip()}")
        done = conn.run(render.render("string_util", staged=path, text=urllib.parse.quote(text, safe="")), mode, password)
    finally:
        conn.close()
    value = done.out.strip().splitlines()[-1:] if done.out.strip() else []
    if done.rc != 0 or not value:
        raise FleetError(f"{host.name}: {NAME} failed: {(done.err or done.out).strip()[-300:] or f'exit {done.rc}'}")
    return "#" + value[0].lstrip("#")


def _privilege(host: Host, privilege: str, secrets: Secrets) -> tuple[str, str | None]:
    """string-util needs root (the guide): root login, sudo -n, or the host's sudo password."""
    if privilege == "root":
        return ssh.SHELL, None
    if privilege == "nopasswd":
        return ssh.SUDO_NOPASSWD, None
    secret = host.vars.get("fleetctl_become_secret")
    if privilege == "password" and secret:
        return ssh.SUDO_PASSWORD, secrets.get(str(secret), "sudo password")
    raise FleetError(f"{host.name}: {NAME} must run as root and {host.user} cannot sudo here"
                     + (" without a password: set fleetctl_become_secret" if privilege == "password" else ""))
