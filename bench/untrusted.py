"""What a Mac's untrusted output costs fleetctl: a hostile Mac beside a healthy one, and a big log.

    python -m bench.untrusted [--repeat 3] [--log-lines 1000000] [--json FILE]

On a fresh 2-Mac lab (mac-001 healthy, mac-002 hostile-output: terminal escapes, HTML, NUL,
invalid UTF-8 and a 60 MB line in its agent log), both rolled out with playbooks/rollout.yml:

- the controller's peak RSS, wall and CPU (wait4 on the fleetctl process) for `fleetctl status`
  and `fleetctl run playbooks/status.yml`, on both Macs and with --limit to the healthy one
  alone (the baseline), and whether the hostile Mac's escapes reached fleetctl's output raw;
- then mac-001's agent log is made LOG_LINES lines long (~150 MB, time-ordered over 10 days,
  written through the lab's host directory) and `fleetctl logs mac-001 --since 1h` and
  `fleetctl status --limit mac-001` are timed again.

What each command cost on the Macs: the bytes their processes read (rchar, which counts files,
pipes and sockets alike) and their CPU seconds, from the Mac's sshd listener: Linux adds a
reaped child's I/O and CPU to its parent, and every SSH session on a Mac is the listener's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import labcost
from bench.measure import Cost, measure

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
ROOT = Path(__file__).resolve().parents[1]
IDS = {"FLEETCTL_ACTIVATION_ID": "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11",
       "FLEETCTL_CUSTOMER_ID": "8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22"}
HEALTHY, HOSTILE = "mac-001", "mac-002"
AGENT_LOG = "root/var/log/qualys/qualys-cloud-agent.log"
HUGE = 60 << 20
# The hostile Mac's tricks as they would reach a terminal if fleetctl printed them raw (its own
# styling is off: the output is a pipe). HTML is harmless in a terminal and not looked for.
LEAKS = {"OSC title": "\x1b]0;PWNED", "OSC 52": "\x1b]52;", "CSI clear": "\x1b[2J", "C1 CSI": "\x9b", "NUL": "\x00",
         "backspace": "\x08"}
TIMEOUT_S = 900
MIX = (0, 0, 0, 1, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2)  # which message each line of the big log has


def env_for(lab: Path, work: Path) -> dict:
    """The Makefile's DEMO_SECRETS for this lab, and a journal of the bench's own."""
    env = {**os.environ, **IDS, "FLEETCTL_STATE_DIR": str(work / "state")}
    for var, name in (("FLEETCTL_LAB_SUDO_PASSWORD", "sudo-password"),
                      ("FLEETCTL_LAB_PROXY_PASSWORD", "proxy-password")):
        if (lab / name).exists():
            env[var] = (lab / name).read_text().strip()
    return env


def listeners(lab: Path) -> dict[str, int]:
    """Mac name -> pid of its sshd listener (every SSH session on that Mac is its descendant)."""
    found = {}
    for mac, pids in labcost.mac_processes(lab).items():
        for pid in pids:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if comm == "sshd" and b" -D " in args:
                found[mac] = pid
    return found


def mac_usage(pids: dict[str, int]) -> dict[str, tuple[int, float]]:
    """Mac -> (bytes read, CPU seconds) of its reaped SSH sessions so far."""
    usage = {}
    for mac, pid in pids.items():
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        usage[mac] = (int(io["rchar"]), (int(stat[13]) + int(stat[14])) / os.sysconf("SC_CLK_TCK"))  # cutime, cstime
    return usage


def run(name: str, argv: list[str], env: dict, lab: Path, repeat: int) -> dict:
    """ARGV REPEAT times: median wall, highest peak RSS, and per Mac what one run cost there."""
    pids = listeners(lab)
    costs: list[Cost] = []
    on_macs: dict[str, list[tuple[int, float]]] = {m: [] for m in pids}
    for _ in range(repeat):
        time.sleep(1)  # let the Macs' sshd reap the previous run's sessions
        before = mac_usage(pids)
        costs.append(measure(argv, env, timeout=TIMEOUT_S))
        time.sleep(1)
        after = mac_usage(pids)
        for mac in pids:
            on_macs[mac].append((after[mac][0] - before[mac][0], after[mac][1] - before[mac][1]))
    last = costs[-1]
    row = {"name": name, "argv": " ".join(argv[1:]), "exit": [c.returncode for c in costs],
           "wall_s": round(statistics.median(c.wall_s for c in costs), 2),
           "cpu_s": round(statistics.median(c.cpu_s for c in costs), 2),
           "peak_rss_mb": round(max(c.peak_rss_mb for c in costs), 1), "output_bytes": len(last.output.encode()),
           "output_lines": last.output.count("\n"), "leaked": [k for k, v in LEAKS.items() if v in last.output],
           "on_macs": {m: {"read_mb": round(statistics.median(r for r, _ in v) / 1e6, 1),
                           "cpu_s": round(statistics.median(c for _, c in v), 2)} for m, v in on_macs.items()},
           "output_tail": last.output[-600:]}
    print(f"{name}: exit {row['exit']} wall {row['wall_s']} s rss {row['peak_rss_mb']} MB macs {row['on_macs']}",
          file=sys.stderr)
    return row


def write_big_log(lab: Path, mac: str, lines: int, span_s: float = 10 * 86400) -> dict:
    """LINES agent-log lines before what the Mac's log already holds, evenly over SPAN_S up to
    a second before its first line: time-ordered, the last hour's lines at the end. Replaced
    atomically (the daemon opens the log by name for every line)."""
    path = lab / "hosts" / mac / AGENT_LOG
    old = path.read_bytes()
    first = time.mktime(time.strptime(old[:19].decode(), "%Y-%m-%d %H:%M:%S")) if old else time.time()
    end, step = first - 1, span_s / lines
    messages = [("Information", "Heartbeat acknowledged by platform qagpublic.qg1.fleetlab.test (proxy: none)"),
                ("Information", "Options received: LogLevel"),
                ("Warning", "Proxy 198.18.0.1:3128 failed: timed out"),
                ("Information", "Scan results uploaded for ControlID=20240427151136.0")]
    tmp = path.with_name(path.name + ".bench")  # same directory: os.replace stays atomic
    second, stamp = -1, ""  # one strftime a second, and no more memory: a child spawned later
    with open(tmp, "wb") as f:  # starts with this process's peak RSS as its own (vfork, then exec)
        batch = []
        for n in range(lines):
            when = end - (lines - 1 - n) * step
            if int(when) != second:
                second = int(when)
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            level, message = messages[MIX[n % len(MIX)]]
            batch.append(f"{stamp}.{int(when * 1000) % 1000:03d} [qualys-cloud-agent][9710]:[{level}]:"
                         f"[140048573286144]:{message}\n")
            if len(batch) == 10000:
                f.write("".join(batch).encode())
                batch.clear()
        f.write("".join(batch).encode())
        f.write(old)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return {"lines": lines + old.count(b"\n"), "bytes": path.stat().st_size,
            "last_hour_lines": int(min(lines, 3600 / step)) + old.count(b"\n")}


def wait_converged(lab: Path, timeout_s: float = 60) -> bool:
    """Both Macs have the hostid (the agent reached the pod) and the hostile one its huge line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ids = all((lab / "hosts" / m / "root/etc/qualys/hostid").exists() for m in (HEALTHY, HOSTILE))
        log = lab / "hosts" / HOSTILE / AGENT_LOG
        if ids and log.exists() and log.stat().st_size > HUGE:
            return True
        time.sleep(0.5)
    return False


