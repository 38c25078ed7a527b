"""`fleetctl doctor`: does every assumption fleetctl makes hold on these Macs? Read-only.

The checking is the doctor action's (actions/doctor.py, assumptions.py), run by the engine
like every action; here: the sweep, the summary grouped by outcome, JSON, and `--record`.
"""
from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fleetctl import __version__, engine, outfile
from fleetctl.actions.doctor import Doctor
from fleetctl.assumptions import CREDENTIALS, Finding
from fleetctl.inventory import Host
from fleetctl.plan import HostPlan, Planner
from fleetctl.playbook import Playbook
from fleetctl.results import Events, ExitCode, HostResult
from fleetctl.secrets import Secrets
from fleetctl.status import STEP_TIMEOUT

BOOK = Playbook(Path("doctor"), "doctor", "doctor", {})  # doctor needs no playbook: a stand-in
# An address, not an agent version (6.1.0.20 has the same shape)
IPV4 = re.compile(r"(?<![Vv]ersion: )(?<![Vv]ersion[= ])\b(?:\d{1,3}\.){3}\d{1,3}\b")
SERIAL = re.compile(r"(Serial Number[^:]*:\s*)\S+")


def sweep(hosts: list[Host], secrets: Secrets, forks: int, accept_new: bool,
          step_timeout: int = STEP_TIMEOUT) -> tuple[Doctor, list[HostResult], list[HostPlan]]:
    planner = Planner(BOOK, secrets)  # proxy passwords: the platform is tried through them
    plans = [planner.host(h) for h in hosts]
    doctor = Doctor()
    results = engine.run_all(doctor, plans, replace(BOOK, step_timeout=step_timeout), secrets, forks,
                             accept_new, Events(), threading.Event(), threading.Event())
    return doctor, results, plans


def outcome(result: HostResult, findings: list[Finding]) -> tuple[tuple[str, str], ...]:
    """What a Mac has in common with others: its problems, excerpts included."""
    if result.status == "unreachable" or not findings:
        return (("unreachable", result.reason or ""),)
    return tuple((f.name, f"{f.verdict}" + (f": {f.excerpt}" if f.excerpt else "") + f" (affects {f.feature})")
                 for f in findings if f.verdict != "ok")


def show(console: Console, doctor: Doctor, results: list[HostResult]) -> None:
    groups: dict[tuple, list[str]] = defaultdict(list)
    for r in results:
        groups[outcome(r, doctor.findings.get(r.name, []))].append(r.name)
    for problems, names in sorted(groups.items(), key=lambda kv: (bool(kv[0]), -len(kv[1]))):
        macs = f"{len(names)} Mac{'s' if len(names) > 1 else ''}"
        shown = ", ".join(names[:8]) + (" …" if len(names) > 8 else "")
        if not problems:
            console.print(f"{macs}: all assumptions hold ({shown})", style="green", markup=False, highlight=False)
            continue
        table = Table(title=f"{macs}: {shown}", title_justify="left")
        table.add_column("assumption")
        table.add_column("what this Mac says, and what depends on it", overflow="fold")
        for name, said in problems:
            table.add_row(name, said)
        console.print(table)


def exit_code(doctor: Doctor, results: list[HostResult]) -> ExitCode:
    return ExitCode.OK if all(r.status == "ok" for r in results) else ExitCode.FAILED


def as_json(doctor: Doctor, results: list[HostResult]) -> dict:
    return {"schema": "fleetctl.doctor/1", "fleetctl": __version__, "hosts": [
        {"name": r.name, "status": r.status, "reason": r.reason,
         "findings": [asdict(f) for f in doctor.findings.get(r.name, [])]} for r in results]}


def write_json(path: Path, doctor: Doctor, results: list[HostResult]) -> None:
    outfile.write(path, json.dumps(as_json(doctor, results), indent=1) + "\n")


class Anonymizer:
    """Stable placeholders for what identifies a fleet: host names, addresses, user names,
    serial numbers, the platform's name; secrets are masked."""

    def __init__(self, secrets: Secrets):
        self.mask = secrets.masker()
        self.names: dict[str, str] = {}

    def learn(self, kind: str, value: str | None) -> None:
        if value and value not in self.names:
            self.names[value] = f"{kind}-{sum(1 for v in self.names.values() if v.startswith(kind)) + 1}"

    def __call__(self, text: str) -> str:
        text = CREDENTIALS.sub("://***@", self.mask(text))
        for value in sorted(self.names, key=len, reverse=True):
            text = text.replace(value, self.names[value])
        text = IPV4.sub(lambda m: self._address(m[0]), text)
        return SERIAL.sub(r"\1SERIAL", text)

    def _address(self, address: str) -> str:
        self.learn("addr", address)
        return "192.0.2." + self.names[address].split("-")[1]  # TEST-NET-1: never a real Mac


def record(directory: Path, doctor: Doctor, results: list[HostResult], plans: list[HostPlan],
           secrets: Secrets) -> None:
    """One folder per Mac with every raw output, in the format tests/unit replays (docs/doctor-record.md)."""
    hide = Anonymizer(secrets)
    for plan in plans:
        hide.learn("mac", plan.host.name)
        hide.learn("addr", plan.endpoint.hostname)
        hide.learn("user", plan.host.user if plan.host.user != "root" else None)  # root names nobody
        hide.learn("pod", re.sub(r"^https://([^/:]+).*$", r"\1", plan.pod_url) if plan.pod_url else None)
    by_name = {p.host.name: p for p in plans}
    for result in results:
        if result.name not in doctor.outputs:
            continue
        folder = directory / hide(result.name)
        folder.mkdir(parents=True, exist_ok=True)
        for step, text in doctor.outputs[result.name].items():
            (folder / f"{step}.out").write_text(hide(text))
        meta = {"fleetctl": __version__, "controller_epoch": doctor.clock[result.name],
                "pod_checked": bool(by_name[result.name].pod_url), "arch": result.arch,
                "verdicts": {f.name: f.verdict for f in doctor.findings[result.name]}}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
