"""The lab's laptops process: one per lab, started by `lab up`, stopped by `lab down` (by pid).

It sends away=P% Macs off their LAN and back on a seeded schedule, keeps asleep Macs asleep
until a Wake-on-LAN magic packet for their Ethernet address reaches their port (it listens on
the lab's end of each sleeping Mac's veth, i.e. exactly what the Mac's card would receive), and
puts them back to sleep when `lab sleep` asks. Run as `python -m fleetctl.lab.laptops --dir DIR`.

Files, under DIR/laptops/: status.json (each laptop's state, rewritten whole on every change;
its first appearance means every laptop is in its first state), laptops.log (every change and
why), requests/<name>.sleep (written by `lab sleep`, which then sends SIGUSR1).
The loop waits on its sockets for at most POLL_S at a time and ends with the lab: on SIGTERM,
or once DIR/state.json or the lab's bridge is gone.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from fleetctl.errors import LabError
from fleetctl.lab import network, presence, wol
from fleetctl.lab.state import LabHost, LabState, load, state_file

WAKE_DELAY_S = 3.0  # from the magic packet to answering SSH, as a Mac takes a moment to wake
POLL_S = 0.5
ANNOUNCE_AFTER_S = (0.1, 1.0)  # gratuitous ARP after joining, as macOS repeats it
FRAMES_PER_READ = 64  # frames taken from one socket per turn, so no Mac starves the others
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # on the lab's end of the veth: a frame going to the Mac


def away_periods(seed: int, index: int, percent: int, mean_s: float) -> Iterator[tuple[bool, float]]:
    """The away schedule of Mac INDEX: (gone?, seconds) periods, alternating, forever (taken one
    at a time). Absences last MEAN_S on average, presences MEAN_S * (100 - P) / P, each uniform
    within half its mean either way, so about PERCENT % of the time the laptop is gone and no
    period is longer than 1.5 times its mean. The first state is drawn (gone with probability
    P %) and lasts a whole period: a laptop that starts away is away as long as any absence."""
    rng = random.Random(f"fleetlab-away:{seed}:{index}")
    means = {True: mean_s, False: mean_s * (100 - percent) / percent}
    gone = rng.random() < percent / 100
    while True:  # lazily: the laptops process takes the next period when the last one ends
        yield gone, rng.uniform(0.5, 1.5) * means[gone]
        gone = not gone


@dataclass
class Laptop:
    host: LabHost
    kind: str  # away, asleep, asleep-wifi
    state: str = "present"  # present, away; asleep, waking, awake
    since: float = field(default_factory=time.time)
    generation: int = 0  # bumped on every change: events scheduled before it are stale
    wakes: int = 0
    periods: Iterator[tuple[bool, float]] | None = None
    listener: socket.socket | None = None


class Laptops:
    """Every laptop of one lab, the events due for them and the sockets that hear magic packets."""

    def __init__(self, state: LabState, log: Callable[[str], None]):
        self.lab = state
        self.dir = Path(state.dir) / "laptops"
        self.log = log
        self.macs = {h.name: Laptop(h, h.laptop) for h in state.hosts if h.laptop and h.pid}
        self.events: list[tuple[float, int, str, str, int]] = []  # (when, seq, name, action, generation)
        self.seq = 0
        self.selector = selectors.DefaultSelector()
        self.dirty = True

    # ---- scheduling ----

    def later(self, delay: float, name: str, action: str) -> None:
        self.seq += 1
        heapq.heappush(self.events, (time.monotonic() + delay, self.seq, name, action, self.macs[name].generation))

    def become(self, mac: Laptop, state: str, why: str) -> None:
        mac.generation += 1
        mac.state, mac.since, self.dirty = state, time.time(), True
        self.log(f"{mac.host.name}: {state} ({why})")

    # ---- transitions ----

    def _listen(self, mac: Laptop) -> None:
        """Hear what reaches the sleeping Mac's card: the frames its veth carries towards it."""
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((network.veth(self.lab.slot, mac.host.index), 0))
        s.setblocking(False)
        mac.listener = s
        self.selector.register(s, selectors.EVENT_READ, mac.host.name)

    def _deafen(self, mac: Laptop) -> None:
        if mac.listener:
            self.selector.unregister(mac.listener)
            mac.listener.close()
            mac.listener = None

    def _direct(self, mac: Laptop) -> bool:
        return "proxy-only" not in mac.host.personas

    def go_to_sleep(self, mac: Laptop, why: str) -> None:
        h = mac.host
        presence.sleep(self.lab.slot, h.index, h.address, wifi_only=mac.kind == "asleep-wifi")
        if mac.kind == "asleep" and not mac.listener:
            self._listen(mac)
        self.become(mac, "asleep", why)

    def wake(self, mac: Laptop) -> None:
        h = mac.host
        self._deafen(mac)
        presence.wake(self.lab.slot, h.index, h.address, self._direct(mac))
        mac.wakes += 1
        self.become(mac, "awake", f"{WAKE_DELAY_S:g} s after the magic packet")
        for delay in ANNOUNCE_AFTER_S:
            self.later(delay, h.name, "announce")

    def away_turn(self, mac: Laptop) -> None:
        """The next period of an away Mac's schedule begins."""
        h = mac.host
        gone, length = next(mac.periods)
        if gone and mac.state != "away":
            presence.leave(self.lab.slot, h.index, h.address)
            self.become(mac, "away", f"for {length:.1f} s")
        elif not gone and mac.state != "present":
            presence.come_back(self.lab.slot, h.index, h.address, self._direct(mac))
            self.become(mac, "present", f"for {length:.1f} s")
            for delay in ANNOUNCE_AFTER_S:
                self.later(delay, h.name, "announce")
        self.later(length, h.name, "turn")

    def start(self) -> None:
        for mac in self.macs.values():
            if mac.kind == "away":
                mac.periods = away_periods(self.lab.seed, mac.host.index, mac.host.away_percent, self.lab.away_period)
                self.away_turn(mac)
            else:
                self.go_to_sleep(mac, "from the start")

    # ---- what happens ----

    def frames(self, name: str) -> None:
        mac = self.macs[name]
        for _ in range(FRAMES_PER_READ):
            try:
                frame, where = mac.listener.recvfrom(65535)
            except (BlockingIOError, OSError):
                return
            if where[2] == PACKET_OUTGOING and mac.state == "asleep" and wol.wakes(frame, mac.host.primary):
                self.become(mac, "waking", f"magic packet from {wol.sender(frame)}")
                self.later(WAKE_DELAY_S, name, "wake")
                return

    def due(self) -> None:
        now = time.monotonic()
        while self.events and self.events[0][0] <= now:
            _, _, name, action, generation = heapq.heappop(self.events)
            mac = self.macs[name]
            if action == "announce":  # harmless if stale: the Mac is where it says
                if mac.state in ("present", "awake"):
                    presence.announce(self.lab.slot, mac.host.index, mac.host.primary, mac.host.address)
            elif generation != mac.generation:
                continue
            elif action == "wake":
                self.wake(mac)
            elif action == "turn":
                self.away_turn(mac)

    def requests(self) -> None:
        folder = self.dir / "requests"
        for path in sorted(folder.glob("*.sleep")) if folder.is_dir() else []:
            name = path.stem
            path.unlink(missing_ok=True)
            mac = self.macs.get(name)
            if mac is None or mac.kind == "away":
                self.log(f"{name}: not an asleep Mac; sleep request ignored")
            elif mac.state != "asleep":
                self.go_to_sleep(mac, "lab sleep")
            else:
                self.become(mac, "asleep", "lab sleep (already asleep)")

    def write_status(self) -> None:
        if not self.dirty:
            return
        status = {"pid": os.getpid(), "updated": time.time(), "macs": {
            m.host.name: {"state": m.state, "since": m.since, "kind": m.kind, "wakes": m.wakes}
            for m in self.macs.values()}}
        tmp = self.dir / "status.tmp"
        tmp.write_text(json.dumps(status, indent=1))
        tmp.replace(self.dir / "status.json")
        self.dirty = False


