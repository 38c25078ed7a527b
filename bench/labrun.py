"""The lab as the benchmarks use it: a fresh lab per tool, its links' byte counters, which
Macs converged on disk, other labs sharing the machine, the packages each run installs."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from bench.measure import measure

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
ROOT = Path(__file__).resolve().parents[1]
IDS = {"activation": "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11", "customer": "8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22"}
NEIGH = Path("/proc/sys/net/ipv4/neigh/default")
AGENT_LOG = "root/var/log/qualys/qualys-cloud-agent.log"


def ensure_neighbour_table(hosts: int) -> dict | None:
    """Room in the kernel's ARP table for the lab. It is one table for every network namespace:
    each Mac holds an entry for the controller and the controller one per Mac, so 1,000 Macs
    need 2,000 entries, past Debian's gc_thresh3 of 1024; a full table drops connections
    ("neighbour table overflow"), which looked like Macs that do not answer on port 22. Only
    ever raised, never lowered; returns what was changed."""
    need = 4 * hosts + 2048
    current = {k: int((NEIGH / k).read_text()) for k in ("gc_thresh1", "gc_thresh2", "gc_thresh3")}
    if current["gc_thresh3"] >= need:
        return None
    wanted = {"gc_thresh1": need // 4, "gc_thresh2": need // 2, "gc_thresh3": need}
    for key in ("gc_thresh3", "gc_thresh2", "gc_thresh1"):
        if wanted[key] > current[key]:
            (NEIGH / key).write_text(f"{wanted[key]}\n")
    return {"before": current, "after": {k: int((NEIGH / k).read_text()) for k in current}}


def lab_up(lab: Path, hosts: int) -> tuple[dict, float]:
    """A fresh lab of HOSTS Macs (half of them Intel); returns its inventory and how long up took.
    A lab started at the same moment as another may lose the race for a slot: one retry, 20 s on."""
    if (lab / "state.json").exists():
        measure([FLEETCTL, "lab", "down", "--dir", str(lab)])
    ensure_neighbour_table(hosts)
    argv = [FLEETCTL, "lab", "up", "--hosts", str(hosts), "--personas", f"x86_64*{hosts // 2}" if hosts > 1 else "",
            "--dir", str(lab)]
    up = measure(argv)
    if up.returncode and any(w in up.output.lower() for w in ("slot", "bridge", "file exists")):
        print(f"lab up failed ({up.output.strip()[-300:]}); retrying once in 20 s", file=sys.stderr)
        if (lab / "state.json").exists():
            measure([FLEETCTL, "lab", "down", "--dir", str(lab)])
        time.sleep(20)
        up = measure(argv)
    if up.returncode:
        sys.exit(up.output)
    return yaml.safe_load((lab / "inventory.yml").read_text()), up.wall_s


def link_bytes(lab: Path) -> int:
    """Bytes the controller side sent towards the Macs (tx of the lab's veths)."""
    slot = json.loads((lab / "state.json").read_text())["slot"]
    total = 0
    for dev in Path("/sys/class/net").iterdir():
        if dev.name.startswith(f"fl{slot}h"):
            total += int((dev / "statistics" / "tx_bytes").read_text())
    return total


def converged_hosts(lab: Path, settle_s: float = 30) -> set[str]:
    """Macs where the agent is installed and provisioned, seen from the controller. The hostid
    appears when the agent first reaches the platform, a moment after a tool may have finished:
    wait for it (bounded), outside the timed run."""
    deadline = time.monotonic() + settle_s
    while True:
        hosts = list((lab / "hosts").iterdir())
        ok = {h.name for h in hosts if (h / "root/private/var/db/receipts/com.qualys.cloud-agent.plist").exists()
              and (h / "root/etc/qualys/hostid").exists()}
        if len(ok) == len(hosts) or time.monotonic() > deadline:
            return ok
        time.sleep(0.5)


def ok_hosts(lab: Path, settle_s: float = 30) -> int:
    return len(converged_hosts(lab, settle_s))


def other_labs(lab: Path) -> list[str]:
    """Bridges of other labs on this machine (flab<slot>, flab<slot>s<site>), by slot: other
    people's labs share the two cores, which every figure here depends on."""
    try:
        mine = json.loads((lab / "state.json").read_text())["slot"]
    except (OSError, ValueError, KeyError):
        mine = None
    slots = set()
    for dev in Path("/sys/class/net").iterdir():
        name = dev.name
        if name.startswith("flab") and name[4:].split("s", 1)[0].isdigit():
            slot = int(name[4:].split("s", 1)[0])
            if slot != mine:
                slots.add(slot)
    return [f"flab{slot}" for slot in sorted(slots)]


def build_pkgs(work: Path, mb: int) -> dict[str, Path]:
    pkgs = {}
    for arch in ("arm64", "x86_64"):
        pkgs[arch] = work / f"QualysCloudAgent-{arch}-{mb}mb.pkg"
        measure([FLEETCTL, "lab", "pkg", "--version", "6.1.0.20", "--arch", arch, "--size-mb", str(mb),
                 "--out", str(pkgs[arch])])
    return pkgs


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def logged_errors(lab: Path, names: set[str]) -> set[str]:
    """Macs among NAMES whose agent log on disk has an [Error] or [Fatal] line: `status` is right
    to call them unhealthy (the lab's agent logs one when a check-in with the pod times out)."""
    found = set()
    for name in names:
        try:
            text = (lab / "hosts" / name / AGENT_LOG).read_text(errors="replace")
        except OSError:
            continue
        if "]:[Error]:" in text or "]:[Fatal]:" in text:
            found.add(name)
    return found
