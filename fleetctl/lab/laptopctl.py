"""What the lab's laptop commands do: `lab sleep` (asks the laptops process to put asleep Macs
back to sleep) and `lab renumber` (moves renumbered Macs' addresses in a ring), and where
`lab status` reads each laptop's state."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from fleetctl.errors import LabError, UsageError
from fleetctl.lab import presence
from fleetctl.lab.state import LabState, alive, load, save

SLEEP_TIMEOUT_S = 15
ANNOUNCE_REPEAT_S = 0.2


def status(state: LabState) -> dict[str, dict]:
    """Each laptop's state as the laptops process last wrote it (empty: no laptops, or none yet)."""
    try:
        return json.loads((Path(state.dir) / "laptops" / "status.json").read_text())["macs"]
    except (OSError, ValueError, KeyError):
        return {}


def sleep(lab_dir: Path, names: list[str]) -> None:
    """Put the asleep (or asleep-wifi) Macs NAMES back to sleep; returns once they are (bounded)."""
    state = load(lab_dir.resolve())
    for name in names:
        h = state.host(name)
        if not (h.has("asleep") or h.has("asleep-wifi")):
            raise UsageError(f"{name} is not an asleep Mac (its personas: {' '.join(h.personas)}); "
                             "only asleep and asleep-wifi Macs go back to sleep")
    if not alive(state.laptops_pid):
        raise LabError(f"the lab's laptops process (pid {state.laptops_pid}) is not running; "
                       f"see {Path(state.dir) / 'laptops' / 'laptops.log'}")
    asked = time.time()
    requests = Path(state.dir) / "laptops" / "requests"
    for name in names:
        (requests / f"{name}.sleep").write_text(f"{asked}\n")
    os.kill(state.laptops_pid, signal.SIGUSR1)
    deadline = time.monotonic() + SLEEP_TIMEOUT_S
    while time.monotonic() < deadline:
        now = status(state)
        if all(now.get(n, {}).get("state") == "asleep" and now[n]["since"] >= asked for n in names):
            return
        time.sleep(0.1)
    raise LabError(f"{', '.join(names)} did not go to sleep within {SLEEP_TIMEOUT_S}s; "
                   f"see {Path(state.dir) / 'laptops' / 'laptops.log'}")


def renumber(lab_dir: Path) -> list[tuple[str, str, str]]:
    """Each renumbered Mac leaves and comes back with the address of the next one (index order;
    the last takes the first's), as DHCP hands out addresses after a trip. Host keys stay with
    their Macs; inventory.yml and known_hosts stay as they were. Returns (name, old, new)."""
    state = load(lab_dir.resolve())
    ring = [h for h in state.hosts if h.has("renumbered")]
    if len(ring) < 2:
        raise UsageError(f"the lab in {state.dir} has {len(ring)} renumbered Mac(s); renumbering needs two or "
                         'more (lab up --personas "renumbered*2,...")')
    moves = [(h, h.address, ring[(n + 1) % len(ring)].address) for n, h in enumerate(ring)]
    presence.renumber(state.slot, [(h.index, old, new, "proxy-only" not in h.personas) for h, old, new in moves])
    for h, _, new in moves:
        h.address = new
    save(state)
    for _ in range(2):  # as macOS repeats its announcement
        for h, _, new in moves:
            presence.announce(state.slot, h.index, h.primary, new)
        time.sleep(ANNOUNCE_REPEAT_S)
    return [(h.name, old, new) for h, old, new in moves]

