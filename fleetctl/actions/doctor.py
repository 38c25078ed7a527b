"""doctor: read-only; capture raw what fleetctl parses, and judge every assumption on it.

Two steps after the probe: one as the login user (what preflight and the probe run as), one
with the sudo mode the probe found (receipt, launchd, hostid, log, proxy file). Nothing on
the Mac is written or changed.
"""
from __future__ import annotations

import time

from fleetctl import agent, render
from fleetctl.assumptions import Finding, Sections, check
from fleetctl.engine import Session
from fleetctl.plan import APPLIED_FILE, HostPlan
from fleetctl.playbook import Playbook

MARK = "@@@ "


def sections(output: str) -> Sections:
    """`@@@ name` ... `@@@ rc=N` blocks -> name: (N, the output between)."""
    found: Sections = {}
    name, lines = None, []
    for line in output.splitlines():
        if line.startswith(MARK + "rc=") and name is not None:
            rc = line[len(MARK) + 3:]
            found[name] = (int(rc) if rc.lstrip("-").isdigit() else 1, "\n".join(lines) + ("\n" if lines else ""))
            name, lines = None, []
        elif line.startswith(MARK):
            name, lines = line[len(MARK):].strip(), []
        elif name is not None:
            lines.append(line)
    return found


class Doctor:
    """The doctor action for one sweep; what each Mac printed and what was found, by name."""

    needs_root = False  # without root it still checks everything a login user can see

    def __init__(self, now: float | None = None):
        self.now = now  # the controller's clock to compare with (a recording replays its own)
        self.outputs: dict[str, dict[str, str]] = {}  # host -> step -> raw output (for --record)
        self.findings: dict[str, list[Finding]] = {}
        self.clock: dict[str, float] = {}  # host -> the controller's clock when the Mac's was read

    def script(self, plan: HostPlan, part: str) -> str:
        return render.render(
            "doctor", part=part, tool_paths=agent.TOOL_PATHS, routes=plan.routes if plan.pod_url else [],
            pod_url=plan.pod_url, package_id=agent.PACKAGE_ID, label=agent.LABEL, applied_file=APPLIED_FILE,
            defaults=agent.Paths(), proxy_file=agent.PROXY_FILE)

    def scripts(self, plan: HostPlan, book: Playbook) -> list[tuple[str, str]]:
        return [(f"doctor ({part})", self.script(plan, part)) for part in ("user", "root")]

    def run(self, s: Session) -> None:
        name = s.result.name
        outputs = self.outputs[name] = {"probe": s.probe_output}
        started = time.time()
        outputs["doctor-user"] = s.step("doctor-user", self.script(s.plan, "user"), check=False).out
        self.clock[name] = self.now if self.now is not None else (started + time.time()) / 2
        found = sections(outputs["doctor-user"])
        if s.has_root:
            outputs["doctor-root"] = s.step("doctor-root", self.script(s.plan, "root"), privileged=True,
                                            check=False).out
            found |= sections(outputs["doctor-root"])
        findings = self.findings[name] = check(found, s.result.arch, self.clock[name], bool(s.plan.pod_url))
        problems = [f for f in findings if f.verdict != "ok"]
        s.result.status = "failed" if problems else "ok"
        s.result.reason = "; ".join(f"{f.name}: {f.verdict}" for f in problems) or None
