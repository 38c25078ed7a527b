"""A table of the simulated Macs, for `fleetctl lab status` and after `lab up`."""
from __future__ import annotations

import plistlib
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fleetctl.lab.fleet import LabState, alive

RECEIPT = "root/private/var/db/receipts/com.qualys.cloud-agent.plist"


def _agent_version(host_dir: Path) -> str:
    try:
        return plistlib.loads((host_dir / RECEIPT).read_bytes()).get("PackageVersion", "?")
    except (OSError, plistlib.InvalidFileException):
        return "-"


def show(state: LabState, console: Console) -> None:
    table = Table(title=f"fleetlab in {state.dir}", show_lines=False)
    for col in ("host", "address", *(["site"] if state.sites else []), "user", "personas", "ssh", "agent"):
        table.add_column(col)
    up = 0
    for h in state.hosts:
        running = alive(h.pid)
        up += running
        ssh = "[green]up[/green]" if running else ("[dim]unreachable[/dim]" if not h.pid else "[red]down[/red]")
        site = [h.site or "-"] if state.sites else []
        table.add_row(h.name, h.address, *site, h.user, " ".join(h.personas), ssh,
                      _agent_version(Path(state.dir) / "hosts" / h.name))
    console.print(table)
    for s in state.sites:
        macs = f"{len(s.hosts)} Mac{'s' * (len(s.hosts) != 1)}"
        console.print(f"site {s.name}: {macs} on {s.bridge}, uplink {s.uplink_main}<->{s.uplink_site} "
                      f"shaped to {s.rate} each way")
    console.print(f"{up}/{len(state.hosts)} SSH servers running")
