"""Tables of the simulated Macs, for `fleetctl lab status` and after `lab up`: where each Mac is
now (a renumbered Mac's current address), whether it is on its LAN (laptops: present, away,
asleep, waking, awake), and its hardware identity (serial, hardware UUID, port addresses)."""
from __future__ import annotations

import plistlib
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fleetctl.lab.laptopctl import status as laptop_status
from fleetctl.lab.state import LabState, alive

RECEIPT = "root/private/var/db/receipts/com.qualys.cloud-agent.plist"


def _agent_version(host_dir: Path) -> str:
    try:
        return plistlib.loads((host_dir / RECEIPT).read_bytes()).get("PackageVersion", "?")
    except (OSError, plistlib.InvalidFileException):
        return "-"


def show(state: LabState, console: Console) -> None:
    laptops = laptop_status(state) if any(h.laptop for h in state.hosts) else {}
    table = Table(title=f"fleetlab in {state.dir}", show_lines=False)
    for col in ("host", "address", *(["site"] if state.sites else []), "user", "personas", "ssh",
                *(["network"] if laptops else []), "agent"):
        table.add_column(col)
    up = 0
    for h in state.hosts:
        running = alive(h.pid)
        up += running
        ssh = Text("up", "green") if running else (Text("unreachable", "dim") if not h.pid else Text("down", "red"))
        site = [h.site or "-"] if state.sites else []
        net = [laptops.get(h.name, {}).get("state", "present" if h.pid else "-")] if laptops else []
        table.add_row(h.name, h.address, *site, h.user, " ".join(h.personas), ssh, *net,
                      _agent_version(Path(state.dir) / "hosts" / h.name))
    console.print(table)
    for s in state.sites:
        macs = f"{len(s.hosts)} Mac{'s' * (len(s.hosts) != 1)}"
        console.print(f"site {s.name}: {macs} on {s.bridge}, uplink {s.uplink_main}<->{s.uplink_site} "
                      f"shaped to {s.rate} each way")
    console.print(f"{up}/{len(state.hosts)} SSH servers running")
    hardware = Table(title=f"hardware (seed {state.seed})", show_lines=False)
    for col in ("host", "serial", "hardware UUID", "Ethernet", "Wi-Fi"):
        hardware.add_column(col, no_wrap=True)
    for h in state.hosts:
        hardware.add_row(h.name, h.serial, h.hardware_uuid, h.ethernet or "-", h.wifi)
    console.print(hardware)
