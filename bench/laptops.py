"""A laptop fleet's campaign end to end (issue 18): how many cycles and how long until it converged.

    python -m bench.laptops [--macs 40] [--away 40] [--resume-every 20] [--json FILE] [--markdown FILE]

One fresh lab, one site (so Wake-on-LAN goes through a neighbour): mac-001 asleep (wired),
mac-002 asleep for good (Wi-Fi only), mac-003/004 renumbered, the rest away P% of the time.
Preparation, outside the measured campaign: fleetctl learns a Mac's Ethernet address and serial
at first contact, so the asleep Mac is woken by hand (fleetctl's own wake script, sent by a
neighbour), `run playbooks/status.yml` records every reachable Mac (installs nothing), then
`lab sleep mac-001` and `lab renumber` (the pair swap addresses).
Measured: `run rollout.yml --until NOW+D --retry-every 20s` (wake_wait 10s), then `resume -q` every
--resume-every s (a cycle each, as cron would) until `done`. Checks: `fleetctl report` and the Macs' disks.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.rollout import FLEETCTL, IDS, ROOT
from fleetctl import render

SITE = "office"
INSTALLER = "root/private/var/fleetlab/counts/installer"
RECEIPT = "root/private/var/db/receipts/com.qualys.cloud-agent.plist"
ACTING_STEPS = ("upload", "install", "upgrade", "configure", "verify", "fetch", "relay-open")


def fleetctl(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """fleetctl with this benchmark's own state dir and secrets; bounded (TimeoutExpired past TIMEOUT)."""
    return subprocess.run([FLEETCTL, *args], capture_output=True, text=True, timeout=timeout, env=env)


