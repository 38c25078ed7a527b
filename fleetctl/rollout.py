"""`fleetctl run`, `resume`, `plan`, `runs` and `report`: inputs in, validated plan, waves of the
engine with failure thresholds, every transition in the journal, then the report."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console
from rich.table import Table

from fleetctl import campaign as campaigns
from fleetctl import engine, identity, inventory, outfile, platform, platform_sweep, playbook, relay, report
from fleetctl import report_files, wake
from fleetctl.actions import ACTIONS
from fleetctl.campaign import Campaign, not_seen_reason, until_text
from fleetctl.errors import UsageError
from fleetctl.journal import DONE, Journal
from fleetctl.plan import HostPlan, Planner
from fleetctl.report_files import Outputs, iso_time
from fleetctl.results import Events, ExitCode, HostResult, Step, exit_code
from fleetctl.runner import Runner
from fleetctl.secrets import Secrets
from fleetctl.stay import stay_until_done
from fleetctl.waves import assign


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
    if p.site:  # run by a reachable neighbour when this Mac does not answer (--no-wake: never)
        parts += wake.Send([]).scripts(p, book)
    if book.platform_uninstall:
        parts += platform_sweep.scripts(p)
    return "\n".join(f"# --- {name}\n{text}" for name, text in parts)


def _warn(book: playbook.Playbook, console: Console) -> None:
    if book.log_level_warning:
        console.print(book.log_level_warning, style="yellow", markup=False, highlight=False)


def _finish(journal: Journal, run_id: str, book: playbook.Playbook, state: str, console: Console,
            outputs: Outputs) -> int:
    journal.finish(run_id, state)
    journal.record_progress(run_id)
    record = journal.run(run_id)
    results = results_of(journal, run_id)
    report.summary(console, results)
    if book.platform_uninstall:
        _platform_summary(journal, run_id, console)
    elif book.action == "uninstall":
        console.print("Note: each Mac's asset record, licence and results stay on the Qualys platform; remove them "
                      "there, or let fleetctl do it: platform_uninstall: true in the playbook.")
    console.print(f"run {run_id}: {state}" + (f"; {convergence(journal, record)}" if record.until else ""))
    if state == "waiting" and record.until:
        console.print(f"Continue with `fleetctl resume {run_id}` (e.g. from cron: "
                      f"*/10 * * * * fleetctl resume {run_id} -q), or `fleetctl resume {run_id} --stay`.")
    report_files.write(outputs, record, results, journal.progress(run_id))
    if state == "halted":
        return ExitCode.HALTED
    if state == "interrupted":
        return ExitCode.INTERRUPTED
    if book.platform_uninstall and any(r.platform and r.platform.startswith("due") for r in results):
        return ExitCode.FAILED  # licences not yet freed: the admin resumes once the platform answers
    return exit_code(results)


def convergence(journal: Journal, record) -> str:
    """'312/350 converged, 38 pending, 0 failed; deadline in 2 d' for a campaign."""
    converged, pending, failed = journal.convergence(record.id)
    text = f"{converged}/{converged + pending + failed} converged, {pending} pending, {failed} failed"
    if record.until:
        text += f"; deadline {until_text(record.until, time.time())}"
        _, next_due = journal.due(record.id, time.time())
        if next_due and record.state == "waiting":
            text += f", next retry {datetime.fromtimestamp(next_due):%H:%M}"
    return text


def _execute(runner: Runner, waves: list, total_hosts: int, outputs: Outputs, inventory_path: Path) -> int:
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
    if runner.campaign and state == "waiting" and runner.campaign.over(time.time()):
        state = _deadline(journal, run_id, runner.campaign)
    if runner.book.platform_uninstall and state != "interrupted":
        state = _platform(journal, run_id, inventory_path, runner.secrets, state, runner.console)
    return _finish(journal, run_id, runner.book, state, runner.console, outputs)


def _platform(journal: Journal, run_id: str, inventory_path: Path, secrets: Secrets, state: str,
              console: Console) -> str:
    """The platform side of an uninstall sweep; a run with platform uninstalls still due is not done."""
    names = list(journal.platform_records(run_id))
    hosts = inventory.load(inventory_path).select(",".join(names)) if names else []
    left = platform_sweep.sweep(journal, run_id, hosts, secrets, _say(console))
    if left and state == "done":
        console.print(f"{left} Mac(s) uninstalled here are not yet uninstalled on the platform; finish with "
                      f"`fleetctl resume {run_id}`", style="yellow", markup=False, highlight=False)
        return "waiting"
    return state


def _platform_summary(journal: Journal, run_id: str, console: Console) -> None:
    records = journal.platform_records(run_id)
    counts: dict[str, int] = {}
    for _, state, _ in records.values():
        counts[state] = counts.get(state, 0) + 1
    console.print(f"platform: {counts.get('done', 0)} done, {counts.get('due', 0)} due, {counts.get('mac', 0)} "
                  "waiting for their Mac-side uninstall", markup=False, highlight=False)
    for name, (_, state, detail) in sorted(records.items()):
        if state == "due":
            console.print(f"  {name}: {detail or 'due'}", style="yellow", markup=False, highlight=False)


def _deadline(journal: Journal, run_id: str, campaign: Campaign) -> str:
    """The campaign is over: Macs still pending are reported as not seen before the deadline."""
    seen = journal.attempts(run_id)
    for name, _, state, reason, result in journal.hosts(run_id):
        if state in ("pending", "running"):
            a = seen[name]
            status = "failed" if result and result.get("status") == "failed" else "unreachable"
            why = not_seen_reason(campaign.until, a.last_seen, a.attempts, reason, reached=status == "failed")
            journal.host_done(run_id, name, status, why, {**(result or {"name": name}), "status": status, "reason": why})
    return "done"


def results_of(journal: Journal, run_id: str) -> list[HostResult]:
    out = []
    seen = journal.attempts(run_id)
    platform_side = journal.platform_records(run_id)
    for name, _, state, reason, result in journal.hosts(run_id):
        if result:
            steps = [Step(**s) for s in result.pop("steps", [])]
            r = HostResult(**{**result, "steps": steps})
            if state == "pending":  # a campaign's Mac, between attempts
                r.status, r.reason = "pending", reason
        else:
            r = HostResult(name, status="pending" if state in ("pending", "running") else state,
                           reason=reason or "not started")
        if name in platform_side:
            _, side, detail = platform_side[name]
            r.platform = f"{side}: {detail or 'not tried yet'}" if side != "mac" else "due once the Mac uninstall succeeds"
        a = seen.get(name)
        if a:
            r.attempts = a.attempts
            r.first_attempt, r.last_attempt, r.last_seen, r.converged_at, r.next_retry = (
                iso_time(t) for t in (a.first_attempt, a.last_attempt, a.last_seen, a.converged_at, a.next_retry))
        out.append(r)
    return out


def run(playbook_path: Path, inventory_path: Path, limit: str | None, extra: tuple[str, ...], forks: int,
        accept_new: bool, outputs: Outputs, console: Console, prompt: Callable[[str], str] | None,
        retry_failed: str | None = None, journal: Journal | None = None, use_relays: bool = True,
        until: datetime | None = None, retry_every: int | None = None, stay: bool = False,
        use_wake: bool = True) -> int:
    journal = journal or Journal()
    if retry_failed:
        failed = [n for n, _, s, _, _ in journal.hosts(journal.run(retry_failed).id) if s in ("failed", "unreachable")]
        if not failed:
            raise UsageError(f"run {retry_failed} has no failed hosts")
        limit = ",".join(failed) + (f":&{limit}" if limit else "")
    secrets = Secrets(prompt)
    book, inv, plans = _plans(playbook_path, inventory_path, limit, extra, secrets)
    _warn(book, console)
    _check_platform(book, plans, secrets, console)
    campaign = campaigns.of(until or book.until, retry_every if retry_every is not None else book.retry_every,
                            "--until" if until else f"{book.path}: until")
    if stay and not campaign:
        raise UsageError("--stay keeps a campaign going: give --until (or until: in the playbook)")
    waves = assign([p.host.name for p in plans], inv.groups, book.waves, book.max_fail)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    journal.start(run_id, book.action, playbook_path, inventory_path, limit, extra, forks,
                  [(n, i) for i, (_, names) in enumerate(waves) for n in names],
                  until=campaign.until if campaign else None, retry_every=campaign.retry_every if campaign else None)
    journal.record_progress(run_id)
    console.print(f"run {run_id}: {book.action} on {len(plans)} Macs in {len(waves)} wave(s)"
                  + (f", a campaign until {datetime.fromtimestamp(campaign.until):%Y-%m-%d %H:%M}" if campaign else ""))
    runner = _runner(journal, run_id, book, plans, secrets, forks, accept_new, console, use_relays, campaign,
                     use_wake, inventory_path, extra)
    code = _execute(runner, waves, len(plans), outputs, inventory_path)
    if stay:
        return stay_until_done(journal, run_id, console, lambda: resume(
            run_id, None, accept_new, outputs, console, prompt, journal, use_relays, use_wake), code)
    return code


def _check_platform(book: playbook.Playbook, plans: list[HostPlan], secrets: Secrets, console: Console) -> None:
    """platform_uninstall: the API's settings, credentials and answer, before any Mac is touched."""
    if book.platform_uninstall and plans:
        platform.check_access(platform.clients([p.host for p in plans], secrets, _say(console)))


