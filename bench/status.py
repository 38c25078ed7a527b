"""How fast is `fleetctl status` on a converged fleet?

    python -m bench.status --hosts 100 [--repeat 3] [--json FILE] [--peers-bin .venv-bench/bin]

Brings up its own lab, rolls the agent out (small packages: this measures the sweep, not
uploads), then times `fleetctl status` REPEAT times; prints the median and writes JSON.
With --peers-bin it also times Ansible doing the same read-only checks (bench/peers.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from bench import peers
from bench.measure import measure

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--peers-bin", type=Path, help="where ansible-playbook is (make bench installs it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetbench-") as tmp:
        lab = Path(tmp) / "lab"
        env = {**os.environ, "FLEETCTL_STATE_DIR": str(Path(tmp) / "state"),
               "FLEETCTL_ACTIVATION_ID": "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11",
               "FLEETCTL_CUSTOMER_ID": "8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22"}
        up = measure([FLEETCTL, "lab", "up", "--hosts", str(args.hosts), "--dir", str(lab)], env)
        if up.returncode:
            sys.exit(up.output)
        try:
            extra = []
            for arch in ("arm64", "x86_64"):
                pkg = Path(tmp) / f"{arch}.pkg"
                measure([FLEETCTL, "lab", "pkg", "--version", "6.1.0.20", "--arch", arch, "--size-mb", "2",
                         "--out", str(pkg)])
                extra += ["-e", f"agent_pkg_{arch}={pkg}"]
            rollout = measure([FLEETCTL, "run", str(ROOT / "playbooks/rollout.yml"), "-i", str(lab / "inventory.yml"),
                               "--forks", "100", *extra], env)
            if rollout.returncode:
                sys.exit(rollout.output[-3000:])
            sweeps = [measure([FLEETCTL, "status", "-i", str(lab / "inventory.yml")], env)
                      for _ in range(args.repeat)]
            ansible = None
            if args.peers_bin:
                inventory = yaml.safe_load((lab / "inventory.yml").read_text())
                work = Path(tmp) / "ansible"
                peers.ansible(work, inventory, {"arm64": Path(tmp) / "arm64.pkg", "x86_64": Path(tmp) / "x86_64.pkg"},
                              {"activation": "", "customer": ""}, 50, args.peers_bin)
                ansible = measure([str(args.peers_bin / "ansible-playbook"), str(work / "status.yml")],
                                  {**env, "ANSIBLE_CONFIG": str(work / "ansible.cfg")})
        finally:
            measure([FLEETCTL, "lab", "down", "--dir", str(lab)])
    walls = [s.wall_s for s in sweeps]
    result = {
        "hosts": args.hosts,
        "lab_up_s": round(up.wall_s, 2),
        "rollout_s": round(rollout.wall_s, 2),
        "status": {"wall_s": round(statistics.median(walls), 2), "runs_wall_s": [round(w, 2) for w in walls],
                   "cpu_s": round(statistics.median(s.cpu_s for s in sweeps), 2),
                   "peak_rss_mb": round(max(s.peak_rss_mb for s in sweeps), 1),
                   "ok": all(s.returncode == 0 for s in sweeps)},
    }
    if ansible:
        result["ansible_status"] = {"wall_s": round(ansible.wall_s, 2), "cpu_s": round(ansible.cpu_s, 2),
                                    "peak_rss_mb": round(ansible.peak_rss_mb, 1), "ok": ansible.returncode == 0}
        result["ratio_wall_fleetctl_to_ansible"] = round(result["status"]["wall_s"] / ansible.wall_s, 3)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