def must(done: subprocess.CompletedProcess, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """Stop the benchmark (the lab still goes down) on a step whose failure would void the figures."""
    if done.returncode not in ok:
        raise RuntimeError(f"{shlex.join(done.args)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done


def ssh(lab: Path, host: dict, command: str, stdin: str = "", timeout: float = 30) -> subprocess.CompletedProcess:
    """Plain OpenSSH to a lab Mac, its host key checked (the lab's known_hosts)."""
    argv = ["ssh", "-i", str(lab / "id_ed25519"), "-o", f"UserKnownHostsFile={lab / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
            "-l", host["ansible_user"], host["ansible_host"], command]
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # an away Mac mid-session: count it as no answer
        return subprocess.CompletedProcess(argv, 255, "", "timed out")


def installs(lab: Path, name: str) -> int:
    """How often `installer` ran on NAME, from its own disk (its address may have moved)."""
    path = lab / "hosts" / name / INSTALLER
    return int(path.read_text().strip() or 0) if path.exists() else 0


def laptop_log(lab: Path, since: str) -> list[str]:
    """The lab's own record of each laptop's comings and goings (laptops.log) from SINCE
    (local 'YYYY-mm-dd HH:MM:SS'): the ground truth against which the report is judged."""
    path = lab / "laptops" / "laptops.log"
    return [l for l in path.read_text(errors="replace").splitlines() if l[:19] >= since] if path.exists() else []


def woke_in_lab(c: dict) -> list[str]:
    """Macs the lab saw wake during the campaign ('mac-001: waking (magic packet from ...)')."""
    return sorted({line[20:].split(":")[0] for line in c["laptops_log"] if ": waking (" in line})


def prepare(env: dict, lab: Path, hosts: dict, asleep: str, pair: list[str], away: list[str]) -> dict:
    """First contact with the asleep wired Mac (woken by hand from a neighbour), identities of every
    reachable Mac, then the Mac back to sleep and the renumbered pair swapped."""
    script = render.render("wake", addresses=[hosts[asleep]["lab_ethernet"]])
    sender = next((n for n in pair + away[:8] if ssh(lab, hosts[n], "/bin/sh -s", script).returncode == 0), None)
    if sender is None:
        raise RuntimeError("no neighbour of the site answered to send the wake packet")
    t0, deadline = time.monotonic(), time.monotonic() + 60
    while ssh(lab, hosts[asleep], "true", timeout=10).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{asleep} did not answer within 60 s of {sender}'s wake packet")
        time.sleep(1)
    woke_s, inventory = time.monotonic() - t0, str(lab / "inventory.yml")
    seen = must(fleetctl(env, "run", str(ROOT / "playbooks/status.yml"), "-i", inventory, "-q"), ok=(0, 3))
    recorded = must(fleetctl(env, "identities", "-i", inventory)).stdout
    must(fleetctl(env, "lab", "sleep", asleep, "--dir", str(lab), timeout=120))
    must(fleetctl(env, "lab", "renumber", "--dir", str(lab), timeout=120))
    return {"wake_sender": sender, "asleep_answered_after_s": round(woke_s, 1), "status_run_exit": seen.returncode,
            "asleep_ethernet_recorded": hosts[asleep]["lab_ethernet"] in recorded,
            "macs_recorded": sum(hosts[n]["lab_serial"] in recorded for n in hosts)}


def campaign(env: dict, lab: Path, work: Path, args, convergeable: set[str]) -> dict:
    """The measured part: the first run, then a resume every --resume-every s (bounded) until done."""
    book = work / "rollout-laptops.yml"
    book.write_text((ROOT / "playbooks/rollout.yml").read_text() + "wake_wait: 10s\n")
    until = (datetime.datetime.now() + datetime.timedelta(minutes=args.deadline_min)).strftime("%Y-%m-%d %H:%M:%S")
    argv = ["run", str(book), "-i", str(lab / "inventory.yml"), "--until", until,
            "--retry-every", f"{args.resume_every}s", "--json", str(work / "first.json")]
    start, since = time.monotonic(), time.strftime("%Y-%m-%d %H:%M:%S")
    first = fleetctl(env, *argv, timeout=600)
    run_id = json.loads((work / "first.json").read_text())["run_id"]
    cycles: list[dict] = []
    converged_cycle = converged_s = None
    stop_at = start + 60 * args.deadline_min + 300  # the deadline plus 5 min: every wait is bounded
    done, last, tries = first, 0.0, {}
    while True:
        doc = json.loads(must(fleetctl(env, "report", run_id, "--format", "json", timeout=120)).stdout)
        ok = {h["name"] for h in doc["hosts"] if h["status"] in ("ok", "changed")}
        now_tries = {h["name"]: h.get("attempts") or 0 for h in doc["hosts"]}
        cycles.append({"cycle": len(cycles), "at_s": round(last, 1), "wall_s": round(time.monotonic() - start - last, 1),
                       "exit": done.returncode, "state": doc["state"], "converged": len(ok),
                       "tried": sorted(n for n, k in now_tries.items() if k > tries.get(n, 0)),
                       "next_retry": {h["name"]: h.get("next_retry") for h in doc["hosts"] if h["status"] == "pending"},
                       "output": done.stdout[-400:] if done.returncode not in (0, 3) else ""})
        tries = now_tries
        if converged_cycle is None and convergeable <= ok:
            converged_cycle, converged_s = len(cycles) - 1, time.monotonic() - start
        if doc["state"] == "done" or time.monotonic() > stop_at:
            break
        # as cron would: on the next tick of a fixed 20 s clock; a tick during a resume is lost
        ticks = int((time.monotonic() - start) // args.resume_every) + 1
        time.sleep(max(0.0, start + ticks * args.resume_every - time.monotonic()))
        last = time.monotonic() - start
        done = fleetctl(env, "resume", run_id, "-q", timeout=600)
    return {"run_id": run_id, "until": until, "first_run_command": ("fleetctl " + shlex.join(argv)).replace(str(work), "WORK"),
            "first_run_output": first.stdout[-3000:], "cycles": cycles, "wall_s": round(time.monotonic() - start, 1),
            "converged_cycle": converged_cycle, "converged_s": round(converged_s, 1) if converged_s else None,
            "bound_hit": doc["state"] != "done", "report": doc, "laptops_log": laptop_log(lab, since)}


def checks(lab: Path, hosts: dict, c: dict, asleep: str, wifi: str, pair: list[str], convergeable: set[str]) -> list[dict]:
    """Pass/fail per claim of the issue, each with its evidence."""
    doc = c["report"]
    by = {h["name"]: h for h in doc["hosts"]}
    out: list[dict] = []

    def check(name: str, ok: bool, detail) -> None:
        out.append({"check": name, "pass": bool(ok), "detail": detail})

    names = [h["name"] for h in doc["hosts"]]
    check("report lists every Mac once, run done", sorted(names) == sorted(hosts) and doc["state"] == "done",
          {"listed": len(names), "state": doc["state"]})
    not_ok = {n: f"{by[n]['status']}: {(by[n]['reason'] or '')[:240]}" for n in sorted(convergeable)
              if by[n]["status"] not in ("ok", "changed")}
    check(f"{len(convergeable)} convergeable Macs converged", not not_ok, not_ok or "all changed/ok")
    counts = {n: installs(lab, n) for n in hosts}
    wrong = {n: k for n, k in counts.items() if k != (1 if n in convergeable else 0)}
    check("installer ran exactly once on each convergeable Mac, never on the others", not wrong, wrong or "as expected")
    for name, other in ((pair[0], pair[1]), (pair[1], pair[0])):
        h, reason = by[name], by[name]["reason"] or ""
        acted = [s["name"] for s in h.get("steps", []) if s["name"].split()[0] in ACTING_STEPS]
        both = hosts[name]["lab_serial"] in reason and hosts[other]["lab_serial"] in reason
        check(f"renumbered {name}: refused naming both serials, never acted on",
              h["status"] == "unreachable" and both and counts[name] == 0 and not acted
              and not (lab / "hosts" / name / RECEIPT).exists(),
              {"status": h["status"], "reason": reason, "installer": counts[name], "acting_steps": acted,
               "attempts": h.get("attempts"), "woken_by": h.get("woken_by")})
    a = by[asleep]
    check(f"asleep wired {asleep}: woken by a neighbour and converged",
          bool(a.get("woken_by")) and a["status"] == "changed" and counts[asleep] == 1,
          {"status": a["status"], "woken_by": a.get("woken_by"), "attempts": a.get("attempts"),
           "converged_at": a.get("converged_at")})
    w = by[wifi]
    check(f"asleep Wi-Fi {wifi}: unreachable, 'not seen before the deadline'", w["status"] == "unreachable" and
          (w["reason"] or "").startswith("not seen before the deadline"), {k: w.get(k) for k in ("status", "reason")})
    woke, listed = woke_in_lab(c), doc["summary"].get("woken", [])
    check("extra: summary.woken names exactly the Macs that woke (the lab's laptops.log)", listed == woke,
          {"summary.woken": listed, "woke_in_lab": woke,
           "woken_by": {n: by[n].get("woken_by") for n in listed}})
    conv = [p["converged"] for p in doc.get("convergence", [])]
    check("convergence series rises to the convergeable count", bool(conv) and conv == sorted(conv)
          and conv[-1] == len(convergeable), {"points": len(conv)})
    return out


def leftovers(c: dict, convergeable: set[str]) -> dict:
    """Convergeable Macs that did not converge, with why: when the lab had them present or away,
    and when fleetctl tried them."""
    return {h["name"]: {"presence": [l for l in c["laptops_log"] if f" {h['name']}: " in l][:80],
                        **{k: h.get(k) for k in ("status", "reason", "attempts", "first_attempt", "last_attempt")}}
            for h in c["report"]["hosts"] if h["name"] in convergeable and h["status"] not in ("ok", "changed")}


def summarise(result: dict, convergeable: set[str]) -> dict:
    """The issue's figures, from the final report and the cycles."""
    doc, c = result["campaign"]["report"], result["campaign"]
    attempts = sorted(h.get("attempts") or 0 for h in doc["hosts"] if h["name"] in convergeable)
    started = datetime.datetime.fromisoformat(doc["started"])
    last = max((datetime.datetime.fromisoformat(h["converged_at"]) for h in doc["hosts"]
                if h["name"] in convergeable and h.get("converged_at")), default=started)
    series = [(round((datetime.datetime.fromisoformat(p["at"]) - started).total_seconds() / 60, 1), p["converged"])
              for p in doc.get("convergence", [])]
    return {"first_pass_s": c["cycles"][0]["wall_s"], "first_pass_converged": c["cycles"][0]["converged"],
            "series_min_converged": series, "cycles_to_converged": c["converged_cycle"],
            "minutes_to_converged": round(c["converged_s"] / 60, 2) if c["converged_s"] else None,
            "minutes_to_last_converged_at": round((last - started).total_seconds() / 60, 2),
            "cycles_to_done": len(c["cycles"]) - 1, "minutes_to_done": round(c["wall_s"] / 60, 2),
            "attempts": {"min": attempts[0], "median": statistics.median(attempts), "max": attempts[-1]},
            "woken": doc["summary"].get("woken", []),
            "woke_in_lab": woke_in_lab(c),
            "by_status": doc["summary"]["by_status"]}


def table(result: dict) -> str:
    s, n, a = result["figures"], result["convergeable"], result["figures"]["attempts"]
    rows = ["| figure | value |", "|---|---|",
            f"| the first run (one pass): seconds, Macs converged after it | {s['first_pass_s']} s, {s['first_pass_converged']} |",
            f"| cycles (resumes after the first run) until {n}/{n} convergeable Macs converged | {s['cycles_to_converged']} |",
            f"| minutes to 100 % of the convergeable Macs (wall, from the first run's start) | {s['minutes_to_converged']} |",
            f"| minutes to the last `converged_at` (report) | {s['minutes_to_last_converged_at']} |",
            f"| cycles / minutes until the run was `done` (deadline) | {s['cycles_to_done']} / {s['minutes_to_done']} |",
            f"| attempts per convergeable Mac: min / median / max | {a['min']} / {a['median']} / {a['max']} |",
            f"| Macs woken (`summary.woken`) | {len(s['woken'])}: {', '.join(s['woken']) or '-'} |",
            f"| Macs that really woke (the lab's laptops.log) | {len(s['woke_in_lab'])}: {', '.join(s['woke_in_lab']) or '-'} |",
            f"| final statuses | {json.dumps(s['by_status'])} |", "", "| check | result |", "|---|---|"]
    rows += [f"| {c['check']} | {'pass' if c['pass'] else '**FAIL**'} |" for c in result["checks"]]
    return "\n".join(rows)


def markdown(result: dict) -> str:
    p = result["preparation"]
    series = ", ".join(f"{c} at {m} min" for m, c in result["figures"]["series_min_converged"])
    fails = [f"- {c['check']}: `{json.dumps(c['detail'])}`" for c in result["checks"] if not c["pass"]]
    return "\n".join([
        f"## Laptops: {result['macs']} Macs, {result['away_percent']} % away, a resume every {result['resume_every_s']} s",
        "", "```sh", result["command"], "```", "",
        f"{result['date']}, load before {result['loadavg_before'][0]:.2f}. Lab: `{result['lab_command']}`. "
        f"Preparation (not timed): {p['wake_sender']} woke mac-001 by hand (fleetctl's wake script; it answered after "
        f"{p['asleep_answered_after_s']} s), `run playbooks/status.yml` recorded {p['macs_recorded']} Macs' identities, "
        "then `lab sleep mac-001` and `lab renumber`. Campaign: "
        f"`{result['campaign']['first_run_command']}` (the playbook plus `wake_wait: 10s`), then `fleetctl resume RUN_ID -q` "
        f"every {result['resume_every_s']} s.", "", table(result), "", f"Convergence series (`convergence[]`: "
        f"converged Macs, minutes after the run started): {series}.", *([""] + fails if fails else [])]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--macs", type=int, default=40)
    parser.add_argument("--away", type=int, default=40, help="percent of the time each away laptop is gone")
    parser.add_argument("--away-period", type=float, default=20.0, help="lab up --away-period, seconds")
    parser.add_argument("--resume-every", type=int, default=20, help="seconds between resumes (also --retry-every)")
    parser.add_argument("--deadline-min", type=float, default=8.0, help="the campaign's --until, minutes from its start")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    if args.macs < 6 or not 1 <= args.away <= 99 or args.resume_every < 10:
        parser.error("--macs at least 6, --away 1-99, --resume-every at least 10 (fleetctl's retry_every floor)")
    asleep, wifi, pair = "mac-001", "mac-002", ["mac-003", "mac-004"]
    personas = f"asleep,asleep-wifi,renumbered*2,away={args.away}%*{args.macs - 4}"
    result: dict = {"command": ".venv/bin/python -m bench.laptops " + shlex.join(sys.argv[1:]),
                    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    "macs": args.macs, "away_percent": args.away, "resume_every_s": args.resume_every,
                    "deadline_min": args.deadline_min, "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="fleetbench-laptops-", ignore_cleanup_errors=True) as tmp:
        work, lab = Path(tmp), Path(tmp) / "lab"
        env = {**os.environ, "FLEETCTL_STATE_DIR": str(work / "state"), "FLEETCTL_ACTIVATION_ID": IDS["activation"],
               "FLEETCTL_CUSTOMER_ID": IDS["customer"]}
        up = ["lab", "up", "--hosts", "0", "--sites", f"{SITE}={args.macs}@100mbit", "--personas", personas,
              "--away-period", str(args.away_period), "--seed", "1", "--dir", str(lab)]
        result["lab_command"] = "fleetctl " + shlex.join(up).replace(str(lab), "DIR")
        try:
            must(fleetctl(env, *up, timeout=600))
            hosts = yaml.safe_load((lab / "inventory.yml").read_text())["all"]["hosts"]
            away = [n for n in hosts if n not in (asleep, wifi, *pair)]
            convergeable = set(hosts) - {wifi, *pair}
            result["convergeable"] = len(convergeable)
            result["preparation"] = prepare(env, lab, hosts, asleep, pair, away)
            print(f"prepared: {result['preparation']}", file=sys.stderr)
            result["campaign"] = campaign(env, lab, work, args, convergeable)
            result["checks"] = checks(lab, hosts, result["campaign"], asleep, wifi, pair, convergeable)
            result["leftovers"] = leftovers(result["campaign"], convergeable)
            result["installer_counts"] = {n: installs(lab, n) for n in hosts}
        finally:
            down = fleetctl(env, "lab", "down", "--dir", str(lab), timeout=300)
            if down.returncode and (lab / "state.json").exists():
                print(f"lab down failed:\n{down.stdout}{down.stderr}", file=sys.stderr)
    result["loadavg_after"] = os.getloadavg()
    result["figures"] = summarise(result, convergeable)
    result["table"] = table(result)
    print(result["table"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(result))
    sys.exit(0 if all(c["pass"] for c in result["checks"]) else 1)


if __name__ == "__main__":
    main()