def _say(console: Console) -> Callable[[str], None]:
    """-v: each platform API call, as it is made (never its credentials)."""
    if report.verbosity >= 1:
        return lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)
    return lambda text: None


def _close(journal: Journal, record, state: str, console: Console, outputs: Outputs, prompt) -> int:
    """A resume with no Mac left to try: the platform's side when due, then the report."""
    book = playbook.load(Path(record.playbook))
    if book.platform_uninstall:
        state = _platform(journal, record.id, Path(record.inventory), Secrets(prompt), state, console)
    return _finish(journal, record.id, book, state, console, outputs)


def _runner(journal: Journal, run_id: str, book, plans: list[HostPlan], secrets: Secrets, forks: int, accept_new: bool,
            console: Console, use_relays: bool, campaign: Campaign | None, use_wake: bool, inventory_path: Path,
            extra) -> Runner:
    """A Runner that checks identities and may plan a site's other Macs to wake sleepers through them."""
    def plan_more(names: list[str]) -> list[HostPlan]:
        return _plans(book.path, inventory_path, ",".join(names), extra, secrets)[2] if names else []

    identities = identity.Book(journal, str(inventory_path.resolve()))
    return Runner(journal, run_id, book, plans, secrets, forks, accept_new, console, use_relays, campaign, identities,
                  use_wake, plan_more)


