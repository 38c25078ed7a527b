"""A branch office behind one thin uplink: fleetctl's relay against uploading once per Mac.

    python -m bench.site --macs 20 --uplink 20mbit --pkg-mb 40 [--peers-bin DIR] [--json FILE]

Every run starts a fresh lab whose Macs are one site (`lab up --sites office=N@RATE`): their
own LAN, and one uplink shaped with tbf to RATE between them and the controller and pod.
Measured per run: wall time, the tool's CPU (wait4, its children included), the bytes that
crossed the uplink controller -> site (`site_uplink_bytes` before and after), and the Macs
converged on disk (bench.rollout.ok_hosts).

Runs, in this order:
  targets   fleetctl (relay) on all-arm64 sites of 1 and N Macs: one package each, so the
            wall-time ratio N/1 is the flatness target on equal bytes; then a site of 2 Macs
            (one per architecture) as the baseline of the mixed site below.
  tools     the mixed site (N Macs, half x86_64, as bench.rollout): fleetctl with relay,
            fleetctl --no-relay, Ansible, pyinfra, each doing bench.rollout's rollout.

The target (from the issue): with relay, N Macs finish in at most 1.5x the time of 1 Mac
through the same uplink, and uplink bytes = one package per architecture present.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.measure import machine_cpu_s, measure
from bench.rollout import FLEETCTL, ROOT, build_pkgs, command, env_for, link_bytes, ok_hosts
from fleetctl.errors import LabError
from fleetctl.lab.fleet import site_uplink_bytes

SITE = "office"
TOOLS = ("fleetctl", "fleetctl-no-relay", "ansible", "pyinfra")
TARGET_RATIO = 1.5
BYTES_TOLERANCE = 0.10  # wire overhead allowed over the packages' bytes: far below one more copy
LAB_RETRY_S = 20


def lab_up(lab: Path, macs: int, rate: str, x86: int) -> dict:
    """A fresh lab: one site of MACS Macs behind RATE, the first X86 of them x86_64."""
    if (lab / "state.json").exists():
        lab_down(lab)
    argv = [FLEETCTL, "lab", "up", "--sites", f"{SITE}={macs}@{rate}", "--personas",
            f"x86_64*{x86}" if x86 else "", "--dir", str(lab)]
    for attempt in (1, 2):
        up = measure(argv, timeout=300)
        if up.returncode == 0:
            return yaml.safe_load((lab / "inventory.yml").read_text())
        if (lab / "state.json").exists():
            lab_down(lab)
        if attempt == 1 and re.search(r"slot|bridge|network setup failed", up.output, re.I):
            print(f"lab up failed ({up.output.strip().splitlines()[-1]}); retrying in {LAB_RETRY_S}s", file=sys.stderr)
            time.sleep(LAB_RETRY_S)
            continue
        sys.exit(f"{shlex.join(argv)} failed:\n{up.output}")
    raise AssertionError("unreachable")


def lab_down(lab: Path) -> None:
    down = measure([FLEETCTL, "lab", "down", "--dir", str(lab)], timeout=300)
    if down.returncode:
        print(f"lab down in {lab} failed:\n{down.output}", file=sys.stderr)


def arches_of(inventory: dict) -> list[str]:
    return sorted({h["lab_personas"][0] for h in inventory["all"]["hosts"].values()})


def argv_for(tool: str, work: Path, lab: Path, inventory: dict, pkgs: dict, peers_bin: Path, report: Path,
             timeout_s: int) -> list[str]:
    """bench.rollout's command line for the tool, under coreutils' timeout: it runs the tool in a
    process group of its own and signals the whole group (ansible's forks, their ssh) at the cap."""
    forks = len(inventory["all"]["hosts"])
    if tool.startswith("fleetctl"):
        argv = command("fleetctl", work, lab, inventory, pkgs, forks, peers_bin) + ["--json", str(report)]
        if tool == "fleetctl-no-relay":
            argv.append("--no-relay")
    else:
        argv = command(tool, work, lab, inventory, pkgs, forks, peers_bin)
    return ["timeout", "--kill-after", "15", str(timeout_s), *argv]


def one_run(tool: str, work: Path, labs: Path, macs: int, rate: str, x86: int, pkgs: dict[str, Path],
            peers_bin: Path, timeout_s: int) -> dict:
    """One rollout; run again (once) if the lab lost its uplink meanwhile: another lab starting
    or stopping on this machine took it away, so the figures would not be this tool's."""
    try:
        return _one_run(tool, work, labs / f"{tool}-{macs}-{x86}", macs, rate, x86, pkgs, peers_bin, timeout_s)
    except LabError as e:
        print(f"{tool} on {macs} Macs: the lab was disturbed ({e}); running it again", file=sys.stderr)
        m = _one_run(tool, work, labs / f"{tool}-{macs}-{x86}-again", macs, rate, x86, pkgs, peers_bin, timeout_s)
        m["rerun_because"] = str(e)
        return m


def _one_run(tool: str, work: Path, lab: Path, macs: int, rate: str, x86: int, pkgs: dict[str, Path],
             peers_bin: Path, timeout_s: int) -> dict:
    """Fresh lab (in a directory of its own: ok_hosts counts the Mac directories there), the
    rollout, its figures, lab down."""
    inventory = lab_up(lab, macs, rate, x86)
    try:
        arches = arches_of(inventory)
        report = work / f"report-{tool}-{macs}-{x86}.json"
        report.unlink(missing_ok=True)
        argv = argv_for(tool, work, lab, inventory, pkgs, peers_bin, report, timeout_s)
        env = env_for("fleetctl" if tool.startswith("fleetctl") else tool, work)
        up0, links0, machine0 = site_uplink_bytes(lab, SITE), link_bytes(lab), machine_cpu_s()
        cost = measure(argv, env, timeout=timeout_s + 60)
        machine = machine_cpu_s() - machine0
        uplink, links = site_uplink_bytes(lab, SITE) - up0, link_bytes(lab) - links0
        timed_out = cost.returncode in (124, 137) or cost.wall_s >= timeout_s
        if cost.returncode:
            print(f"{tool} exited {cost.returncode}{' (timed out)' if timed_out else ''}:\n{cost.output[-2000:]}",
                  file=sys.stderr)
        pkg_bytes = {a: pkgs[a].stat().st_size for a in arches}
        m = {"tool": tool, "macs": macs, "x86_64_macs": x86, "arches": arches, "wall_s": round(cost.wall_s, 2),
             "cpu_s": round(cost.cpu_s, 2), "peak_rss_mb": round(cost.peak_rss_mb, 1),
             "machine_cpu_s": round(machine, 2), "returncode": cost.returncode, "timed_out": timed_out,
             "uplink_bytes": uplink, "bytes_to_macs_all_links": links,
             "package_bytes_per_arch_present": pkg_bytes,
             "uplink_packages_worth": round(uplink / (sum(pkg_bytes.values()) / len(pkg_bytes)), 2),
             "ok_hosts": ok_hosts(lab)}
        if report.exists():
            r = json.loads(report.read_text())
            sources: dict[str, int] = {}
            for h in r["hosts"]:
                key = (h.get("package_from") or "-").split()[0]
                sources[key] = sources.get(key, 0) + 1
            m["fleetctl_report"] = {"state": r.get("state"), "by_status": r["summary"].get("by_status"),
                                    "uploaded_bytes": r["summary"].get("uploaded_bytes"),
                                    "uplink_bytes_by_site": r["summary"].get("uplink_bytes_by_site"),
                                    "package_from": sources,
                                    "relays": sorted({h["package_from"].split()[1] for h in r["hosts"]
                                                      if (h.get("package_from") or "").startswith("relay ")}),
                                    "failed": {h["name"]: h.get("reason") for h in r["hosts"]
                                               if h["status"] not in ("ok", "changed")},
                                    "steps_s": step_times(r["hosts"])}
        print(f"{tool} {macs} Macs ({x86} x86_64): {json.dumps(m)}", file=sys.stderr)
        return m
    finally:
        lab_down(lab)


def step_times(hosts: list[dict]) -> dict:
    """Per step of fleetctl's report (`fetch from mac-007` counted as `fetch`): how many Macs ran
    it, median and max seconds; and the Macs' own durations. Where the time went, per phase."""
    by: dict[str, list[float]] = {"host total": [h["duration_s"] for h in hosts if h.get("duration_s") is not None]}
    for h in hosts:
        for st in h.get("steps", []):
            by.setdefault(st["name"].split(" from ")[0], []).append(st["duration_s"])
    return {name: {"n": len(d), "median": round(sorted(d)[len(d) // 2], 2), "max": round(max(d), 2)}
            for name, d in by.items() if d}


def median_of(runs: list[dict]) -> dict:
    """The run of median wall time (the machine is shared: one run can be unlucky), with every
    run's wall time and uplink bytes beside it."""
    m = dict(sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2])
    m["wall_s_runs"] = [r["wall_s"] for r in runs]
    m["uplink_bytes_runs"] = [r["uplink_bytes"] for r in runs]
    return m


def bytes_check(m: dict) -> dict:
    """Uplink bytes against one package per architecture present (wire overhead = TCP/IP and SSH
    framing, every Mac's SSH sessions, the agents' first check-ins with the pod)."""
    packages = sum(m["package_bytes_per_arch_present"].values())
    over = m["uplink_bytes"] - packages
    check = {"uplink_bytes": m["uplink_bytes"], "packages_bytes": packages, "overhead_bytes": over,
             "overhead_pct": round(100 * over / packages, 2), "overhead_per_mac_kb": round(over / m["macs"] / 1e3, 1),
             "pass": 0 <= over <= BYTES_TOLERANCE * packages}
    reported = (m.get("fleetctl_report") or {}).get("uplink_bytes_by_site", {}).get(SITE)
    if reported is not None:
        check["fleetctl_reported_uplink_bytes"] = reported
        check["fleetctl_reported_equals_packages"] = reported == packages
    return check


def ratio_check(big: dict, base: dict) -> dict:
    ratio = round(big["wall_s"] / base["wall_s"], 2)
    return {"wall_s": big["wall_s"], "baseline_wall_s": base["wall_s"], "ratio": ratio,
            "pass": ratio <= TARGET_RATIO and big["ok_hosts"] == big["macs"] and base["ok_hosts"] == base["macs"]}


def bench(args, work: Path) -> dict:
    pkgs = build_pkgs(work, args.pkg_mb)
    labs = work / "labs"
    n, half = args.macs, args.macs // 2
    result: dict = {"command": "python -m bench.site " + shlex.join(sys.argv[1:]),
                    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y"),
                    "macs": n, "uplink": args.uplink, "pkg_mb": args.pkg_mb,
                    "package_bytes": {a: p.stat().st_size for a, p in pkgs.items()},
                    "peer_timeout_s": args.timeout, "loadavg_before": os.getloadavg(),
                    "targets": {}, "tools": {}}
    run = lambda tool, macs, x86: one_run(tool, work, labs, macs, args.uplink, x86, pkgs, args.peers_bin, args.timeout)
    try:
        if not args.skip_targets:
            for key, macs, x86 in (("1_arm64", 1, 0), (f"{n}_arm64", n, 0), ("2_one_per_arch", 2, 1)):
                result["targets"][key] = median_of([run("fleetctl", macs, x86) for _ in range(args.repeat)])
        for tool in args.tools:
            result["tools"][tool] = run(tool, n, half)
    finally:
        for lab in labs.glob("*/state.json"):
            lab_down(lab.parent)
    result["loadavg_after"] = os.getloadavg()
    t, tools = result["targets"], result["tools"]
    checks: dict = {}
    if t:
        checks["flat_same_bytes"] = {"what": f"{n} arm64 Macs vs 1 arm64 Mac, relay", **ratio_check(t[f"{n}_arm64"], t["1_arm64"])}
        checks["bytes_one_arch"] = {"what": f"{n} arm64 Macs, relay", **bytes_check(t[f"{n}_arm64"])}
        one, many = t["1_arm64"]["uplink_bytes"], t[f"{n}_arm64"]["uplink_bytes"]
        checks["bytes_vs_one_mac"] = {"what": f"uplink bytes, {n} arm64 Macs against 1 arm64 Mac (same package)",
                                      "ratio": round(many / one, 3), "extra_bytes": many - one,
                                      "extra_per_extra_mac_kb": round((many - one) / (n - 1) / 1e3, 1)}
        checks["bytes_one_mac"] = {"what": "1 arm64 Mac (the floor: one upload, no relay needed)", **bytes_check(t["1_arm64"])}
        if "fleetctl" in tools:
            checks["flat_two_arches"] = {"what": f"{n} Macs ({half} x86_64) vs 2 Macs (one per arch), relay",
                                         **ratio_check(tools["fleetctl"], t["2_one_per_arch"])}
            checks["flat_two_arches_vs_1_mac"] = {"what": f"{n} Macs ({half} x86_64) vs 1 arm64 Mac (twice the bytes)",
                                                  **ratio_check(tools["fleetctl"], t["1_arm64"])}
    if "fleetctl" in tools:
        checks["bytes_two_arches"] = {"what": f"{n} Macs ({half} x86_64), relay", **bytes_check(tools["fleetctl"])}
    result["checks"] = checks
    base = tools.get("fleetctl")
    if base:
        for m in tools.values():
            m["wall_vs_fleetctl_relay"] = round(m["wall_s"] / base["wall_s"], 2)
    return result


def table(result: dict) -> str:
    rows = ["| tool | wall s | vs fleetctl relay | uplink MB | ok | CPU s |", "|---|---|---|---|---|---|"]
    names = {"fleetctl": "fleetctl (relay)", "fleetctl-no-relay": "fleetctl --no-relay"}
    for tool, m in result["tools"].items():
        wall = f"{m['wall_s']}" + (f" (timed out at {result['peer_timeout_s']} s)" if m["timed_out"] else "")
        rows.append(f"| {names.get(tool, tool)} | {wall} | {m.get('wall_vs_fleetctl_relay')}x | "
                    f"{m['uplink_bytes'] / 1e6:.1f} | {m['ok_hosts']}/{m['macs']} | {m['cpu_s']} |")
    return "\n".join(rows)


def targets_text(result: dict) -> str:
    c, t = result["checks"], result["targets"]
    n = result["macs"]
    if not t:
        return ""
    mark = lambda ok: "**met**" if ok else "**missed**"
    lines = ["| run (fleetctl, relay) | wall s | uplink MB | packages MB | overhead | ok |", "|---|---|---|---|---|---|"]
    rows = [("1 Mac, arm64", t["1_arm64"]), (f"{n} Macs, all arm64", t[f"{n}_arm64"]),
            ("2 Macs, one per arch", t["2_one_per_arch"])]
    if "fleetctl" in result["tools"]:
        rows.append((f"{n} Macs, {n // 2} x86_64", result["tools"]["fleetctl"]))
    for label, m in rows:
        b = bytes_check(m)
        lines.append(f"| {label} | {m['wall_s']} | {m['uplink_bytes'] / 1e6:.2f} | {b['packages_bytes'] / 1e6:.2f} | "
                     f"{b['overhead_bytes'] / 1e6:+.2f} MB ({b['overhead_pct']:+.1f} %) | {m['ok_hosts']}/{m['macs']} |")
    f = c["flat_same_bytes"]
    runs = lambda key: ", ".join(str(w) for w in t[key].get("wall_s_runs", []))
    lines += ["", f"Wall times are the median of {len(t['1_arm64'].get('wall_s_runs', [1]))} runs each "
              f"(1 Mac: {runs('1_arm64')}; {n} arm64: {runs(f'{n}_arm64')}; 2 Macs: {runs('2_one_per_arch')}).", "",
              f"- Time, same bytes: {n} arm64 Macs took {f['wall_s']} s, 1 arm64 Mac {f['baseline_wall_s']} s: "
              f"**{f['ratio']}x** (target <= {TARGET_RATIO}x): {mark(f['pass'])}."]
    if "flat_two_arches" in c:
        g, h = c["flat_two_arches"], c["flat_two_arches_vs_1_mac"]
        lines.append(f"- Time, two architectures: {n} Macs ({n // 2} x86_64) took {g['wall_s']} s, 2 Macs (one per "
                     f"arch, the same two packages) {g['baseline_wall_s']} s: **{g['ratio']}x** ({mark(g['pass'])}); "
                     f"against 1 Mac (half the bytes) {h['ratio']}x.")
    if "bytes_vs_one_mac" in c:
        v = c["bytes_vs_one_mac"]
        lines.append(f"- Bytes against the 1-Mac floor (same package, same framing): {n} arm64 Macs sent "
                     f"{v['ratio']}x the uplink bytes of 1 Mac, {v['extra_bytes']:,} B more "
                     f"({v['extra_per_extra_mac_kb']} kB per extra Mac: its SSH sessions and its agent's first "
                     f"check-ins with the pod).")
    for key in ("bytes_one_arch", "bytes_two_arches"):
        if key in c:
            b = c[key]
            rep = ""
            if "fleetctl_reported_uplink_bytes" in b:
                rep = (f"; fleetctl's own count (`uplink_bytes_by_site`) {b['fleetctl_reported_uplink_bytes']:,} B, "
                       f"{'exactly' if b['fleetctl_reported_equals_packages'] else 'NOT'} the packages")
            lines.append(f"- Bytes, {b['what']}: {b['uplink_bytes']:,} B over the uplink for {b['packages_bytes']:,} B of "
                         f"packages, overhead {b['overhead_bytes']:,} B ({b['overhead_pct']} %, "
                         f"{b['overhead_per_mac_kb']} kB per Mac){rep}: {mark(b['pass'])} "
                         f"(allowed: 0 to {int(BYTES_TOLERANCE * 100)} %).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--macs", type=int, default=20)
    parser.add_argument("--uplink", default="20mbit", help="the site's uplink rate, as tc reads it (20mbit)")
    parser.add_argument("--pkg-mb", type=int, default=40)
    parser.add_argument("--tools", type=lambda s: s.split(","), default=list(TOOLS))
    parser.add_argument("--repeat", type=int, default=3, help="runs of each target rollout (median is used)")
    parser.add_argument("--skip-targets", action="store_true", help="only the tools on the mixed site")
    parser.add_argument("--timeout", type=int, default=900, help="cap on one rollout, seconds (then reported as such)")
    parser.add_argument("--peers-bin", type=Path, default=ROOT / ".venv-bench" / "bin",
                        help="where ansible-playbook and pyinfra are installed (make bench installs them)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.macs < 2:
        parser.error("--macs: at least 2 (the site against 1 Mac)")
    with tempfile.TemporaryDirectory(prefix="fleetbench-site-") as tmp:
        result = bench(args, Path(tmp))
    result["table"], result["checks_text"] = table(result), targets_text(result)
    print(result["table"])
    print()
    print(result["checks_text"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
