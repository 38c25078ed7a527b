"""fleetctl alone as the fleet grows (`bench.rollout --scale 100,500,1000`): at each size, on a
fresh lab, the rollout, the no-op rerun and a status sweep; whether the reports list every Mac
once and agree with the Macs' disks; what each simulated Mac costs the machine (bench/labcost.py)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench import labcost
from bench.labrun import (FLEETCTL, build_pkgs, converged_hosts, ensure_neighbour_table, lab_up, load,
                          logged_errors)
from bench.measure import Cost, measure
from bench.runs import command, env_for, timed


def cost_of(cost: Cost, hosts: int, machine: float, before_load: float) -> dict:
    return {"wall_s": round(cost.wall_s, 2), "cpu_s": round(cost.cpu_s, 2),
            "cpu_ms_per_host": round(1000 * cost.cpu_s / hosts, 1), "peak_rss_mb": round(cost.peak_rss_mb, 1),
            "exit": cost.returncode, "machine_cpu_s": round(machine, 1), "load_before": before_load, "load_after": load()}


def check_report(path: Path, expected: set[str], converged: set[str], healthy_word: str | None = None,
                 lab: Path | None = None) -> dict:
    """Does the JSON report list every Mac exactly once, and say ok/changed (or healthy) exactly
    for the Macs that really are converged? Returns the counts and a few names of each mismatch.
    For `status`, a converged Mac called unhealthy is not misreported when its agent log on
    disk does hold an error (counted apart, as unhealthy_with_logged_error)."""
    try:
        hosts = json.loads(path.read_text())["hosts"]
    except (OSError, ValueError, KeyError) as e:
        return {"error": f"no report: {e}", "lost": len(expected), "misreported": len(expected)}
    names = [h["name"] for h in hosts]
    seen = set(names)
    duplicated = sorted({n for n in names if names.count(n) > 1}) if len(names) != len(seen) else []
    if healthy_word:  # `fleetctl status`: health
        good = {h["name"] for h in hosts if h.get("health") == healthy_word}
        by: dict[str, int] = {}
        for h in hosts:
            by[h.get("health", "?")] = by.get(h.get("health", "?"), 0) + 1
    else:
        good = {h["name"] for h in hosts if h.get("status") in ("ok", "changed")}
        by = {}
        for h in hosts:
            by[h.get("status", "?")] = by.get(h.get("status", "?"), 0) + 1
    lost, extra = sorted(expected - seen), sorted(seen - expected)
    said_good_not = sorted(good - converged)  # reported fine, not converged on disk
    said_bad_is = sorted((converged & seen) - good)  # converged on disk, reported otherwise
    truthful = set()
    if healthy_word and lab is not None:
        unhealthy = {h["name"] for h in hosts if h.get("health") == "unhealthy"}
        truthful = logged_errors(lab, set(said_bad_is) & unhealthy)
        said_bad_is = [n for n in said_bad_is if n not in truthful]
    return {"listed": len(names), "unique": len(seen), "by": by, "reported_good": len(good),
            "unhealthy_with_logged_error": len(truthful),
            "lost": len(lost), "unknown": len(extra), "duplicated": len(duplicated),
            "misreported": len(said_good_not) + len(said_bad_is),
            "examples": {k: v[:5] for k, v in [("lost", lost), ("unknown", extra), ("duplicated", duplicated),
                                                ("good_not_converged", said_good_not),
                                                ("converged_not_good", said_bad_is)] if v}}


def scale(args, work: Path) -> dict:
    pkgs = build_pkgs(work, args.pkg_mb)
    lab = work / "lab"
    curve = []
    env = env_for("fleetctl", work)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        for n in args.scale:
            neigh = ensure_neighbour_table(n)
            inventory, up_s = lab_up(lab, n)
            expected = set(inventory["all"]["hosts"])
            point: dict = {"hosts": n, "lab_up_s": round(up_s, 1), "lab_up_ms_per_mac": round(1000 * up_s / n, 1)}
            if args.pod_nice is not None:  # the pod stands for Qualys' cloud, not for work on these cores
                pod_pid = json.loads((lab / "state.json").read_text())["pod_pid"]
                os.setpriority(os.PRIO_PROCESS, pod_pid, args.pod_nice)
                point["pod_nice"] = args.pod_nice
            if neigh:
                point["neighbour_table_raised"] = neigh
            argv = command("fleetctl", work, lab, inventory, pkgs, n, args.peers_bin, work / f"rollout-{n}.json")
            before = load()
            cost, sent, machine = timed("fleetctl", argv, env, lab)
            converged = converged_hosts(lab)
            point["rollout"] = {**cost_of(cost, n, machine, before), "bytes_sent": sent, "converged": len(converged),
                                "report": check_report(work / f"rollout-{n}.json", expected, converged)}
            print(f"{n} rollout: {point['rollout']}", file=sys.stderr)
            if args.idle_s:  # the converged lab with nothing running: what the simulated Macs cost
                point["lab_cost"] = {"memory": labcost.memory(lab), "idle": labcost.idle_cpu(lab, args.idle_s)}
            else:
                point["lab_cost"] = {"memory": labcost.memory(lab)}
            print(f"{n} lab cost: per Mac {point['lab_cost']['memory']['per_mac']} idle "
                  f"{point['lab_cost'].get('idle')}", file=sys.stderr)
            argv = command("fleetctl", work, lab, inventory, pkgs, n, args.peers_bin, work / f"noop-{n}.json")
            before = load()
            noop, noop_sent, machine = timed("fleetctl", argv, env, lab)
            point["noop"] = {**cost_of(noop, n, machine, before), "bytes_sent": noop_sent,
                             "report": check_report(work / f"noop-{n}.json", expected, converged_hosts(lab, 0))}
            print(f"{n} no-op: {point['noop']}", file=sys.stderr)
            status_argv = [FLEETCTL, "status", "-i", str(lab / "inventory.yml"), "--json", str(work / f"status-{n}.json")]
            before = load()
            sweep, _, machine = timed("fleetctl", status_argv, env, lab)
            point["status"] = {**cost_of(sweep, n, machine, before),
                               "report": check_report(work / f"status-{n}.json", expected, converged_hosts(lab, 0),
                                                      healthy_word="healthy", lab=lab)}
            print(f"{n} status: {point['status']}", file=sys.stderr)
            # The simulated agents' own health: a check-in the pod did not answer within 10 s
            # is logged as an error (the pod is one process sharing the controller's cores).
            point["agents_with_logged_errors"] = len(logged_errors(lab, expected))
            curve.append(point)
            if args.keep_reports:
                args.keep_reports.mkdir(parents=True, exist_ok=True)
                for kind in ("rollout", "noop", "status"):
                    (args.keep_reports / f"{kind}-{n}.json").write_bytes((work / f"{kind}-{n}.json").read_bytes())
    finally:
        if (lab / "state.json").exists():
            measure([FLEETCTL, "lab", "down", "--dir", str(lab)])
    result = {"pkg_mb": args.pkg_mb, "forks": "fleetctl defaults (run 50, status 100)", "started": started,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "cores": os.cpu_count(),
              "scale": curve}
    result["targets"] = targets(curve)
    return result


def targets(curve: list[dict]) -> dict:
    """The issue's targets, judged on the largest size against the smallest."""
    if not curve:
        return {}
    small, big = curve[0], curve[-1]
    ratio = {kind: round(big[kind]["cpu_ms_per_host"] / small[kind]["cpu_ms_per_host"], 2)
             if small[kind]["cpu_ms_per_host"] else None for kind in ("rollout", "noop", "status")}
    peak = max(big[kind]["peak_rss_mb"] for kind in ("rollout", "noop", "status"))
    wrong = sum(p[kind]["report"].get(k, 0) for p in curve for kind in ("rollout", "noop", "status")
                for k in ("lost", "unknown", "duplicated", "misreported"))
    return {
        "at_hosts": big["hosts"], "against_hosts": small["hosts"],
        "peak_rss_mb": peak, "peak_rss_ok": peak <= 200,
        "cpu_per_mac_ratio": ratio, "cpu_per_mac_ok": ratio["rollout"] is not None and ratio["rollout"] <= 1.2,
        "noop_wall_s": big["noop"]["wall_s"], "noop_wall_ok": big["noop"]["wall_s"] <= 60,
        "hosts_lost_or_misreported": wrong, "hosts_ok": wrong == 0,
    }


