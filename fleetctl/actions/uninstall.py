"""uninstall: the vendor's script; done when app, receipt, launchd job and daemon are gone.

With platform_uninstall the Mac's agent UUID is read (and journaled) first: the hostid file
may go with the agent, and the platform finds the agent by that UUID (platform.py).
"""
from __future__ import annotations

import re
from typing import Callable

from fleetctl import agent, facts, render
from fleetctl.engine import Session
from fleetctl.plan import APPLIED_FILE, HostPlan
from fleetctl.playbook import Playbook

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def scripts(plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
    read = [("agent id (platform_uninstall: journaled before the uninstall)", agent_id_script())] \
        if book.platform_uninstall else []
    return read + [("uninstall", "# the hostid path is read from what fleetctl applied on each Mac (default shown)\n"
                    + plan.uninstall_script(book.verify_timeout, agent.Paths().hostid_file, book.remove_hostid))]


def agent_id_script() -> str:
    return render.render("agent_id", applied_file=APPLIED_FILE, defaults=agent.Paths())


def agent_id(s: Session) -> str | None:
    """The agent UUID in this Mac's hostid file; None when there is none (or it is not a UUID)."""
    out = facts.parse(s.step("agent id", agent_id_script(), privileged=True).out)
    value = facts.first(out, "agent_uuid")
    if value and not UUID.fullmatch(value):
        s.notes.append(f"the hostid at {facts.first(out, 'hostid_file')} holds no agent UUID; the platform "
                       "cannot be asked about this agent")
        return None
    return value.lower() or None


def run(s: Session, remember: Callable[[str, str], None] | None = None) -> None:
    """REMEMBER(name, agent UUID), when given, is called before anything on the Mac changes."""
    r, book = s.result, s.book
    if remember:
        found = agent_id(s)
        if found:
            remember(r.name, found)
    if not r.version_before and not facts.first(s.state, "daemon_pid"):
        r.status, r.reason = "ok", s.with_notes("agent already absent")
        return
    hostid = s.paths.hostid_file
    out = facts.parse(s.step("uninstall", s.plan.uninstall_script(
        book.verify_timeout, hostid, book.remove_hostid), privileged=True).out)
    left = out.get("left", [])
    if left:
        raise s.check_failed(f"uninstall left behind: {', '.join(left)}")
    notes = []
    if facts.first(out, "job_listed") == "1":
        notes.append(f"launchd still lists {agent.LABEL} without a process (a known macOS delay, the guide)")
    if facts.first(out, "hostid_left") == "1":
        notes.append(f"hostid kept at {hostid} (set remove_hostid: true to remove it)")
    elif book.remove_hostid:
        notes.append(f"hostid removed from {hostid}")
    r.status, r.version_after, r.reason = "changed", None, s.with_notes("; ".join(notes) or None)


class Remembering:
    """The uninstall action that hands each Mac's agent UUID to REMEMBER before the agent goes."""

    def __init__(self, remember: Callable[[str, str], None]):
        self.remember = remember

    def scripts(self, plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
        return scripts(plan, book)

    def run(self, s: Session) -> None:
        run(s, self.remember)
