"""A fake connection for unit tests: it replays, step by step, what a Mac's scripts print.

Outputs are the key=value facts fleetctl's own scripts print on a Mac, built from the
outputs the guide quotes (pkgutil, launchctl, installer, the agent's log format). The test
then asserts the steps the session ran, so a replay that drifts from the code fails loudly.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from types import SimpleNamespace

import yaml

from fleetctl import engine, inventory, playbook
from fleetctl.actions.common import WITH_PROBE
from fleetctl.plan import Planner
from fleetctl.results import Events, HostResult
from fleetctl.secrets import Secrets
from fleetctl.ssh import Result

ACTIVATION = "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11"
CUSTOMER = "8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22"
NOW = "2026-11-26 10:00:00"
LOG = "2026-11-26 10:00:0{s}.100 [qualys-cloud-agent][412]:[{level}]:[7]:{message}"


STEPS = re.compile(r"printf '\\n%s %s\\n' (\S+) (\d+)\nprintf [^\n]*>&2\n\(\n(.*?)\n\) \|\| exit\n", re.S)


class FakeConnection:
    def __init__(self, replies: list[tuple[str, Result]]):
        self.replies = list(replies)
        self.scripts: list[tuple[str, str, str | None]] = []  # (script, mode, password) as sent, per step
        self.channels = 0  # channels opened (several steps may share one)
        self.bytes_sent = 0
        host_key = SimpleNamespace(get_name=lambda: "ssh-ed25519", get_base64=lambda: "AAAAC3NzaC1lZDI1NTE5AAAAIFake")
        self.transport = SimpleNamespace(get_remote_server_key=lambda: host_key)  # a relay pins it
        self.fabric = SimpleNamespace(user="admin")

    def run(self, script: str, mode: str, password: str | None = None, timeout: float = 900,
            on_output=None) -> Result:
        self.channels += 1
        parts = STEPS.findall(script)
        if parts:  # several steps over one channel (templates/steps.sh.j2): each replays its own reply
            return self._steps(parts, mode, password, on_output)
        assert self.replies, f"the session ran one step more than the test replays:\n{script[:300]}"
        self.scripts.append((script, mode, password))
        return self.replies.pop(0)[1]

    def _steps(self, parts, mode, password, on_output) -> Result:
        """What steps.sh.j2 prints on a Mac: a boundary line on each stream before each part, and
        the channel ends with the first part that fails."""
        out = err = ""
        rc = 0
        for boundary, index, part in parts:
            assert self.replies, f"the session ran one step more than the test replays:\n{part[:300]}"
            self.scripts.append((part, mode, password))
            reply = self.replies.pop(0)[1]
            out += f"\n{boundary} {index}\n" + reply.out
            err += f"\n{boundary} {index}\n" + reply.err
            rc = reply.rc
            if rc != 0:
                break
        if on_output:
            on_output(out.encode())
        return Result(rc, out, err)

    def stream(self, command: str, source, progress, timeout: float = 3600) -> Result:
        data = source.read()
        self.bytes_sent += len(data)
        return self.run(command, "stream")

    def close(self) -> None:
        pass


def facts(**values) -> Result:
    """A script's output: key=value lines (lists repeat the key)."""
    lines = []
    for key, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key}={item}")
    return Result(0, "\n".join(lines) + "\n", "")


def probe(version: str | None = "6.1.0.20", privilege: str = "nopasswd", arch: str = "arm64", memsize: int = 16 << 30,
          daemon_pid: str = "412", hostid: str = "1", applied: list[str] | None = None) -> Result:
    values = {"now": NOW, "macos": "14.5", "memsize": memsize, "arch": arch, "agent_version": version or "",
              "privilege": privilege}
    if privilege in ("root", "nopasswd"):
        values |= {"daemon_pid": daemon_pid, "hostid": hostid, "applied": applied or []}
    return facts(**values)


def preflight(**extra) -> Result:
    return facts(**{"disk_free_kb": 50_000_000, "group_exists": 1, "pod_reached": "direct", **extra})


def verify(version: str = "6.1.0.20", daemon_pid: str = "412", hostid: str = "1", log: list[str] | None = None) -> Result:
    return facts(version=version, daemon_pid=daemon_pid, hostid=hostid, log_line=log or [])


OK = Result(0, "", "")


def write_setup(tmp: Path, pkgs: dict[str, Path], book_text: str, **host_vars) -> tuple[Path, Path]:
    inv = tmp / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"vars": {
        "agent_pkg_arm64": str(pkgs["arm64"]), "agent_pkg_x86_64": str(pkgs["x86_64"]),
        "server_uri": "https://qagpublic.qg1.fleetlab.test/CloudAgent", "fleetctl_known_hosts": str(tmp / "kh")},
        "hosts": {"mac": {"ansible_host": "198.18.255.254", **host_vars}}}}))
    book = tmp / "book.yml"
    book.write_text(book_text)
    return inv, book


def run(tmp: Path, pkgs: dict[str, Path], book_text: str, replies: list[tuple[str, Result]],
        secrets: dict[str, str] | None = None, relays=None, **host_vars) -> tuple[HostResult, FakeConnection]:
    """One Mac through the engine with the action of BOOK_TEXT, over a FakeConnection; RELAYS(plan)
    gives the run's sites, for a Mac with fleetctl_site."""
    inv_path, book_path = write_setup(tmp, pkgs, book_text, **host_vars)
    book = playbook.load(book_path)
    host = inventory.load(inv_path).select("mac")[0]
    store = Secrets(None)
    store.values.update({"activation_id": ACTIVATION, "customer_id": CUSTOMER, **(secrets or {})})
    plan = Planner(book, store).host(host)
    from fleetctl.actions import ACTIONS

    conn = FakeConnection(replies)
    session = engine.Session(plan, book, store, store.masker(), False, Events(), threading.Event(),
                             relays(plan) if relays else None)
    session._connect = lambda: conn
    result = session.run(ACTIONS[book.action])
    ran = [s.name for s in result.steps if s.detail != WITH_PROBE]  # a preflight the probe carried is no channel
    assert ran == [name for name, _ in replies[:len(ran)]], result.steps
    assert not conn.replies, f"steps replayed but never run: {[n for n, _ in conn.replies]} ({result.reason})"
    return result, conn


def run_action(tmp: Path, action, replies: list[tuple[str, Result]], **host_vars) -> HostResult:
    """One Mac through the engine with an action object (status, doctor), no playbook needed."""
    inv = tmp / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"vars": {
        "server_uri": "https://qagpublic.qg1.fleetlab.test/CloudAgent", "fleetctl_known_hosts": str(tmp / "kh")},
        "hosts": {"mac": {"ansible_host": "198.18.255.254", **host_vars}}}}))
    book = playbook.Playbook(tmp / "none.yml", "doctor", "doctor", {})
    plan = Planner(book, None).host(inventory.load(inv).select("mac")[0])
    store = Secrets(None)
    conn = FakeConnection(replies)
    session = engine.Session(plan, book, store, store.masker(), False, Events(), threading.Event())
    session._connect = lambda: conn
    result = session.run(action)
    assert [s.name for s in result.steps] == [name for name, _ in replies], (result.steps, result.reason)
    return result
