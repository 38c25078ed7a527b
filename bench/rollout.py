"""fleetctl against Ansible, pyinfra and a plain-OpenSSH floor, on the same lab, in turns.

    python -m bench.rollout --hosts 50 --pkg-mb 40 [--json FILE] [--peers-bin DIR]
    python -m bench.rollout --scale 10,50,200,500 --pkg-mb 5     # fleetctl alone, as N grows

Every tool starts from a fresh lab (no agent anywhere), does the same rollout (upload the
arch's package, installer with sudo, provisioning tool, verify), then reruns it on the
converged fleet (no-op). Bytes sent are counted on the lab's links; CPU and peak RSS with
wait4 on the tool's process (its children included). Figures only ever come from runs.
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

from bench import peers
from bench.measure import Cost, machine_cpu_s, measure

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
ROOT = Path(__file__).resolve().parents[1]
IDS = {"activation": "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11", "customer": "8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22"}
TOOLS = ("fleetctl", "ansible", "pyinfra", "raw")


def lab_up(lab: Path, hosts: int) -> dict:
    if (lab / "state.json").exists():
        measure([FLEETCTL, "lab", "down", "--dir", str(lab)])
    up = measure([FLEETCTL, "lab", "up", "--hosts", str(hosts), "--personas", f"x86_64*{hosts // 2}" if hosts > 1 else "",
                  "--dir", str(lab)])
    if up.returncode:
        sys.exit(up.output)
    return yaml.safe_load((lab / "inventory.yml").read_text())


def link_bytes(lab: Path) -> int:
    """Bytes the controller side sent towards the Macs (tx of the lab's veths)."""
    slot = json.loads((lab / "state.json").read_text())["slot"]
    total = 0
    for dev in Path("/sys/class/net").iterdir():
        if dev.name.startswith(f"fl{slot}h"):
            total += int((dev / "statistics" / "tx_bytes").read_text())
    return total


def ok_hosts(lab: Path, settle_s: float = 30) -> int:
    """Macs where the agent is installed and provisioned, seen from the controller. The hostid
    appears when the agent first reaches the platform, a moment after a tool may have finished:
    wait for it (bounded), outside the timed run."""
    deadline = time.monotonic() + settle_s
    while True:
        hosts = list((lab / "hosts").iterdir())
        ok = sum(1 for h in hosts if (h / "root/private/var/db/receipts/com.qualys.cloud-agent.plist").exists()
                 and (h / "root/etc/qualys/hostid").exists())
        if ok == len(hosts) or time.monotonic() > deadline:
            return ok
        time.sleep(0.5)


def command(tool: str, work: Path, lab: Path, inventory: dict, pkgs: dict, forks: int, peers_bin: Path) -> list[str]:
    if tool == "fleetctl":  # its own default --forks (50): bounded concurrency is part of the design
        return [FLEETCTL, "run", str(ROOT / "playbooks/rollout.yml"), "-i", str(lab / "inventory.yml"),
                "-e", f"agent_pkg_arm64={pkgs['arm64']}", "-e", f"agent_pkg_x86_64={pkgs['x86_64']}"]
    return getattr(peers, tool)(work / tool, inventory, pkgs, IDS, forks, peers_bin)


def env_for(tool: str, work: Path) -> dict:
    env = {**os.environ, "FLEETCTL_STATE_DIR": str(work / "state"), "FLEETCTL_ACTIVATION_ID": IDS["activation"],
           "FLEETCTL_CUSTOMER_ID": IDS["customer"]}
    if tool == "ansible":
        env["ANSIBLE_CONFIG"] = str(work / "ansible" / "ansible.cfg")
    return env


def timed(tool: str, argv: list[str], env: dict, lab: Path) -> tuple[Cost, int, float]:
    """The tool's own cost, the bytes on the lab's links, and the whole machine's CPU meanwhile
    (the tool plus the simulated Macs' sshd, sudo, shims and installer)."""
    before, machine = link_bytes(lab), machine_cpu_s()
    cost = measure(argv, env)
    machine = machine_cpu_s() - machine
    if cost.returncode:
        print(f"{tool} exited {cost.returncode}:\n{cost.output[-2000:]}", file=sys.stderr)
    return cost, link_bytes(lab) - before, machine


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
    result: dict = {"hosts": args.hosts, "pkg_mb": args.pkg_mb, "tools": {}, "noop": {}, "status": {}}
    try:
        for tool in args.tools:
            inventory = lab_up(lab, args.hosts)
            argv = command(tool, work, lab, inventory, pkgs, args.hosts, args.peers_bin)
            env = env_for(tool, work)
            cost, sent, machine = timed(tool, argv, env, lab)
            result["tools"][tool] = {"wall_s": round(cost.wall_s, 2), "cpu_s": round(cost.cpu_s, 2),
                                     "peak_rss_mb": round(cost.peak_rss_mb, 1), "bytes_sent": sent,
                                     "ok_hosts": ok_hosts(lab), "machine_cpu_s": round(machine, 2)}
            noop, noop_sent, _ = timed(tool, argv, env, lab)
            result["noop"][tool] = {"wall_s": round(noop.wall_s, 2), "bytes_sent": noop_sent}
            print(f"{tool}: {result['tools'][tool]} noop {result['noop'][tool]}", file=sys.stderr)
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


def scale(args, work: Path) -> dict:
    pkgs = build_pkgs(work, args.pkg_mb)
    lab = work / "lab"
    curve = []
    try:
        for n in args.scale:
            inventory = lab_up(lab, n)
            cost, sent, _ = timed("fleetctl", command("fleetctl", work, lab, inventory, pkgs, n, args.peers_bin),
                                  env_for("fleetctl", work), lab)
            noop, _, _ = timed("fleetctl", command("fleetctl", work, lab, inventory, pkgs, n, args.peers_bin),
                            env_for("fleetctl", work), lab)
            point = {"hosts": n, "wall_s": round(cost.wall_s, 2), "cpu_s": round(cost.cpu_s, 2),
                     "cpu_ms_per_host": round(1000 * cost.cpu_s / n, 1), "peak_rss_mb": round(cost.peak_rss_mb, 1),
                     "bytes_sent": sent, "ok_hosts": ok_hosts(lab), "noop_wall_s": round(noop.wall_s, 2)}
            curve.append(point)
            print(point, file=sys.stderr)
    finally:
        if (lab / "state.json").exists():
            measure([FLEETCTL, "lab", "down", "--dir", str(lab)])
    return {"pkg_mb": args.pkg_mb, "scale": curve}


def table(result: dict) -> str:
    """The comparison as the plain-text table BENCHMARKS.md keeps."""
    if "scale" in result:
        rows = ["| Macs | wall s | CPU s | CPU ms/Mac | peak RSS MB | no-op s | ok |", "|---|---|---|---|---|---|---|"]
        rows += [f"| {p['hosts']} | {p['wall_s']} | {p['cpu_s']} | {p['cpu_ms_per_host']} | {p['peak_rss_mb']} | "
                 f"{p['noop_wall_s']} | {p['ok_hosts']} |" for p in result["scale"]]
        return "\n".join(rows)
    rows = ["| tool | wall s | CPU s | machine CPU s | peak RSS MB | MB sent | ok | wall vs fleetctl | no-op s | no-op MB |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for tool, m in result["tools"].items():
        ratio = result.get("ratios_to_fleetctl", {}).get(tool, {}).get("wall_s")
        noop = result["noop"].get(tool, {})
        rows.append(f"| {tool} | {m['wall_s']} | {m['cpu_s']} | {m.get('machine_cpu_s')} | {m['peak_rss_mb']} | "
                    f"{m['bytes_sent'] / 1e6:.1f} | "
                    f"{m['ok_hosts']} | {ratio} | {noop.get('wall_s')} | {noop.get('bytes_sent', 0) / 1e6:.2f} |")
    for tool, m in result.get("status", {}).items():
        rows.append(f"\nstatus sweep, {tool}: {m['wall_s']} s wall, {m['cpu_s']} s CPU")
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetbench-") as tmp:
        result = scale(args, Path(tmp)) if args.scale else compare(args, Path(tmp))
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
