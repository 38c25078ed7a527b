"""What the admin sees: live progress while hosts run, then a summary that fits a screen."""
from __future__ import annotations

import threading
from collections import Counter, defaultdict

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from fleetctl.results import Events, HostResult, uplink_bytes

STYLE = {"ok": "green", "changed": "cyan", "failed": "red", "unreachable": "magenta"}
GROUP_ABOVE = 25  # more hosts than this: identical outcomes share a row
verbosity = 0  # -q: -1 (problems only), -v: 1 (every step), -vv: 2 (and SSH debug); set once by the CLI


def set_verbosity(level: int) -> None:
    global verbosity
    verbosity = level
    if level >= 2:
        import logging

        from fleetctl.terminal import visible

        class Visible(logging.Formatter):
            """SSH debug quotes what the Mac sent (its version banner, for one): shown, never interpreted."""

            def format(self, record: logging.LogRecord) -> str:
                return visible(super().format(record))

        handler = logging.StreamHandler()
        handler.setFormatter(Visible("%(asctime)s %(name)s: %(message)s"))
        logging.basicConfig(handlers=[handler])
        logging.getLogger("paramiko").setLevel(logging.DEBUG)


class Live:
    """Rich progress: hosts done / running / failed and bytes sent; plain text when not a terminal."""

    def __init__(self, console: Console, total: int):
        self.console = console
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.running: set[str] = set()
        self.bytes = 0
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                                 transient=True, disable=not console.is_terminal or verbosity < 0)
        self.task = self.progress.add_task("hosts", total=total, info="")

    def _refresh(self) -> None:
        info = (f"running {len(self.running)}  ok {self.counts['ok'] + self.counts['changed']}  "
                f"failed {self.counts['failed'] + self.counts['unreachable']}  sent {self.bytes / 1e6:.1f} MB")
        self.progress.update(self.task, info=info)

    def events(self) -> Events:
        def step(host: str, name: str) -> None:
            with self.lock:
                self.running.add(host)
                self._refresh()
                if verbosity > 0:
                    self.progress.console.print(f"{host}: {name}", highlight=False, markup=False)

        def sent(n: int) -> None:  # called per upload chunk: count only; the display catches up
            with self.lock:
                self.bytes += n

        def done(result: HostResult) -> None:
            with self.lock:
                self.running.discard(result.name)
                self.counts[result.status] += 1
                self.progress.advance(self.task)
                self._refresh()
                quiet_ok = verbosity < 0 and result.status in ("ok", "changed")
                if (not self.console.is_terminal or verbosity > 0) and not quiet_ok:
                    self.console.print(f"{result.name}: {result.status}" + (f" ({result.reason})" if result.reason else ""),
                                       highlight=False, markup=False)

        return Events(step, sent, done)

    def __enter__(self) -> "Live":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


def summary(console: Console, results: list[HostResult]) -> None:
    """A table of every Mac (identical outcomes grouped above GROUP_ABOVE); with -q only the problems."""
    shown = [r for r in results if r.status not in ("ok", "changed")] if verbosity < 0 else results
    if shown:
        console.print(_table(shown))
    counts = Counter(r.status for r in results)
    sent = sum(r.uploaded_bytes for r in results)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; uploaded {sent / 1e6:.1f} MB")
    for site, crossed in sorted(uplink_bytes(results).items()):
        sources = Counter(r.package_from.split()[0] for r in results if r.site == site and r.package_from)
        console.print(f"site {site}: {crossed / 1e6:.1f} MB over its uplink; packages from "
                      + ", ".join(f"{k} {n}" for k, n in sorted(sources.items())), markup=False, highlight=False)


def _table(results: list[HostResult]) -> Table:
    if len(results) <= GROUP_ABOVE:
        table = Table(title="rollout")
        sites = any(r.site for r in results)  # where each package came from matters at branch offices
        for col in ("host", "arch", "macOS", "version", "result", "time", *(("package from",) if sites else ()),
                    "reason"):
            table.add_column(col, overflow="fold")
        for r in results:
            before = r.version_before or "-"
            version = before if r.version_after in (None, r.version_before) else f"{before} → {r.version_after}"
            source = ((r.package_from or "-") + (f" ({r.site})" if r.site else ""),) if sites else ()
            table.add_row(r.name, r.arch or "-", r.macos or "-", version,
                          Text(r.status, STYLE.get(r.status, "white")), f"{r.duration_s:.1f}s", *source,
                          r.reason or "")
    else:
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for r in results:
            groups[(r.status, r.reason or "")].append(r.name)
        table = Table(title=f"rollout: {len(results)} hosts")
        for col in ("hosts", "result", "reason", "which"):
            table.add_column(col, overflow="fold")
        for (status, reason), names in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
            which = ", ".join(names[:5]) + (f", … (+{len(names) - 5})" if len(names) > 5 else "")
            table.add_row(str(len(names)), Text(status, STYLE.get(status, "white")), reason, which)
    return table
