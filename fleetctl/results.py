"""What every layer below the engine reports: steps, host results, statuses and exit codes.

Reports and the journal import this module, never the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Literal

HostStatus = Literal["running", "ok", "changed", "failed", "unreachable", "skipped", "pending"]
StepStatus = Literal["ok", "changed", "failed", "skipped"]
PROBLEMS = ("failed", "unreachable")  # statuses that make a run exit with FAILED


class ExitCode(IntEnum):
    """The run's exit status, the same for every command."""

    OK = 0
    ERROR = 1  # fleetctl itself could not do what was asked
    USAGE = 2  # bad input: nothing was contacted
    FAILED = 3  # some Macs failed or were unreachable
    HALTED = 4  # a failure threshold stopped the run
    INTERRUPTED = 130  # Ctrl-C


@dataclass
class Step:
    name: str
    status: StepStatus
    duration_s: float
    detail: str = ""


@dataclass
class HostResult:
    name: str
    status: HostStatus = "running"  # pending: aborted or not started, resume finishes it
    reason: str | None = None
    arch: str | None = None
    macos: str | None = None
    version_before: str | None = None
    version_after: str | None = None
    uploaded_bytes: int = 0  # from the controller: at a site, what crossed its uplink for this Mac
    site: str | None = None  # fleetctl_site
    package_from: str | None = None  # "controller", "relay <host>" or "staged" (already on the Mac)
    duration_s: float = 0.0
    steps: list[Step] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # the agent's log since the run began (tail), for reports
    transient: bool = False  # failed in a way a campaign retries (connection lost mid-step, platform unreachable)
    silent: bool = False  # unreachable with nothing answering at its address (asleep, away): worth waking
    woken_by: str | None = None  # the neighbour whose Wake-on-LAN packet this Mac answered after, in this run
    serial: str | None = None  # hardware identity, as macOS printed it (ioreg)
    platform: str | None = None  # platform_uninstall: the platform's side ("done: …", "due: …"), from the journal
    # a campaign's view of this Mac (ISO times, from the journal): how it converged
    attempts: int = 0
    first_attempt: str | None = None
    last_attempt: str | None = None
    last_seen: str | None = None
    converged_at: str | None = None
    next_retry: str | None = None


@dataclass
class Events:
    """Callbacks the live report listens to (called from worker threads)."""

    step: Callable[[str, str], None] = lambda host, step: None
    sent: Callable[[int], None] = lambda n: None
    done: Callable[[HostResult], None] = lambda result: None


def uplink_bytes(results: list[HostResult]) -> dict[str, int]:
    """Bytes the controller sent into each site (fleetctl_site): what crossed its uplink."""
    sites: dict[str, int] = {}
    for r in results:
        if r.site:
            sites[r.site] = sites.get(r.site, 0) + r.uploaded_bytes
    return sites


def exit_code(results: list[HostResult]) -> ExitCode:
    return ExitCode.FAILED if any(r.status in PROBLEMS for r in results) else ExitCode.OK
