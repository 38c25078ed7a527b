"""fleetctl against Ansible, pyinfra and a plain-OpenSSH floor, on the same lab, in turns.

    python -m bench.rollout --hosts 50 --pkg-mb 40 [--json FILE] [--peers-bin DIR]
    python -m bench.rollout --scale 100,500,1000 --pkg-mb 5    # fleetctl alone, as N grows

--scale measures, at each size, on a fresh lab: the rollout, the no-op rerun and a `fleetctl
status` sweep (wall, CPU, peak RSS of the fleetctl process), whether the JSON reports list
every Mac exactly once and agree with what is on the Macs' disks, and what each simulated Mac
costs the machine (bench/labcost.py: PSS of its processes, lab up time, idle CPU).

Every tool starts from a fresh lab (no agent anywhere), does the same rollout (upload the
arch's package, installer with sudo, provisioning tool, wait for the hostid the platform
assigns, verify), then reruns it on the converged fleet (no-op). The timed run ends when the
tool returns, and every tool returns only once each agent has reached the platform (fleetctl's
verify, the peers' wait for /etc/qualys/hostid: bench/peers.py); `ok at end` counts the Macs
with the receipt and the hostid at that moment. --hostid-outside runs the peers in the old
shape (they stop after the configuration tool; the hostid is waited for outside the timed run).
Bytes sent are counted on the lab's links; CPU and peak RSS with wait4 on the tool's process
(its children included); what each tool made the Macs do with bench/macwork.py (processes,
bytes hashed, TLS handshakes, SSH connections and channels, the Macs' CPU), from the
kernel's process events and taskstats. Figures only ever come from runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import macwork, peers, scale as scale_curve
# bench.site and bench.laptops take these from here
from bench.labrun import (FLEETCTL, IDS, ROOT, build_pkgs, converged_hosts, lab_up, link_bytes,  # noqa: F401
                          load, ok_hosts, other_labs)
from bench.measure import measure
from bench.runs import TOOLS, command, env_for, timed, tree_macs  # noqa: F401 (bench.site uses them from here)


def compare(args, work: Path) -> dict:
    pkgs = build_pkgs(work, args.pkg_mb)
    lab = work / "lab"
    peers.WAIT_HOSTID = not args.hostid_outside
    result: dict = {"hosts": args.hosts, "pkg_mb": args.pkg_mb, "tools": {}, "noop": {}, "status": {},
                    "shape": "hostid outside the timed run (old)" if args.hostid_outside else
                    "hostid inside the timed run: every tool waits for it",
                    "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "cores": os.cpu_count(),
                    "macwork": {}, "macwork_trees": {}, "shared": {}}
    watch = not args.no_macwork
    if watch:
        result["hasher_overhead_bytes"] = macwork.hasher_overheads()
    try:
        if args.warmup != "none":
            result["warmup"] = warm_up(args, work, lab, pkgs)
        for tool in args.tools:
            inventory, _ = lab_up(lab, args.hosts)
            argv = command(tool, work, lab, inventory, pkgs, args.hosts, args.peers_bin)
            env = env_for(tool, work)
            shared = {"other_labs_before": other_labs(lab), "load_before": load()}
            run = timed(tool, argv, env, lab, watch)
            cost, sent, machine = run[:3]
            ok_at_end = len(converged_hosts(lab, 0))
            result["tools"][tool] = {"wall_s": round(cost.wall_s, 2), "cpu_s": round(cost.cpu_s, 2),
                                     "peak_rss_mb": round(cost.peak_rss_mb, 1), "bytes_sent": sent,
                                     "ok_at_end": ok_at_end, "ok_hosts": ok_hosts(lab),
                                     "machine_cpu_s": round(machine, 2), "exit": cost.returncode}
            shared["other_labs_after_rollout"] = other_labs(lab)
            noop_run = timed(tool, argv, env, lab, watch)
            noop, noop_sent, noop_machine = noop_run[:3]
            result["noop"][tool] = {"wall_s": round(noop.wall_s, 2), "bytes_sent": noop_sent,
                                    "machine_cpu_s": round(noop_machine, 2), "exit": noop.returncode}
            shared["other_labs_after_noop"] = other_labs(lab)
            shared["load_after"] = load()
            result["shared"][tool] = shared
            if watch:
                result["macwork"][tool] = {"rollout": run[3].result, "noop": noop_run[3].result}
                result["macwork_trees"][tool] = {kind: {mac: w.tree(mac) for mac in tree_macs(inventory)}
                                                 for kind, w in (("rollout", run[3]), ("noop", noop_run[3]))}
                print(f"{tool} on the Macs: rollout {run[3].result['summary']['per_mac']} "
                      f"noop {noop_run[3].result['summary']['per_mac']}", file=sys.stderr)
            print(f"{tool}: {result['tools'][tool]} noop {result['noop'][tool]} shared {shared}", file=sys.stderr)
            if tool in ("fleetctl", "ansible"):
                status_argv = ([FLEETCTL, "status", "-i", str(lab / "inventory.yml")]
                               if tool == "fleetctl" else
                               [str(args.peers_bin / "ansible-playbook"), str(work / "ansible" / "status.yml")])
                sweep, _, _ = timed(tool, status_argv, env, lab)
                result["status"][tool] = {"wall_s": round(sweep.wall_s, 2), "cpu_s": round(sweep.cpu_s, 2)}
    finally:
        if (lab / "state.json").exists():
            measure([FLEETCTL, "lab", "down", "--dir", str(lab)])
    base = result["tools"].get("fleetctl")
    if base:
        result["ratios_to_fleetctl"] = {
            tool: {k: round(m[k] / base[k], 2) if base[k] else None for k in ("wall_s", "cpu_s", "peak_rss_mb", "bytes_sent")}
            for tool, m in result["tools"].items()}
    return result


def warm_up(args, work: Path, lab: Path, pkgs: dict) -> dict:
    """One untimed rollout on a lab of its own, thrown away: the first tool measured on a cold
    machine paid ~7 s more than in second place (2026-12-06: fleetctl 34.2 s first, 27.0 s second
    after raw; its Macs' installer 493 against 395 ms of CPU), for caches every later tool finds warm."""
    inventory, _ = lab_up(lab, args.hosts)
    cost = measure(command(args.warmup, work / "warmup", lab, inventory, pkgs, args.hosts, args.peers_bin),
                   env_for(args.warmup, work / "warmup"))
    print(f"warm-up ({args.warmup}, not timed): {cost.wall_s:.2f} s, exit {cost.returncode}", file=sys.stderr)
    return {"tool": args.warmup, "wall_s": round(cost.wall_s, 2), "exit": cost.returncode}


def table(result: dict) -> str:
    """The comparison as the plain-text table BENCHMARKS.md keeps."""
    warm = result.get("warmup")
    rows = [f"shape: {result.get('shape', '?')}", *([f"warm-up, not timed: {warm['tool']} {warm['wall_s']} s"]
                                                      if warm else []), "",
            "| tool | wall s | CPU s | machine CPU s | peak RSS MB | MB sent | ok at end | ok +30 s | wall vs fleetctl "
            "| no-op s | no-op machine CPU s | no-op MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for tool, m in result["tools"].items():
        ratio = result.get("ratios_to_fleetctl", {}).get(tool, {}).get("wall_s")
        noop = result["noop"].get(tool, {})
        rows.append(f"| {tool} | {m['wall_s']} | {m['cpu_s']} | {m.get('machine_cpu_s')} | {m['peak_rss_mb']} | "
                    f"{m['bytes_sent'] / 1e6:.1f} | {m.get('ok_at_end', '-')} | "
                    f"{m['ok_hosts']} | {ratio} | {noop.get('wall_s')} | {noop.get('machine_cpu_s', '-')} | "
                    f"{noop.get('bytes_sent', 0) / 1e6:.2f} |")
    for tool, m in result.get("status", {}).items():
        rows.append(f"\nstatus sweep, {tool}: {m['wall_s']} s wall, {m['cpu_s']} s CPU")
    for tool, s in result.get("shared", {}).items():
        if s.get("other_labs_before") or s.get("other_labs_after_rollout") or s.get("other_labs_after_noop"):
            rows.append(f"\nshared machine during {tool}: other labs {s.get('other_labs_before')} before, "
                        f"{s.get('other_labs_after_rollout')} after the rollout, "
                        f"{s.get('other_labs_after_noop')} after the no-op; "
                        f"load {s.get('load_before')} -> {s.get('load_after')}")
    if result.get("macwork"):
        runs = {f"{tool} {kind}": w[kind] for tool, w in result["macwork"].items() for kind in ("rollout", "noop")}
        rows += ["", "What each tool made a Mac do (per Mac, mean over the Macs; bench/macwork.py):", "",
                 macwork.table(runs), ""]
        for label, w in runs.items():
            programs = w["summary"]["programs_per_mac"]
            rows.append(f"{label}, programs per Mac (count, CPU ms): " + ", ".join(
                f"{name} {r['processes']:g} ({r['cpu_ms']:g})" for name, r in programs.items()))
        rows.append("")
        rows.append("watcher CPU s (part of machine CPU): " + ", ".join(
            f"{label} {w['watcher_cpu_s']}" for label, w in runs.items()))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--pkg-mb", type=int, default=40)
    parser.add_argument("--tools", type=lambda s: s.split(","), default=list(TOOLS))
    parser.add_argument("--scale", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--peers-bin", type=Path, default=ROOT / ".venv-bench" / "bin",
                        help="where ansible-playbook and pyinfra are installed (make bench installs them)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--warmup", default="raw", choices=[*TOOLS, "none"],
                        help="the tool whose rollout, untimed, warms the machine before the timed runs (default raw)")
    parser.add_argument("--hostid-outside", action="store_true",
                        help="the old shape: the peers stop after the configuration tool, the hostid is waited "
                             "for outside the timed run (fleetctl always waits for it in its verify)")
    parser.add_argument("--no-macwork", action="store_true",
                        help="do not count what the tools make the Macs do (bench/macwork.py)")
    parser.add_argument("--idle-s", type=float, default=15,
                        help="with --scale: measure the converged lab's own CPU for this long (0: skip)")
    parser.add_argument("--keep-reports", type=Path, help="with --scale: copy fleetctl's JSON reports here")
    parser.add_argument("--pod-nice", type=int,
                        help="with --scale: run the lab's pod (the stand-in for Qualys' platform) at this nice "
                             "value, so the Macs' check-ins are not starved by the load on the shared cores")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetbench-") as tmp:
        result = scale_curve.scale(args, Path(tmp)) if args.scale else compare(args, Path(tmp))
    print(scale_curve.table(result) if args.scale else table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