def table(result: dict) -> str:
    """The --scale curve as the plain-text tables BENCHMARKS.md keeps."""
    rows = ["| Macs | rollout wall | CPU | CPU ms/Mac | peak RSS | no-op wall | no-op CPU ms/Mac | no-op RSS | "
            "status wall | status CPU ms/Mac | status RSS | ok / reported |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in result["scale"]:
        r, n, s = p["rollout"], p["noop"], p["status"]
        rows.append(f"| {p['hosts']} | {r['wall_s']} s | {r['cpu_s']} s | {r['cpu_ms_per_host']} | "
                    f"{r['peak_rss_mb']} MB | {n['wall_s']} s | {n['cpu_ms_per_host']} | {n['peak_rss_mb']} MB | "
                    f"{s['wall_s']} s | {s['cpu_ms_per_host']} | {s['peak_rss_mb']} MB | "
                    f"{r['converged']} / {r['report'].get('reported_good')} |")
    base = result["scale"][0]
    rows.append("")
    rows.append(f"ratios to {base['hosts']} Macs (CPU ms per Mac; peak RSS):")
    for p in result["scale"][1:]:
        parts = [f"{kind} CPU/Mac x{p[kind]['cpu_ms_per_host'] / base[kind]['cpu_ms_per_host']:.2f}"
                 for kind in ("rollout", "noop", "status") if base[kind]["cpu_ms_per_host"]]
        parts.append(f"rollout RSS x{p['rollout']['peak_rss_mb'] / base['rollout']['peak_rss_mb']:.2f}")
        rows.append(f"  {p['hosts']}: " + ", ".join(parts))
    rows.append("")
    rows.append("| Macs | lab up | up per Mac | processes per Mac | PSS per Mac | RSS per Mac | idle lab CPU |")
    rows.append("|---|---|---|---|---|---|---|")
    for p in result["scale"]:
        mem, idle = p["lab_cost"]["memory"], p["lab_cost"].get("idle") or {}
        rows.append(f"| {p['hosts']} | {p['lab_up_s']} s | {p['lab_up_ms_per_mac']} ms | "
                    f"{mem['per_mac']['processes']} | {mem['per_mac']['pss_mb']} MB | {mem['per_mac']['rss_mb']} MB | "
                    f"{idle.get('lab_cores_busy', '-')} cores |")
    rows.append("")
    rows.append("targets: " + json.dumps(result.get("targets", {})))
    return "\n".join(rows)

