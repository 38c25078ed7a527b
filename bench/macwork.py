"""What a tool made each simulated Mac do while it ran: processes, bytes hashed, TLS, SSH.

    python -m bench.macwork --dir LAB [--tree mac-001] [--json FILE] -- COMMAND ...

Every count comes from the kernel, for the lab's Macs only (a Mac is its own PID and network
namespace), over the window in which the tool runs:

- processes, threads, execs: the kernel's process-events connector (netlink, the interface
  `forkstat` uses) reports every fork, exec and exit on the machine as it happens. A task
  belongs to a Mac when its parent does, starting from the processes found in the Mac's PID
  namespace when the window opens; so nothing is sampled or missed, however short-lived.
- what each process was and cost: the kernel's taskstats (netlink, the interface `getdelays`
  uses) sends, as each task exits, its name (the last program it exec'd), CPU time (sampled
  at the scheduler tick: exact in sum, coarse for one short process) and bytes read (rounded
  down to a KiB by the kernel); a process still running at the end is read from /proc. The
  command line of each exec is read from /proc as the exec is reported, for the Macs listed
  in DETAIL only (best effort: a process already gone is shown by its name only).
- bytes hashed: bytes read by hashing programs (openssl dgst, shasum, sha*sum, md5...), less
  what the same program reads hashing an empty file (its configuration, measured once here):
  exact to a KiB or two per run. Hashing inside another process (Ansible's copy and stat
  modules hash with Python's hashlib) is not a hashing program: its bytes show only in that
  python3's bytes read (kept apart).
- SSH: connections = TCP connections the Mac accepted (PassiveOpens in its network
  namespace's /proc/net/snmp: sshd is the only thing listening on a Mac); channels that ran
  something (exec, shell or subsystem requests) = programs sshd started for a session, i.e.
  execs by a child of a per-connection sshd (the per-connection sshd's own re-exec, a child
  of the listener, is not one).
- TLS handshakes: TCP connections the Mac opened (ActiveOpens in its namespace; in this lab
  every one is an HTTPS connection to the pod: curl in a preflight, the agent's check-ins),
  and of them the agent's check-ins (new lines in the pod's checkins.jsonl from the Mac).
- CPU: for each Mac, the sum over its live processes of their own and their reaped
  children's CPU time (/proc/PID/stat utime, stime, cutime, cstime), at the end less at the
  start: every process on a Mac is reaped by a process of that Mac (its sshd is its PID 1).

Cheap: the kernel sends a few dozen bytes per event (a few hundred per task exit); a thread
here reads them every 5 ms while they come and reports its own CPU time (`watcher_cpu_s`,
0.5 s in a 50-Mac rollout), which is part of the machine CPU of the run. Events the socket
could not hold would be counted (`lost_event_batches`; 64 MB buffers: none so far).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench import maccount, mactables
from bench.watcher import Watcher

# the counts and tables, where bench.rollout and others have always found them
hasher_overheads, summarize, table, programs_table, format_tree = (
    maccount.hasher_overheads, maccount.summarize, mactables.table, mactables.programs_table, mactables.format_tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="the lab's directory")
    parser.add_argument("--tree", action="append", default=[], help="list every process this Mac ran, per channel")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--batch-s", type=float, default=0,
                        help="read the kernel's events every so often (0, the default here: at once, so that "
                             "more short-lived processes' command lines are caught)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to watch after --")
    hasher_overheads()
    watcher = Watcher(args.dir.resolve(), detail=set(args.tree), batch_s=args.batch_s).start()
    rc = subprocess.call(command)
    result = watcher.stop()
    result["command"] = command
    result["exit"] = rc
    result["trees"] = {mac: watcher.tree(mac) for mac in args.tree}
    print(table({" ".join(command)[:40]: result}))
    print()
    print(programs_table(result))
    for mac, tree in result["trees"].items():
        print(f"\n{mac}:")
        print(format_tree(tree))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=dict) + "\n")
    sys.exit(rc)


if __name__ == "__main__":
    main()