def bench(args, work: Path) -> dict:
    lab, inv = work / "lab", str(work / "lab" / "inventory.yml")
    result: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "repeat": args.repeat}
    up = measure([FLEETCTL, "lab", "up", "--hosts", "2", "--personas", "arm64,hostile-output", "--dir", str(lab)])
    try:
        if up.returncode:
            raise SystemExit(f"lab up failed:\n{up.output[-2000:]}")
        env = env_for(lab, work)
        pkgs = []
        for arch in ("arm64", "x86_64"):
            pkg = work / f"{arch}.pkg"
            measure([FLEETCTL, "lab", "pkg", "--version", "6.1.0.20", "--arch", arch, "--size-mb", "2",
                     "--out", str(pkg)])
            pkgs += ["-e", f"agent_pkg_{arch}={pkg}"]
        rollout = measure([FLEETCTL, "run", str(ROOT / "playbooks/rollout.yml"), "-i", inv, *pkgs], env, TIMEOUT_S)
        result["rollout"] = {"exit": rollout.returncode, "wall_s": round(rollout.wall_s, 2),
                             "peak_rss_mb": round(rollout.peak_rss_mb, 1), "converged": wait_converged(lab),
                             "output_tail": rollout.output[-600:]}
        print(f"rollout: exit {rollout.returncode}, converged {result['rollout']['converged']}", file=sys.stderr)
        status_yml = str(ROOT / "playbooks/status.yml")
        rows = [run("status, both Macs", [FLEETCTL, "status", "-i", inv], env, lab, args.repeat),
                run("status, healthy only", [FLEETCTL, "status", "-i", inv, "--limit", HEALTHY], env, lab, args.repeat),
                run("run status.yml, both", [FLEETCTL, "run", status_yml, "-i", inv], env, lab, args.repeat),
                run("run status.yml, healthy only", [FLEETCTL, "run", status_yml, "-i", inv, "--limit", HEALTHY], env,
                    lab, args.repeat)]
        result["big_log"] = write_big_log(lab, HEALTHY, args.log_lines)
        print(f"big log: {result['big_log']}", file=sys.stderr)
        big = f"{args.log_lines:,}-line log"
        rows += [run(f"logs --since 1h, {big}", [FLEETCTL, "logs", HEALTHY, "-i", inv, "--since", "1h"], env, lab,
                     args.repeat),
                 run(f"status, healthy only, {big}", [FLEETCTL, "status", "-i", inv, "--limit", HEALTHY], env, lab,
                     args.repeat)]
        result["runs"] = rows
    finally:
        down = measure([FLEETCTL, "lab", "down", "--dir", str(lab)], timeout=300)
        if down.returncode:
            print(f"lab down failed:\n{down.output[-2000:]}", file=sys.stderr)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return result


