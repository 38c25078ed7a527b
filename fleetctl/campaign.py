"""Campaigns: a run that converges over days on a fleet of laptops, not in one pass.

A Mac that cannot be reached (asleep, away, off the VPN, renumbered) is not a failure: it
stays pending in the same run and is tried again when its retry time comes, each later
attempt waiting longer (RETRY_BACKOFF), until the deadline. Each `fleetctl resume RUN_ID`
(cron, a systemd timer, or `run --stay`) tries only the Macs whose time has come and never
touches a converged Mac. A Mac that failed is not retried, unless its failure is transient:
the connection was lost mid-step (the laptop slept or left), or the Mac could not reach the
Qualys platform (off the VPN, a captive portal): both say nothing about the Mac itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fleetctl.errors import UsageError
from fleetctl.results import HostResult

DEFAULT_RETRY_EVERY = 30 * 60
RETRY_BACKOFF = (1, 2, 4)  # retry_every times this, by attempt; then the last factor again


@dataclass(frozen=True)
class Campaign:
    until: float  # the deadline, epoch seconds
    retry_every: int  # seconds before the second attempt; later ones back off

    def next_retry(self, attempts: int, now: float) -> float:
        """When a Mac tried ATTEMPTS times (the last one at NOW) is due again. Backing off never
        skips the last chance: a retry falls at the latest one retry_every before the deadline
        (never sooner than retry_every after NOW), so resumes at that cadence still try it; a
        resume after the deadline only finishes the run."""
        factor = RETRY_BACKOFF[min(max(attempts, 1), len(RETRY_BACKOFF)) - 1]
        due, last_chance = now + self.retry_every * factor, self.until - self.retry_every
        return due if due <= last_chance else max(last_chance, now + self.retry_every)

    def over(self, now: float) -> bool:
        return now >= self.until

    @staticmethod
    def retries(result: HostResult) -> bool:
        """Not reached, or failed in a way that says nothing about the Mac: tried again later."""
        return result.status == "unreachable" or (result.status == "failed" and result.transient)

    def describe(self, now: float) -> str:
        return f"deadline {datetime.fromtimestamp(self.until):%Y-%m-%d %H:%M} ({until_text(self.until, now)})"


def until_text(until: float, now: float) -> str:
    """'in 2 d', 'in 5 h', 'in 12 min', or 'passed'."""
    left = until - now
    if left <= 0:
        return "passed"
    for unit, seconds in (("d", 86400), ("h", 3600)):
        if left >= 2 * seconds:
            return f"in {left / seconds:.0f} {unit}"
    return f"in {max(1, round(left / 60))} min"


def of(until: datetime | None, retry_every: int | None, where: str) -> Campaign | None:
    """The campaign a run asks for (--until, or the playbook's until:), or None: one pass."""
    if until is None:
        if retry_every is not None:
            raise UsageError(f"{where}: --retry-every needs a deadline: add --until '2026-12-20 18:00'")
        return None
    if until <= datetime.now():
        raise UsageError(f"{where}: until {until:%Y-%m-%d %H:%M} has already passed; give a later time")
    every = DEFAULT_RETRY_EVERY if retry_every is None else retry_every
    if not 10 <= every <= 7 * 86400:
        raise UsageError(f"{where}: retry_every must be 10s to 7d")
    return Campaign(until.timestamp(), every)


def not_seen_reason(until: float, last_seen: float | None, attempts: int, last_reason: str | None,
                    reached: bool = False) -> str:
    """What a Mac left at the deadline is reported with; REACHED: it answered, its last try failed."""
    seen = f"last seen {datetime.fromtimestamp(last_seen):%Y-%m-%d %H:%M}" if last_seen else "never seen"
    what = "not converged" if reached else "not seen"
    reason = f"{what} before the deadline {datetime.fromtimestamp(until):%Y-%m-%d %H:%M} ({seen}, " \
             f"{attempts} attempt{'s' if attempts != 1 else ''})"
    return reason + (f"; last: {last_reason}" if last_reason else "")
