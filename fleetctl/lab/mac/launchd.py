"""launchctl on a simulated Mac: a tiny launchd for system daemons.

load/bootstrap start a plist's ProgramArguments in a session of their own and record the job
(its pid and that pid's start time, so a reused pid is never taken for it) in
/private/var/fleetlab/launchd/<label>.json; unload/bootout stop it, kickstart restarts it,
list and print report it as macOS does (the last exit status: what a crashed daemon left in
<label>.exit). Lies beside macshim.py in /usr/local/bin/.lib; stdlib only.

Also pgrep as macOS has it (adv_cmds pkill.c): a pattern is matched against the basename of
each process's argv[0], and only without one against the kernel's short name. Debian's procps
matches the kernel's name alone, which Linux cuts to 15 bytes, so there `pgrep
qualys-cloud-agent` (18) finds nothing (it warns and exits 1) although the daemon runs.
"""
import os
import sys

from shimcommon import LAB, fail, loads

LAUNCHD = LAB + "/launchd"
UNKNOWN_SERVICE = 113


def _job(label: str):
    try:
        with open(f"{LAUNCHD}/{label}.json") as f:
            return loads(f.read())
    except (OSError, ValueError):
        return None


def _start_time(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
        return None if fields[0] == "Z" else fields[19]
    except (OSError, IndexError):
        return None


def _running_pid(job):
    pid = job.get("pid") if job else None
    return pid if pid and _start_time(pid) == job.get("start") else None


def _last_exit(label: str) -> int:
    try:
        with open(f"{LAUNCHD}/{label}.exit") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _load(plist_path: str) -> None:
    import json
    import plistlib
    import subprocess

    with open(plist_path, "rb") as f:
        plist = plistlib.load(f)
    label = plist["Label"]
    if _running_pid(_job(label)):
        print(f"{plist_path}: service already loaded", file=sys.stderr)
        return
    try:
        os.unlink(f"{LAUNCHD}/{label}.exit")
    except FileNotFoundError:
        pass
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "XPC_SERVICE_NAME": label}
    proc = subprocess.Popen(plist["ProgramArguments"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True, cwd="/", env=env)
    with open(f"{LAUNCHD}/{label}.json", "w") as f:
        json.dump({"label": label, "plist": plist_path, "program": plist["ProgramArguments"][0],
                   "pid": proc.pid, "start": _start_time(proc.pid)}, f)


def _stop(label: str) -> bool:
    import signal
    import time

    job = _job(label)
    if job is None:
        return False
    pid = _running_pid(job)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):  # up to 5 s, then kill
            if not _start_time(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
    os.unlink(f"{LAUNCHD}/{label}.json")
    return True


def _label_of(target: str) -> str:
    if target.endswith(".plist"):
        import plistlib

        with open(target, "rb") as f:
            return plistlib.load(f)["Label"]
    return target.split("/", 1)[-1]


def launchctl(args: list) -> None:
    if not args:
        fail("Usage: launchctl <subcommand> ... | help [subcommand]")
    command, rest = args[0], [a for a in args[1:] if a not in ("-w", "-F")]
    if command in ("load", "unload", "bootstrap", "bootout", "kickstart") and os.geteuid() != 0:
        fail(f"{command} failed: 1: Operation not permitted", 1)
    if command in ("load", "bootstrap"):
        for plist in [r for r in rest if r != "system"]:
            try:
                _load(plist)
            except (OSError, KeyError, ValueError) as e:  # ValueError: not a plist
                fail(f"Load failed: 5: Input/output error ({e})", 5)
    elif command in ("unload", "bootout"):
        for target in [r for r in rest if r != "system"]:
            try:
                label = _label_of(target)
            except OSError:
                fail("Unload failed: 2: No such file or directory", 2)
            if not _stop(label):
                fail(f"Boot-out failed: {UNKNOWN_SERVICE}: Could not find specified service", UNKNOWN_SERVICE)
    elif command == "kickstart":
        label = _label_of(rest[-1])
        job = _job(label)
        if job is None:
            fail(f"Could not find service \"{label}\" in domain for port", UNKNOWN_SERVICE)
        _stop(label)
        _load(job["plist"])
    elif command == "list":
        labels = sorted(n[:-5] for n in os.listdir(LAUNCHD) if n.endswith(".json"))
        if rest:
            label = rest[0]
            job = _job(label)
            if job is None:
                fail(f"Could not find service \"{label}\" in domain for port", UNKNOWN_SERVICE)
            pid = _running_pid(job)
            print("{")
            print('\t"LimitLoadToSessionType" = "System";')
            print(f'\t"Label" = "{label}";')
            print('\t"OnDemand" = false;')
            print(f'\t"LastExitStatus" = {_last_exit(label)};')
            if pid:
                print(f'\t"PID" = {pid};')
            print(f'\t"Program" = "{job["program"]}";')
            print("};")
            return
        print("PID\tStatus\tLabel")
        for label in labels:
            pid = _running_pid(_job(label))
            print(f"{pid or '-'}\t{_last_exit(label)}\t{label}")
    elif command == "print":
        label = _label_of(rest[0]) if rest else ""
        job = _job(label)
        if job is None:
            fail(f"Could not find service \"{label}\" in domain for port", UNKNOWN_SERVICE)
        pid = _running_pid(job)
        print(f"system/{label} = {{")
        print("\tactive count = 1" if pid else "\tactive count = 0")
        print(f"\tpath = {job['plist']}")
        print(f"\tstate = {'running' if pid else 'not running'}")
        print(f"\tprogram = {job['program']}")
        if pid:
            print(f"\tpid = {pid}")
        print(f"\tlast exit code = {_last_exit(label) if not pid else '(never exited)'}")
        print("}")
    else:
        fail(f"Unrecognized subcommand: {command}")


# ---- pgrep: find processes by name the way macOS does ----

PGREP_USAGE = ("usage: pgrep [-Lfilnoqvx] [-d delim] [-F pidfile] [-G gid]\n"
               "             [-P ppid] [-U uid] [-g pgrp] [-t tty] [-u euid]\n"
               "             pattern ...")


def _processes() -> list:
    """(pid, ppid, start, euid, ruid, name, args, comm) of every process this Mac sees; NAME is
    what macOS's pgrep matches: argv[0]'s basename, or the kernel's name when argv is empty."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(") ", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().rstrip(b"\0").split(b"\0")]
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().rstrip("\n")
            with open(f"/proc/{entry}/status") as f:
                uids = next(line for line in f if line.startswith("Uid:")).split()
        except (OSError, StopIteration, IndexError):
            continue  # gone meanwhile
        name = os.path.basename(argv[0]) or comm
        found.append((int(entry), int(fields[1]), int(fields[19]), int(uids[2]), int(uids[1]), name,
                      " ".join(argv) or comm, comm))
    return found


def _ids(text: str) -> set:
    import pwd

    ids = set()
    for item in text.split(","):
        try:
            ids.add(int(item) if item.isdigit() else pwd.getpwnam(item).pw_uid)
        except KeyError:
            fail(f"pgrep: Unknown user `{item}'", 2)
    return ids


def pgrep(args: list) -> None:
    """pgrep [-afilnoqvx] [-d delim] [-P ppid] [-U uid] [-u euid] pattern ...: pids, one a line."""
    import getopt
    import re

    try:
        opts, patterns = getopt.getopt(args, "F:G:Lad:fg:ilnoqt:vxP:U:u:")
    except getopt.GetoptError:
        fail(PGREP_USAGE, 2)
    flags, lists, delim = {o[1] for o, _ in opts if o[1] in "afilnoqvx"}, {}, "\n"
    for opt, value in opts:
        if opt in ("-F", "-G", "-L", "-g", "-t"):
            fail(f"pgrep: {opt} is not simulated on this Mac", 3)
        if opt == "-d":
            delim = value
        elif opt in ("-P", "-U", "-u"):
            lists[opt] = {int(v) for v in value.split(",") if v.isdigit()} if opt == "-P" else _ids(value)
    if not patterns and not lists and not flags & {"n", "o"}:
        fail(PGREP_USAGE, 2)
    if {"n", "o"} <= flags:
        fail("pgrep: Options -n and -o are mutually exclusive", 3)
    try:
        regexes = [re.compile(p, re.I if "i" in flags else 0) for p in patterns]
    except re.error as e:
        fail(f"pgrep: Cannot compile regular expression `{patterns[0]}' ({e})", 2)
    procs = _processes()
    selected = set()
    for pid, ppid, _, euid, ruid, name, full, _ in procs:
        text = full if "f" in flags else name
        if patterns and not any((r.fullmatch if "x" in flags else r.search)(text) for r in regexes):
            continue
        if all(key not in lists or value in lists[key] for key, value in (("-P", ppid), ("-u", euid), ("-U", ruid))):
            selected.add(pid)
    if "a" not in flags:  # pgrep and its ancestors are never in the list
        parents, pid = {p[0]: p[1] for p in procs}, os.getpid()
        for _ in range(len(parents) + 1):
            selected.discard(pid)
            pid = parents.get(pid, 0)
    if flags & {"n", "o"} and selected:
        starts = sorted((p[2], p[0]) for p in procs if p[0] in selected)
        selected = {starts[-1][1] if "n" in flags else starts[0][1]}
    shown = sorted(p for p in procs if (p[0] in selected) != ("v" in flags))
    if shown and "q" not in flags:  # -l: the kernel's name, or with -f the whole command line
        print(delim.join(f"{p[0]} {p[6] if 'f' in flags else p[7]}" if "l" in flags else str(p[0]) for p in shown))
    sys.exit(0 if shown else 1)
