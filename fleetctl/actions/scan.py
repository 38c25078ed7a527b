"""scan: the guide's signals only: the ControlId printed, then the request (or its delay) in the
agent's log. Completion is reported only when the admin gave scan_done_pattern."""
from __future__ import annotations

import re

from fleetctl import agent, agentlog, facts, render
from fleetctl.actions import common
from fleetctl.engine import Session
from fleetctl.plan import HostPlan
from fleetctl.playbook import Playbook


def script(book: Playbook, paths: agent.Paths) -> str:
    return render.render("scan", ctl=f"{agent.APP_BIN}/cloudagentctl.sh", scan_type=book.scan_type,
                         cputhrottle=book.scan_cputhrottle, paths=paths, wait_s=book.scan_timeout)


def scripts(plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
    return [("scan (log paths as fleetctl applied them on each Mac; defaults shown)", script(book, agent.Paths()))]


def run(s: Session) -> None:
    r, book = s.result, s.book
    common.require_agent(s, "")
    res = s.step("scan", script(book, s.paths), privileged=True, check=False)
    out = facts.parse(res.out)
    control = next((l.split(": ", 1)[1] for l in res.out.splitlines() if l.startswith("On-Demand-Request")), None)
    if res.rc != 0 or not control:
        said = (res.err or res.out).strip().splitlines()[-1:] or [f"exit {res.rc}"]
        raise s.check_failed(s.mask(f"scan request refused by cloudagentctl.sh: {said[0]}")
                             + (f" (is the agent activated for {book.scan_type.upper()}?)" if res.rc else ""))
    events = [e for e in agentlog.parse("\n".join(out.get("log_line", []))) if e.control_id == control]
    kinds = {e.kind for e in events}
    if "scan_request" not in kinds and "scan_delayed" not in kinds:
        raise s.check_failed(f"scan {control}: the agent did not log the request within {book.scan_timeout}s")
    state = "delayed behind an interval scan" if "scan_delayed" in kinds else "requested"
    if book.scan_done_pattern:
        pattern = re.compile(book.scan_done_pattern.replace("{control_id}", re.escape(control)))
        if not common.wait_for(s, pattern, facts.first(out, "since"), book.scan_timeout):
            raise s.check_failed(f"scan {control} {state}, but scan_done_pattern did not appear "
                                 f"within {book.scan_timeout}s")
        state = "done (scan_done_pattern seen)"
    r.status, r.reason = "ok", f"scan {control} {state}"
