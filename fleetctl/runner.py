"""One pass of a run (new, resumed, or a campaign's retry): waves in order, failure thresholds,
soak and health gate, Wake-on-LAN through neighbours, every transition in the journal."""
from __future__ import annotations

import threading
import time
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from rich.console import Console

from fleetctl import engine, identity, relay, report, status, wake
from fleetctl.actions import ACTIONS, uninstall
from fleetctl.campaign import Campaign
from fleetctl.journal import DONE, Journal
from fleetctl.plan import HostPlan
from fleetctl.playbook import Playbook
from fleetctl.results import Events, HostResult
from fleetctl.secrets import Secrets
from fleetctl.waves import counts_as_failure

GATED = ("install", "upgrade")
SOAK_STEP_S = 1.0


class Runner:
    """One pass over the pending Macs of a run; see campaign.py for what a campaign changes."""

    def __init__(self, journal: Journal, run_id: str, book: Playbook, plans: list[HostPlan], secrets: Secrets,
                 forks: int, accept_new: bool, console: Console, use_relays: bool = True,
                 campaign: Campaign | None = None, identities: identity.Book | None = None, use_wake: bool = True,
                 plan_more: Callable[[list[str]], list[HostPlan]] = lambda names: []):
        self.journal, self.run_id, self.book, self.plans = journal, run_id, book, {p.host.name: p for p in plans}
        self.secrets, self.forks, self.accept_new, self.console = secrets, forks, accept_new, console
        self.use_relays = use_relays and book.action in GATED  # only install and upgrade send packages
        self.campaign, self.identities, self.use_wake, self.plan_more = campaign, identities, use_wake, plan_more
        self.stop, self.abort = threading.Event(), threading.Event()
        self.failed_total = 0
        self.lock = threading.Lock()
        self.woken: dict[str, str] = {}  # Mac -> the neighbour that sent it a Wake-on-LAN packet
        self.action = ACTIONS[book.action]
        if book.platform_uninstall:  # each agent UUID is journaled before its Mac-side uninstall
            self.action = uninstall.Remembering(lambda name, uuid: journal.platform_known(run_id, name, uuid))

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def execute(self, waves: list[tuple[Any, list[str]]], total_hosts: int, already_failed: int) -> str:
        """Run the pending hosts of each wave; returns the run's state."""
        self.failed_total = already_failed
        budget = self.book.failure_budget.of(total_hosts) if self.book.failure_budget else None
        for index, (wave, names) in enumerate(waves):
            pending = [n for n in names if n in self.plans]
            if not pending:
                if self._wave_waits(wave, names):
                    return "waiting"
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
                if not self._record(result):
                    return
                if counts_as_failure(result.status):
                    with self.lock:
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
                results = self._run([self.plans[n] for n in pending], events)
                if self.use_wake and not self.stop.is_set():
                    results = self._wake(results, events)
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
            if index < len(waves) - 1 and self._wave_waits(wave, names):
                return "waiting"
        if self.campaign and self.journal.due(self.run_id, float("inf"))[0]:
            return "waiting"
        return "done"

    def _record(self, result: HostResult) -> bool:
        """Write a finished Mac to the journal; False when it is not finished (stays pending)."""
        if result.status == "pending":
            return False
        if self.book.platform_uninstall and result.status in DONE:
            self.journal.platform_mac_done(self.run_id, result.name)
        if result.name in self.woken:
            if result.status == "unreachable":
                result.reason = (f"{result.reason}; still no answer {self.book.wake_wait}s after "
                                 f"{self.woken[result.name]}'s Wake-on-LAN packet")
            else:
                result.woken_by = self.woken[result.name]
        if self.campaign and Campaign.retries(result):
            attempts = self.journal.attempt_count(self.run_id, result.name)
            self.journal.host_pending(self.run_id, result.name, result.reason, asdict(result),
                                      self.campaign.next_retry(attempts, time.time()))
            return False
        self.journal.host_done(self.run_id, result.name, result.status, result.reason, asdict(result))
        return True

    def _wave_waits(self, wave, names: list[str]) -> bool:
        """next_wave_after: converged: a campaign's next wave starts once every Mac of this one converged."""
        if not self.campaign or self.book.next_wave_after != "converged":
            return False
        waiting = set(self.journal.due(self.run_id, float("inf"))[0]) & set(names)
        if waiting:
            self._say(f"wave {wave.name!r}: {len(waiting)} Mac(s) not converged yet; the next wave waits for them "
                      "(next_wave_after: converged)")
        return bool(waiting)

    def _run(self, plans: list[HostPlan], events: Events, action=None) -> list[HostResult | None]:
        relays = self._relays(plans) if action is None else None
        try:
            return engine.run_all(action or self.action, plans, self.book, self.secrets, self.forks,
                                  self.accept_new, events, self.stop, self.abort, self._interrupted, relays,
                                  self.identities if action is None else None)
        finally:
            for warning in relays.close() if relays else []:
                self._say(warning)

    def _wake(self, results: list[HostResult | None], events: Events) -> list[HostResult | None]:
        """Unreached Macs of a site with a recorded wired address: a reachable neighbour sends them
        a Wake-on-LAN packet; after wake_wait they are tried once more in this pass."""
        unreached = [r for r in results if r and r.status == "unreachable" and r.silent]
        if not unreached or not self.identities:
            return results
        ether = {r.name: (self.identities.get(r.name) or identity.Identity(None, None)).ether for r in unreached}
        if not any(self.plans[r.name].site and ether[r.name] for r in unreached):
            return results
        reached = [r.name for r in results if r and r.status not in ("unreachable", "pending")]
        candidates = reached + [n for n in self._converged() if n not in reached]
        plans = {**{p.host.name: p for p in self.plan_more([n for n in candidates if n not in self.plans])},
                 **self.plans}
        woken: dict[str, str] = {}
        for site in wake.plan(unreached, plans, ether, candidates):
            for sender in site.senders[:wake.NEIGHBOURS_TRIED]:
                sent = self._run([plans[sender]], Events(), wake.Send(sorted(set(site.sleepers.values()))))[0]
                if sent and sent.status == "ok":
                    woken.update({name: sender for name in site.sleepers})
                    self._say(f"site {site.site}: {sender} sent Wake-on-LAN to {', '.join(sorted(site.sleepers))}")
                    break
                self._say(f"site {site.site}: {sender} could not send Wake-on-LAN ({sent.reason if sent else 'stopped'})")
        if not woken:
            return results
        deadline = time.monotonic() + self.book.wake_wait
        try:
            while time.monotonic() < deadline and not self.stop.is_set():
                time.sleep(min(SOAK_STEP_S, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:
            self.stop.set()
            return results
        self.woken.update(woken)  # the retry's outcome replaces the first (uncounted: unreached) attempt's
        retried = {r.name: r for r in self._run([self.plans[n] for n in woken], events) if r}
        return [retried.get(r.name, r) if r else r for r in results]

    def _converged(self) -> list[str]:
        """This run's converged Macs, most recently seen first: likely awake, so good senders."""
        seen = self.journal.attempts(self.run_id)
        done = [n for n, _, s, _, _ in self.journal.hosts(self.run_id) if s in DONE]
        return sorted(done, key=lambda n: -(seen[n].last_seen or 0))

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
