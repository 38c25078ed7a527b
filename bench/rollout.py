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

import yaml

from bench import labcost, macwork, peers
from bench.measure import Cost, machine_cpu_s, measure

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
ROOT = Path(__file__).resolve().parents[1]
IDS = {"activation": "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11", "customer": "8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22"}
TOOLS = ("fleetctl", "ansible", "pyinfra", "raw")


NEIGH = Path("/proc/sys/net/ipv4/neigh/default")


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


def build_pkgs(work: Path, mb: int) -> dict[str, Path]:
    pkgs = {}
    for arch in ("arm64", "x86_64"):
        pkgs[arch] = work / f"QualysCloudAgent-{arch}-{mb}mb.pkg"
        measure([FLEETCTL, "lab", "pkg", "--version", "6.1.0.20", "--arch", arch, "--size-mb", str(mb),
                 "--out", str(pkgs[arch])])
    return pkgs


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


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def cost_of(cost: Cost, hosts: int, machine: float, before_load: float) -> dict:
    return {"wall_s": round(cost.wall_s, 2), "cpu_s": round(cost.cpu_s, 2),
            "cpu_ms_per_host": round(1000 * cost.cpu_s / hosts, 1), "peak_rss_mb": round(cost.peak_rss_mb, 1),
            "exit": cost.returncode, "machine_cpu_s": round(machine, 1), "load_before": before_load, "load_after": load()}


AGENT_LOG = "root/var/log/qualys/qualys-cloud-agent.log"


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
    """The comparison as the plain-text table BENCHMARKS.md keeps."""
    if "scale" in result:
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
    rows = [f"shape: {result.get('shape', '?')}", "",
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
        result = scale(args, Path(tmp)) if args.scale else compare(args, Path(tmp))
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