def run(lab_dir: Path) -> None:
    state = load(lab_dir)
    folder = lab_dir / "laptops"
    (folder / "requests").mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True)

    laptops = Laptops(state, log)
    nudge_r, nudge_w = socket.socketpair()
    for s in (nudge_r, nudge_w):
        s.setblocking(False)
    signal.set_wakeup_fd(nudge_w.fileno())
    signal.signal(signal.SIGUSR1, lambda *_: None)  # `lab sleep` left a request
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    laptops.selector.register(nudge_r, selectors.EVENT_READ, None)
    laptops.start()
    laptops.write_status()
    bridge = Path(f"/sys/class/net/{network.bridge(state.slot)}")
    while state_file(lab_dir).exists() and bridge.exists():
        timeout = POLL_S if not laptops.events else min(POLL_S, max(0.0, laptops.events[0][0] - time.monotonic()))
        for key, _ in laptops.selector.select(timeout):
            if key.data is None:
                try:
                    nudge_r.recv(4096)
                except BlockingIOError:
                    pass
            else:
                laptops.frames(key.data)
        try:
            laptops.due()
            laptops.requests()
        except LabError as e:  # a Mac's namespace gone: the lab is going down (checked above)
            log(f"failed: {e}")
        laptops.write_status()
    log("the lab is gone; stopping")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path)
    run(parser.parse_args().dir.resolve())


if __name__ == "__main__":
    main()
