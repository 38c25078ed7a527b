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
import threading
import urllib.parse
from pathlib import Path


from fleetctl import cpio, render, xar
from fleetctl.engine import HostFailed, Session
from fleetctl.errors import FleetError, UsageError
from fleetctl.inventory import Host
from fleetctl.plan import HostPlan, Planner
from fleetctl.playbook import Playbook
from fleetctl.results import Events
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


class Encrypt:
    """The action: copy string-util from the package to a private directory, run it once as
    root, remove it. Runs through the engine's session (connect, probe, sudo) like every action."""

    def __init__(self, text: str, pkg: Path | None):
        self.text, self.pkg = urllib.parse.quote(text, safe=""), pkg
        self.value: str | None = None

    def scripts(self, plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
        return [(NAME, render.render("string_util", staged=f"{plan.staged_dir}/<random>/{NAME}", text="<text>"))]

    def run(self, s: Session) -> None:
        tool = extract(_package(s.plan.host, s.result.arch or "", self.pkg))
        staged = f"{s.plan.staged_dir}/{random.token_hex(8)}"  # private, this call only
        path = f"{staged}/{NAME}"
        sent = s.conn.stream(render.render("upload", staged_dir=staged, staged=path), io.BytesIO(tool), s.events.sent)
        if sent.rc != 0:
            raise HostFailed(f"could not copy {NAME}: {sent.err.strip() or f'exit {sent.rc}'}")
        out = s.step(NAME, render.render("string_util", staged=path, text=self.text), privileged=True).out.strip()
        if not out:
            raise s.check_failed(f"{NAME} printed nothing")
        self.value = "#" + out.splitlines()[-1].lstrip("#")
        s.result.status = "ok"


def encrypt(host: Host, text: str, pkg: Path | None, secrets: Secrets, accept_new: bool) -> str:
    """TEXT URL-encoded, then encrypted by string-util on HOST; returned with its leading '#'."""
    book = Playbook(Path("proxy-encrypt"), "proxy-encrypt", "proxy-encrypt", {})
    plan = Planner(book, None).host(host)
    if plan.become_secret:
        secrets.get(plan.become_secret, "sudo password")
    secrets.values["text to encrypt"] = text  # masked wherever output is kept
    action = Encrypt(text, pkg)
    result = Session(plan, book, secrets, secrets.masker(), accept_new, Events(), threading.Event()).run(action)
    if action.value is None:
        raise FleetError(f"{host.name}: {result.reason or 'string-util failed'}")
    return action.value
