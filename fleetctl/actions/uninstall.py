"""uninstall: the vendor's script; done when app, receipt, launchd job and daemon are gone."""
from __future__ import annotations

from fleetctl import agent, facts
from fleetctl.engine import Session
from fleetctl.plan import HostPlan
from fleetctl.playbook import Playbook


def scripts(plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
    return [("uninstall", "# the hostid path is read from what fleetctl applied on each Mac (default shown)\n"
             + plan.uninstall_script(book.verify_timeout, agent.Paths().hostid_file, book.remove_hostid))]


def run(s: Session) -> None:
    r, book = s.result, s.book
    if not r.version_before and not facts.first(s.state, "daemon_pid"):
        r.status, r.reason = "ok", "agent already absent"
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
    r.status, r.version_after, r.reason = "changed", None, "; ".join(notes) or None