def table(result: dict) -> str:
    rows = ["| command | exit | wall s | CPU s | peak RSS MB | output bytes | raw in output | "
            f"read on {HEALTHY} MB | on {HOSTILE} MB | Mac CPU s ({HEALTHY}/{HOSTILE}) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.get("runs", []):
        h, x = r["on_macs"].get(HEALTHY, {}), r["on_macs"].get(HOSTILE, {})
        rows.append(f"| {r['name']} | {','.join(map(str, sorted(set(r['exit']))))} | {r['wall_s']} | {r['cpu_s']} | "
                    f"{r['peak_rss_mb']} | {r['output_bytes']:,} | {', '.join(r['leaked']) or 'none'} | "
                    f"{h.get('read_mb')} | {x.get('read_mb')} | {h.get('cpu_s')}/{x.get('cpu_s')} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command (median wall, highest RSS)")
    parser.add_argument("--log-lines", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the lab needs root")
    with tempfile.TemporaryDirectory(prefix="fleetbench-untrusted-") as tmp:
        result = bench(args, Path(tmp))
    print(table(result))
    if "big_log" in result:
        big = result["big_log"]
        print(f"\n{HEALTHY}'s big log: {big['lines']:,} lines, {big['bytes'] / 1e6:.0f} MB, "
              f"~{big['last_hour_lines']:,} in the last hour")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