def resume(run_id: str, forks: int | None, accept_new: bool, outputs: Outputs, console: Console,
           prompt: Callable[[str], str] | None, journal: Journal | None = None, use_relays: bool = True,
           use_wake: bool = True, stay: bool = False, continue_halted: bool = False) -> int:
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
    campaign = Campaign(record.until, record.retry_every or campaigns.DEFAULT_RETRY_EVERY) if record.until else None
    if campaign and record.state == "halted" and not continue_halted:
        console.print(f"run {run_id} was HALTED by its failure threshold; a campaign does not continue by itself. "
                      f"Fix the cause, then: fleetctl resume {run_id} --continue-halted", style="red")
        return ExitCode.HALTED
    journal.reset_unfinished(run_id)
    hosts = journal.hosts(run_id)
    if campaign:
        if campaign.over(time.time()):
            return _close(journal, record, _deadline(journal, run_id, campaign), console, outputs, prompt)
        pending, next_due = journal.due(run_id, time.time())
        if not pending and next_due:
            console.print(f"run {run_id}: nothing due; {convergence(journal, record)}")
            return ExitCode.OK
    else:
        pending = [n for n, _, s, _, _ in hosts if s not in DONE]  # failed Macs get another go too
    if not pending:
        return _close(journal, record, "done", console, outputs, prompt)
    secrets = Secrets(prompt)
    book, inv, plans = _plans(Path(record.playbook), Path(record.inventory), ",".join(pending), record.extra, secrets)
    spec = {i: w for i, (w, _) in enumerate(assign([n for n, *_ in hosts], inv.groups, book.waves, book.max_fail))}
    by_wave: dict[int, list[str]] = {}
    for name, wave, state, _, _ in hosts:
        by_wave.setdefault(wave, []).append(name)
    waves = [(spec.get(i, spec[max(spec)]), [n for n in names if campaign or n in pending]) for i, names in sorted(by_wave.items())]
    journal.start(run_id, book.action, Path(record.playbook), Path(record.inventory), record.limit,
                  tuple(record.extra), forks or record.forks, [(n, 0) for n in pending], resume=True)
    _check_platform(book, plans, secrets, console)
    console.print(f"resuming run {run_id}: {len(pending)} Macs" + (" due" if campaign else " left"))
    runner = _runner(journal, run_id, book, plans, secrets, forks or record.forks, accept_new, console, use_relays,
                     campaign, use_wake, Path(record.inventory), record.extra)
    code = _execute(runner, waves, len(hosts), outputs, Path(record.inventory))
    if stay:
        return stay_until_done(journal, run_id, console, lambda: resume(
            run_id, forks, accept_new, outputs, console, prompt, journal, use_relays, use_wake), code)
    return code


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
        hosts = convergence(journal, r) if r.until else ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        table.add_row(r.id, r.action, r.state, started, hosts)
    console.print(table)


def show_report(run_id: str, outputs: Outputs, fmt: str | None, console: Console,
                journal: Journal | None = None) -> int:
    """The summary again (or, with FMT, only that format on stdout, for pipes), and any files asked for."""
    journal = journal or Journal()
    record = journal.run(run_id)
    results = results_of(journal, run_id)
    if fmt:
        outfile.write(None, report_files.render(fmt, report_files.document(record, results, journal.progress(run_id))))
    else:
        report.summary(console, results)
        console.print(f"run {run_id}: {record.action}, {record.state}" + (
            f"; {convergence(journal, record)}" if record.until else ""))
    report_files.write(outputs, record, results, journal.progress(run_id))
    return 0
