"""`run --until … --stay`: keep a campaign going in the foreground, retrying on schedule, until
every Mac converged or the deadline passed. Ctrl-C leaves it waiting: `fleetctl resume` goes on."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Callable

from rich.console import Console
from rich.live import Live
from rich.table import Table

from fleetctl.campaign import until_text
from fleetctl.journal import DONE, Journal
from fleetctl.results import ExitCode

TICK_S = 1.0


def stay_until_done(journal: Journal, run_id: str, console: Console, again: Callable[[], int], code: int) -> int:
    """AGAIN is one resume of the run; CODE is the last pass's exit status."""
    while True:
        record = journal.run(run_id)
        if record.state != "waiting" or not record.until:
            return code
        _, next_due = journal.due(run_id, time.time())
        wake_at = min(next_due or record.until, record.until)
        try:
            _wait(console, journal, run_id, record.until, wake_at)
        except KeyboardInterrupt:
            console.print(f"Ctrl-C: the campaign waits; continue with `fleetctl resume {run_id}` (or --stay again)")
            return ExitCode.INTERRUPTED
        code = again()


def _table(journal: Journal, run_id: str, until: float, wake_at: float) -> Table:
    counts: dict[str, int] = {}
    for _, _, state, _, _ in journal.hosts(run_id):
        counts[state] = counts.get(state, 0) + 1
    converged = sum(counts.get(s, 0) for s in DONE)
    failed = counts.get("failed", 0) + counts.get("unreachable", 0)
    table = Table(title=f"campaign {run_id}")
    for col in ("converged", "pending", "failed", "next retry", "deadline"):
        table.add_column(col)
    now = time.time()
    table.add_row(f"{converged}/{sum(counts.values())}", str(sum(counts.values()) - converged - failed), str(failed),
                  f"{datetime.fromtimestamp(wake_at):%H:%M:%S} ({until_text(wake_at, now)})",
                  f"{datetime.fromtimestamp(until):%Y-%m-%d %H:%M} ({until_text(until, now)})")
    return table


def _wait(console: Console, journal: Journal, run_id: str, until: float, wake_at: float) -> None:
    """Until WAKE_AT (bounded by the deadline), showing where the campaign stands."""
    if not console.is_terminal:
        console.print(_table(journal, run_id, until, wake_at))
        time.sleep(max(0.0, wake_at - time.time()))
        return
    with Live(_table(journal, run_id, until, wake_at), console=console, refresh_per_second=1, transient=True) as live:
        while time.time() < wake_at:
            time.sleep(min(TICK_S, max(0.0, wake_at - time.time())))
            live.update(_table(journal, run_id, until, wake_at))
