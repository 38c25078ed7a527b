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
from fleetctl.journal import Journal
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
    converged, pending, failed = journal.convergence(run_id)
    table = Table(title=f"campaign {run_id}")
    for col in ("converged", "pending", "failed", "next retry", "deadline"):
        table.add_column(col)
    now = time.time()
    table.add_row(f"{converged}/{converged + pending + failed}", str(pending), str(failed),
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
