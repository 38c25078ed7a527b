"""`fleetctl run`, `resume`, `plan`, `runs` and `report`: inputs in, validated plan, waves of the
engine with failure thresholds, every transition in the journal, then the report."""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console
from rich.table import Table

from fleetctl import engine, inventory, outfile, playbook, relay, report, report_files, status
from fleetctl.actions import ACTIONS
from fleetctl.errors import UsageError
from fleetctl.journal import DONE, Journal
from fleetctl.plan import HostPlan, Planner
from fleetctl.report_files import Outputs
from fleetctl.results import Events, ExitCode, HostResult, Step, exit_code
from fleetctl.secrets import Secrets
from fleetctl.waves import assign

GATED = ("install", "upgrade")
SOAK_STEP_S = 1.0


def parse_extra_vars(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"-e {pair!r}: write KEY=VALUE, e.g. -e server_uri=https://host/CloudAgent")
        try:
            extra[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            extra[key] = value
    return extra


def _plans(playbook_path: Path, inventory_path: Path, limit: str | None, extra, secrets: Secrets | None):
    book = playbook.load(playbook_path)
    inv = inventory.load(inventory_path)
    hosts = inv.select(limit)
    for host in hosts:  # inventory < playbook vars < -e, as in Ansible
        host.vars = {**host.vars, **book.vars}
    inventory.apply_extra_vars(hosts, parse_extra_vars(extra))
    planner = Planner(book, secrets)
    plans = [planner.host(h) for h in hosts]
    if secrets is not None:  # every sudo password is asked for now, once, never mid-run
        for name in sorted({p.become_secret for p in plans if p.become_secret}):
            secrets.get(name, "sudo password")
    return book, inv, plans


def show_plan(playbook_path: Path, inventory_path: Path, limit: str | None, extra, console: Console) -> None:
    """Print the scripts each host would run (identical hosts grouped), secrets as placeholders."""
    book, inv, plans = _plans(playbook_path, inventory_path, limit, extra, secrets=None)
    _warn(book, console)
    groups: dict[str, list[str]] = {}
    for p in plans:
        groups.setdefault(_scripts(p, book), []).append(p.host.name)
    console.print(f"# {book.name}: action {book.action}, {len(plans)} hosts", markup=False, highlight=False)
    for wave, names in assign([p.host.name for p in plans], inv.groups, book.waves, book.max_fail):
        console.print(f"# wave {wave.name!r}: {len(names)} hosts" + (f", not before {wave.not_before}" if wave.not_before
                      else "") + (f", soak {wave.soak_s}s" if wave.soak_s else ""), markup=False, highlight=False)
    for scripts, names in groups.items():
        console.print(f"\n# ==== {len(names)} host(s): {', '.join(names)}", markup=False, highlight=False)
        console.print(scripts, markup=False, highlight=False)


def _scripts(p: HostPlan, book: playbook.Playbook) -> str:
    parts = ACTIONS[book.action].scripts(p, book)
    return "\n".join(f"# --- {name}\n{text}" for name, text in parts)


def _warn(book: playbook.Playbook, console: Console) -> None:
    if book.log_level_warning:
        console.print(book.log_level_warning, style="yellow", markup=False, highlight=False)


class Runner:
    """One run (new or resumed): waves in order, thresholds, soak, health gate, journal."""

    def __init__(self, journal: Journal, run_id: str, book: playbook.Playbook, plans: list[HostPlan],
                 secrets: Secrets, forks: int, accept_new: bool, console: Console, use_relays: bool = True):
        self.journal, self.run_id, self.book, self.plans = journal, run_id, book, {p.host.name: p for p in plans}
        self.secrets, self.forks, self.accept_new, self.console = secrets, forks, accept_new, console
        self.use_relays = use_relays and book.action in GATED  # only install and upgrade send packages
        self.stop, self.abort = threading.Event(), threading.Event()
        self.failed_total = 0

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def execute(self, waves: list[tuple[Any, list[str]]], total_hosts: int, already_failed: int) -> str:
        """Run the pending hosts of each wave; returns the run's state."""
        self.failed_total = already_failed
        budget = self.book.failure_budget.of(total_hosts) if self.book.failure_budget else None
        for index, (wave, names) in enumerate(waves):
            pending = [n for n in names if n in self.plans]
            if not pending:
                continue
            closed = wave.closed(datetime.now())
            if closed:
                self._say(f"wave {wave.name!r} {closed}; run is waiting. Continue with: fleetctl resume {self.run_id}")
                return "waiting"
            allowed = wave.max_fail.of(len(names)) if wave.max_fail else len(names)
            if len(waves) > 1 or wave.max_fail:
                self._say(f"wave {wave.name!r}: {len(pending)} hosts (may fail: {allowed})")
            wave_failed = 0
            started = datetime.now(timezone.utc)
            window_closed = threading.Event()

            def over() -> bool:
                return wave_failed > allowed or (budget is not None and self.failed_total > budget)

            def done(result: HostResult) -> None:
                nonlocal wave_failed
                if result.status == "pending":
                    return
                self.journal.host_done(self.run_id, result.name, result.status, result.reason, asdict(result))
                if result.status in ("failed", "unreachable"):
                    wave_failed += 1
                    self.failed_total += 1
                    if over():
                        self.stop.set()
                if wave.window and wave.closed(datetime.now()):  # the window closed: start no more Macs
                    window_closed.set()
                    self.stop.set()

            with report.Live(self.console, len(pending)) as live:
                events = live.events()
                live_done = events.done
                events.done = lambda r: (done(r), live_done(r))
                step = events.step
                events.step = lambda h, s: (self.journal.step(self.run_id, h, s), step(h, s))
                plans = [self.plans[n] for n in pending]
                relays = self._relays(plans)
                try:
                    results = engine.run_all(ACTIONS[self.book.action], plans, self.book, self.secrets, self.forks,
                                             self.accept_new, events, self.stop, self.abort, self._interrupted, relays)
                finally:
                    for warning in relays.close() if relays else []:
                        self._say(warning)
            if window_closed.is_set() and not self.abort.is_set() and not over():
                self._say(f"wave {wave.name!r}: its window closed; run is waiting. Continue with: "
                          f"fleetctl resume {self.run_id}")
                return "waiting"
            if self.abort.is_set() or (self.stop.is_set() and not over()):
                return "interrupted"
            if over():
                self._say(f"HALTED in wave {wave.name!r}: {wave_failed} failed (allowed {allowed})"
                          + (f", {self.failed_total} in the run (budget {budget})" if budget is not None else "")
                          + f". Fix the cause, then: fleetctl resume {self.run_id}")
                return "halted"
            if index < len(waves) - 1 and self.book.action in GATED:
                stopped = self._soak_and_gate(wave, [r for r in results if r and r.status == "changed"], started,
                                              allowed - wave_failed, budget)
                if stopped:
                    return stopped
        return "done"

    def _relays(self, plans: list[HostPlan]) -> relay.Relays | None:
        if not self.use_relays:
            return None
        return relay.Relays(self.run_id, plans, lambda h: self.journal.relay_opened(self.run_id, h),
                            lambda h: self.journal.relay_closed(self.run_id, h))

    def _interrupted(self, count: int) -> None:
        if count == 1:
            self._say("Ctrl-C: no new Macs will start; running ones finish their steps (Ctrl-C again to abort).")
        else:
            self._say("Ctrl-C again: running Macs stop after their current step and stay pending for resume.")

    def _soak_and_gate(self, wave, changed: list[HostResult], started: datetime, allowed_left: int,
                       budget: int | None) -> str | None:
        """Wait the wave's soak, then check its Macs; returns 'halted' or 'interrupted' to stop."""
        if wave.soak_s:
            self._say(f"soaking {wave.soak_s}s before the health gate…")
            deadline = time.monotonic() + wave.soak_s
            try:
                while time.monotonic() < deadline:
                    time.sleep(min(SOAK_STEP_S, deadline - time.monotonic()))
            except KeyboardInterrupt:
                self.stop.set()
                return "interrupted"
        if not self.book.health_gate or not changed:
            return None
        since = datetime.now(timezone.utc) - started + timedelta(seconds=5)
        checked = status.check([self.plans[r.name] for r in changed], self.secrets, since, self.forks, self.accept_new,
                               self.book.step_timeout)
        unhealthy = 0
        for result, health in zip(changed, checked):
            problems = list(health.problems)
            if health.version != result.version_after:
                problems.append(f"version {health.version}, expected {result.version_after}")
            if problems:
                unhealthy += 1
                self.failed_total += 1
                result.status, result.reason = "failed", "health gate: " + "; ".join(problems)
                self.journal.host_done(self.run_id, result.name, result.status, result.reason, asdict(result))
        if unhealthy:
            self._say(f"health gate: {unhealthy} Mac(s) unhealthy after wave {wave.name!r}")
        if unhealthy > allowed_left or (budget is not None and self.failed_total > budget):
            self._say(f"HALTED after the health gate of wave {wave.name!r}. Fix the cause, then: "
                      f"fleetctl resume {self.run_id}")
            return "halted"
        return None


def _finish(journal: Journal, run_id: str, action: str, state: str, console: Console, outputs: Outputs) -> int:
    journal.finish(run_id, state)
    results = results_of(journal, run_id)
    report.summary(console, results)
    if action == "uninstall":
        console.print("Note: each Mac's asset record, licence and results stay on the Qualys platform; "
                      "remove them there.")
    console.print(f"run {run_id}: {state}", markup=False, highlight=False)
    report_files.write(outputs, journal.run(run_id), results)
    if state == "halted":
        return ExitCode.HALTED
    if state == "interrupted":
        return ExitCode.INTERRUPTED
    return exit_code(results)


def _execute(runner: Runner, waves: list, total_hosts: int, outputs: Outputs) -> int:
    """Run the waves; whatever happens, Macs caught mid-way go back to pending in the journal."""
    journal, run_id = runner.journal, runner.run_id
    try:
        state = runner.execute(waves, total_hosts, 0)
    except BaseException:
        journal.reset_unfinished(run_id)
        journal.finish(run_id, "interrupted")
        raise
    if state != "done":
        journal.reset_unfinished(run_id)
    return _finish(journal, run_id, runner.book.action, state, runner.console, outputs)


def results_of(journal: Journal, run_id: str) -> list[HostResult]:
    out = []
    for name, _, state, reason, result in journal.hosts(run_id):
        if result:
            steps = [Step(**s) for s in result.pop("steps", [])]
            out.append(HostResult(**{**result, "steps": steps}))
        else:
            out.append(HostResult(name, status="pending" if state in ("pending", "running") else state,
                                         reason=reason or "not started"))
    return out


def run(playbook_path: Path, inventory_path: Path, limit: str | None, extra: tuple[str, ...], forks: int,
        accept_new: bool, outputs: Outputs, console: Console, prompt: Callable[[str], str] | None,
        retry_failed: str | None = None, journal: Journal | None = None, use_relays: bool = True) -> int:
    journal = journal or Journal()
    if retry_failed:
        failed = [n for n, _, s, _, _ in journal.hosts(journal.run(retry_failed).id) if s in ("failed", "unreachable")]
        if not failed:
            raise UsageError(f"run {retry_failed} has no failed hosts")
        limit = ",".join(failed) + (f":&{limit}" if limit else "")
    secrets = Secrets(prompt)
    book, inv, plans = _plans(playbook_path, inventory_path, limit, extra, secrets)
    _warn(book, console)
    waves = assign([p.host.name for p in plans], inv.groups, book.waves, book.max_fail)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    journal.start(run_id, book.action, playbook_path, inventory_path, limit, extra, forks,
                  [(n, i) for i, (_, names) in enumerate(waves) for n in names])
    console.print(f"run {run_id}: {book.action} on {len(plans)} Macs in {len(waves)} wave(s)", markup=False,
                  highlight=False)
    runner = Runner(journal, run_id, book, plans, secrets, forks, accept_new, console, use_relays)
    return _execute(runner, waves, len(plans), outputs)


def resume(run_id: str, forks: int | None, accept_new: bool, outputs: Outputs, console: Console,
           prompt: Callable[[str], str] | None, journal: Journal | None = None, use_relays: bool = True) -> int:
    journal = journal or Journal()
    record = journal.run(run_id)
    left = journal.open_relays(run_id)
    if left:
        _close_relays(journal, record, left, forks or record.forks, accept_new, console)
        if record.state == "done":
            return ExitCode.OK
    if record.state == "done":
        raise UsageError(f"run {run_id} is finished; to try its failed Macs again use "
                         f"`fleetctl run ... --retry-failed {run_id}`")
    if record.state == "running":
        raise UsageError(f"run {run_id} is still running (pid {record.pid})")
    journal.reset_unfinished(run_id)
    hosts = journal.hosts(run_id)
    pending = [n for n, _, s, _, _ in hosts if s not in DONE]  # failed Macs get another go too
    if not pending:
        journal.finish(run_id, "done")
        return _finish(journal, run_id, record.action, "done", console, outputs)
    secrets = Secrets(prompt)
    book, inv, plans = _plans(Path(record.playbook), Path(record.inventory), ",".join(pending), record.extra, secrets)
    spec = {i: w for i, (w, _) in enumerate(assign([n for n, *_ in hosts], inv.groups, book.waves, book.max_fail))}
    by_wave: dict[int, list[str]] = {}
    for name, wave, state, _, _ in hosts:
        by_wave.setdefault(wave, []).append(name)
    waves = [(spec.get(i, spec[max(spec)]), [n for n in names if n in pending]) for i, names in sorted(by_wave.items())]
    journal.start(run_id, book.action, Path(record.playbook), Path(record.inventory), record.limit,
                  tuple(record.extra), forks or record.forks, [(n, 0) for n in pending], resume=True)
    console.print(f"resuming run {run_id}: {len(pending)} Macs left", markup=False, highlight=False)
    runner = Runner(journal, run_id, book, plans, secrets, forks or record.forks, accept_new, console, use_relays)
    return _execute(runner, waves, len(hosts), outputs)


def _close_relays(journal: Journal, record, names: list[str], forks: int, accept_new: bool, console: Console) -> None:
    """Relays a killed run left open keep a one-time key: remove it (and their copies) first."""
    book, _, plans = _plans(Path(record.playbook), Path(record.inventory), ",".join(names), record.extra, None)
    cleanup = relay.Cleanup(lambda h: journal.relay_closed(record.id, h))
    results = engine.run_all(cleanup, plans, book, Secrets(None), forks, accept_new, Events(), threading.Event(),
                             threading.Event())
    for r in results:
        if r and r.status == "ok":
            console.print(f"{r.name}: relay key and copy removed", markup=False, highlight=False)
        elif r:
            console.print(f"{r.name}: relay key NOT removed ({r.reason}); run resume again", style="red",
                          markup=False, highlight=False)


def list_runs(console: Console, journal: Journal | None = None) -> None:
    journal = journal or Journal()
    table = Table(title=f"runs ({journal.path})")
    for col in ("run", "action", "state", "started", "hosts"):
        table.add_column(col)
    for r, counts in journal.runs():
        started = datetime.fromtimestamp(r.started).strftime("%Y-%m-%d %H:%M")
        table.add_row(r.id, r.action, r.state, started, ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    console.print(table)


def show_report(run_id: str, outputs: Outputs, fmt: str | None, console: Console,
                journal: Journal | None = None) -> int:
    """The summary again (or, with FMT, only that format on stdout, for pipes), and any files asked for."""
    journal = journal or Journal()
    record = journal.run(run_id)
    results = results_of(journal, run_id)
    if fmt:
        outfile.write(None, report_files.render(fmt, report_files.document(record, results)))
    else:
        report.summary(console, results)
        console.print(f"run {run_id}: {record.action}, {record.state}", markup=False, highlight=False)
    report_files.write(outputs, record, results)
    return 0
