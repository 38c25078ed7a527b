"""How each tool is run on the lab and what one run costs: its command line and environment,
its own CPU and peak RSS (wait4), the bytes on the lab's links, the machine's CPU meanwhile and,
when asked, what it made each Mac do (bench/macwork.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from bench import macwork, peers
from bench.labrun import FLEETCTL, IDS, ROOT, link_bytes
from bench.measure import Cost, machine_cpu_s, measure

TOOLS = ("fleetctl", "ansible", "pyinfra", "raw")


def command(tool: str, work: Path, lab: Path, inventory: dict, pkgs: dict, forks: int, peers_bin: Path,
            report: Path | None = None) -> list[str]:
    if tool == "fleetctl":  # its own default --forks (50): bounded concurrency is part of the design
        return [FLEETCTL, "run", str(ROOT / "playbooks/rollout.yml"), "-i", str(lab / "inventory.yml"),
                "-e", f"agent_pkg_arm64={pkgs['arm64']}", "-e", f"agent_pkg_x86_64={pkgs['x86_64']}",
                *(["--json", str(report)] if report else [])]
    return getattr(peers, tool)(work / tool, inventory, pkgs, IDS, forks, peers_bin)


def env_for(tool: str, work: Path) -> dict:
    env = {**os.environ, "FLEETCTL_STATE_DIR": str(work / "state"), "FLEETCTL_ACTIVATION_ID": IDS["activation"],
           "FLEETCTL_CUSTOMER_ID": IDS["customer"]}
    if tool == "ansible":
        env["ANSIBLE_CONFIG"] = str(work / "ansible" / "ansible.cfg")
    return env


def tree_macs(inventory: dict) -> list[str]:
    """The Macs whose every process is listed in the JSON: the first (x86_64: lab_up gives the
    first half of the Macs the x86_64 persona) and the last (arm64)."""
    names = list(inventory["all"]["hosts"])
    return sorted({names[0], names[-1]})


def timed(tool: str, argv: list[str], env: dict, lab: Path, watch: bool = False
          ) -> tuple[Cost, int, float] | tuple[Cost, int, float, macwork.Watcher]:
    """The tool's own cost, the bytes on the lab's links, and the whole machine's CPU meanwhile
    (the tool plus the simulated Macs' sshd, sudo, shims and installer). With WATCH, also
    what the tool made each Mac do (bench/macwork.py), started before and read after."""
    watcher = macwork.Watcher(lab, detail=set(tree_macs(yaml.safe_load((lab / "inventory.yml").read_text())))
                              ).start() if watch else None
    before, machine = link_bytes(lab), machine_cpu_s()
    cost = measure(argv, env)
    machine = machine_cpu_s() - machine
    sent = link_bytes(lab) - before
    if watcher is not None:
        watcher.result = watcher.stop()
    if cost.returncode:
        print(f"{tool} exited {cost.returncode}:\n{cost.output[-2000:]}", file=sys.stderr)
    return (cost, sent, machine, watcher) if watch else (cost, sent, machine)
