#!/usr/bin/python3 -S
"""macOS commands on a simulated Mac: one file, dispatched on the name it was run as.

Outputs match ../../shared/spec/qualys-macos-agent.md byte for byte where it quotes them.
Per-host facts come from /private/var/fleetlab/host.json (written by the lab); every
invocation is counted in /private/var/fleetlab/counts/<command> so tests can assert on it.
Stdlib only: this runs with the Mac's /usr/bin/python3.
"""
import fcntl
import json
import os
import sys

# Heavier modules are imported inside the commands that need them: every shim call pays
# Python's start-up, and fleetctl's checks call several of them per Mac.

LAB = "/private/var/fleetlab"
RECEIPTS = "/private/var/db/receipts"
LAUNCHD = LAB + "/launchd"
DARWIN = {"12": "21.6.0", "13": "22.6.0", "14": "23.5.0", "15": "24.1.0"}
UNKNOWN_SERVICE = 113


def facts() -> dict:
    with open(LAB + "/host.json") as f:
        return json.load(f)


def count(name: str) -> None:
    """Add one to this command's invocation counter (atomic under concurrent calls)."""
    fd = os.open(f"{LAB}/counts/{name}", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        n = int(os.read(fd, 32) or b"0")
        os.lseek(fd, 0, 0)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % (n + 1))
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o666)
    finally:
        os.close(fd)


def fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


# ---- sw_vers, uname, sysctl, df, system_profiler: read-only facts ----

def sw_vers(args: list) -> None:
    f = facts()
    values = {"-productName": "macOS", "-productVersion": f["product_version"], "-buildVersion": f["build_version"]}
    if args:
        if args[0] not in values:
            fail("Usage: sw_vers [-productName|-productVersion|-buildVersion]")
        print(values[args[0]])
        return
    print(f"ProductName:\t\tmacOS\nProductVersion:\t\t{f['product_version']}\nBuildVersion:\t\t{f['build_version']}")


def uname(args: list) -> None:
    f = facts()
    release = DARWIN[f["product_version"].split(".")[0]]
    machine = f["arch"]
    kernel = "RELEASE_ARM64_T6000" if machine == "arm64" else "RELEASE_X86_64"
    fields = {
        "s": "Darwin", "n": f["name"], "r": release,
        "v": f"Darwin Kernel Version {release}: Tue Oct 22 2024; root:xnu-11215.41.3~2/{kernel}",
        "m": machine, "p": "arm" if machine == "arm64" else "i386",
    }
    flags = "".join(a.lstrip("-") for a in args) or "s"
    if "a" in flags:
        flags = "snrvm"
    if any(c not in fields for c in flags):
        fail("usage: uname [-amnprsv]")
    print(" ".join(fields[c] for c in "snrvmp" if c in flags))


def sysctl(args: list) -> None:
    f = facts()
    oids = {
        "hw.memsize": str(f["memsize"]),
        "hw.ncpu": "8",
        "hw.model": "Mac14,5" if f["arch"] == "arm64" else "MacBookPro16,1",
        "kern.osproductversion": f["product_version"],
        "kern.hostname": f["name"],
    }
    if f["arch"] == "arm64":
        oids["hw.optional.arm64"] = "1"
    names_only = "-n" in args
    rc = 0
    for name in [a for a in args if not a.startswith("-")]:
        if name not in oids:
            print(f"sysctl: unknown oid '{name}'", file=sys.stderr)
            rc = 1
            continue
        print(oids[name] if names_only else f"{name}: {oids[name]}")
    sys.exit(rc)


def df(args: list) -> None:
    f = facts()
    total, free = f["disk_total_kb"], f["disk_free_kb"]
    used = total - free - 300000000 if total - free > 300000000 else total // 50
    capacity = round(100 * used / (used + free))
    print("Filesystem     1024-blocks      Used Available Capacity iused     ifree %iused  Mounted on")
    print(f"/dev/disk3s1s1 {total:>11} {used:>9} {free:>9} {capacity:>7}%  404167 {free * 10:>9}    0%   /")


def system_profiler(args: list) -> None:
    import uuid

    f = facts()
    hw_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f["name"] + ".fleetlab")).upper()
    chip = "Chip: Apple M2 Pro" if f["arch"] == "arm64" else "Processor Name: 8-Core Intel Core i9"
    memory = f"{f['memsize'] >> 30} GB" if f["memsize"] >= 1 << 30 else f"{f['memsize'] >> 20} MB"
    release = DARWIN[f["product_version"].split(".")[0]]
    sections = {
        "SPHardwareDataType": ["Hardware:", "", "    Hardware Overview:", "",
                               "      Model Name: MacBook Pro", f"      {chip}", f"      Memory: {memory}",
                               f"      Serial Number (system): FLAB{f['name'][-3:]}X0",
                               f"      Hardware UUID: {hw_uuid}", ""],
        "SPSoftwareDataType": ["Software:", "", "    System Software Overview:", "",
                               f"      System Version: macOS {f['product_version']} ({f['build_version']})",
                               f"      Kernel Version: Darwin {release}", f"      Computer Name: {f['name']}", ""],
    }
    wanted = [a for a in args if a in sections] or list(sections)
    for name in wanted:
        print("\n".join(sections[name]))


def dscl(args: list) -> None:
    """Only `dscl . -read /Groups/NAME [key]` and `/Users/NAME`, answered from /etc/group and /etc/passwd."""
    import grp
    import pwd

    if len(args) < 3 or args[0] != "." or args[1] != "-read":
        fail("Usage: dscl . -read /Groups/<name> | /Users/<name> [key]")
    kind, _, name = args[2].strip("/").partition("/")
    try:
        if kind == "Groups":
            g = grp.getgrnam(name)
            record = {"RecordName": name, "PrimaryGroupID": str(g.gr_gid), "GroupMembership": " ".join(g.gr_mem)}
        elif kind == "Users":
            u = pwd.getpwnam(name)
            record = {"RecordName": name, "UniqueID": str(u.pw_uid), "PrimaryGroupID": str(u.pw_gid),
                      "NFSHomeDirectory": u.pw_dir, "UserShell": u.pw_shell}
        else:
            raise KeyError(kind)
    except KeyError:
        fail("<dscl_cmd> DS Error: -14136 (eDSRecordNotFound)", 56)
    for key in args[3:] or list(record):
        if key in record:
            print(f"{key}: {record[key]}")


# ---- pkgutil and installer: receipts and packages ----

def receipt(pkg_id: str):
    import plistlib

    try:
        with open(f"{RECEIPTS}/{pkg_id}.plist", "rb") as f:
            return plistlib.load(f)
    except (OSError, plistlib.InvalidFileException):
        return None


def pkgutil(args: list) -> None:
    if args[:1] == ["--pkgs"]:
        for name in sorted(os.listdir(RECEIPTS)):
            if name.endswith(".plist"):
                print(name[:-6])
        return
    if len(args) != 2 or args[0] not in ("--pkg-info", "--files", "--forget"):
        fail("Usage: pkgutil [--pkgs | --pkg-info ID | --files ID | --forget ID]")
    option, pkg_id = args
    r = receipt(pkg_id)
    if r is None:
        fail(f"No receipt for '{pkg_id}' found at '/'.")
    if option == "--pkg-info":
        print(f"package-id: {pkg_id}\nversion: {r['PackageVersion']}\nvolume: /\nlocation: /\n"
              f"install-time: {r['InstallDate']}")
    elif option == "--files":
        with open(f"{RECEIPTS}/{pkg_id}.files") as f:
            sys.stdout.write(f.read())
    else:
        if os.geteuid() != 0:
            fail(f"Forgetting package '{pkg_id}' requires root")
        for ext in (".plist", ".files"):
            try:
                os.unlink(f"{RECEIPTS}/{pkg_id}{ext}")
            except FileNotFoundError:
                pass
        print(f"Forgot package '{pkg_id}' on '/'.")


def _replace_bundles(payload: bytes, target: str) -> None:
    """An app bundle is installed whole, as macOS's installer upgrades it: whatever else lay
    inside the old bundle (a CA bundle an admin put there) is gone afterwards."""
    import io
    import shutil

    import cpio

    bundles = set()
    for name, _mode, _data in cpio.read(io.BytesIO(payload)):
        parts = os.path.normpath(name.lstrip("./")).split("/")
        for i, part in enumerate(parts[:-1]):
            if part.endswith(".app"):
                bundles.add("/".join(parts[: i + 1]))
                break
    for bundle in bundles:
        shutil.rmtree(os.path.join(target, bundle), ignore_errors=True)


def installer(args: list) -> None:
    import gzip
    import io
    import plistlib
    import subprocess
    import tempfile
    import time

    import cpio  # copied beside this file by the lab
    import xar

    opts, i = {}, 0
    while i < len(args):
        if args[i] in ("-pkg", "-target", "-package", "-tgt") and i + 1 < len(args):
            opts[args[i].replace("-package", "-pkg").replace("-tgt", "-target")] = args[i + 1]
            i += 2
        elif args[i] in ("-verbose", "-verboseR", "-dumplog", "-allowUntrusted"):
            i += 1
        else:
            fail(f"installer: unknown option {args[i]}\nUsage: installer -pkg <pathToPackage> -target <device>")
    if "-pkg" not in opts or "-target" not in opts:
        fail("Usage: installer -pkg <pathToPackage> -target <device>")
    if os.geteuid() != 0:
        fail("installer: Must be run as root to install this package.")
    path = opts["-pkg"]
    try:
        f = open(path, "rb")
        reader = xar.Reader(f)
        dist = reader.read("Distribution").decode()
        info = next(p for p in reader.members if p.endswith("PackageInfo"))
        info_xml = reader.read(info).decode()
    except (OSError, ValueError, StopIteration):
        fail(f"installer: Error - the package path specified was invalid: '{path}'.")
    from xml.etree import ElementTree as ET

    title = ET.fromstring(dist).findtext("title") or "package"
    archs = (ET.fromstring(dist).find("options").get("hostArchitectures") or "").split(",")
    pkg_info = ET.fromstring(info_xml)
    print(f"installer: Package name is {title}")
    print("installer: Installing at base path /")
    host = facts()
    if host["arch"] not in archs:
        fail(f"installer: The install failed. (This package is for {', '.join(archs)} Macs; "
             f"this Mac is {host['arch']}.)")
    if "installer-fails" in host["traits"]:
        fail("installer: The install failed. (The Installer encountered an error that caused the installation "
             "to fail. Contact the software manufacturer for assistance.)")
    base = os.path.dirname(info)
    payload = gzip.decompress(reader.read(f"{base}/Payload" if base else "Payload"))
    _replace_bundles(payload, opts["-target"])
    installed = cpio.extract(io.BytesIO(payload), opts["-target"])
    pkg_id, version = pkg_info.get("identifier"), pkg_info.get("version")
    with open(f"{RECEIPTS}/{pkg_id}.files", "w") as out:
        out.write("".join(p + "\n" for p in installed))
    with open(f"{RECEIPTS}/{pkg_id}.plist", "wb") as out:
        plistlib.dump({"PackageIdentifier": pkg_id, "PackageVersion": version, "InstallDate": int(time.time()),
                       "InstallPrefixPath": "/", "PackageFileName": os.path.basename(path)}, out)
    scripts_name = f"{base}/Scripts" if base else "Scripts"
    if scripts_name in reader.members:
        with tempfile.TemporaryDirectory() as tmp:
            cpio.extract(io.BytesIO(gzip.decompress(reader.read(scripts_name))), tmp)
            script = os.path.join(tmp, "postinstall")
            if os.path.exists(script):
                done = subprocess.run([script, path, "/", "/", "/"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
                if done.returncode != 0:
                    fail("installer: The install failed. (An error occurred while running scripts from the "
                         f"package \u201c{os.path.basename(path)}\u201d.)")
    print("installer: The install was successful.")


# ---- launchctl: a tiny launchd for system daemons ----

def _job(label: str):
    try:
        with open(f"{LAUNCHD}/{label}.json") as f:
            return json.load(f)
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


# ---- log: `log show` over the simulated unified log ----

UNIFIED_LOG = LAB + "/unified-log/store.jsonl"  # written by the agent (agent/qagent.py), root only
LOG_USAGE = """usage:
    log <command>

global options:
    -?, --help
    -q, --quiet
    -v, --verbose

commands:
    collect         gather system logs into a log archive
    config          view/change logging system settings
    erase           delete system logging data
    show            view/search system logs
    stream          watch live system logs
    stats           show system logging statistics

further help:
    log help <command>
    log help predicates"""
SHOW_USAGE = """usage:
    log show [options] <archive>
    log show [options]

description:
    Shows contents of the system log datastore, archive or a specific tracev3 file.

options:
    --style <style>                Output the content as a different style: default, syslog, json, ndjson
    --info                         Show info level messages
    --debug                        Show debug level messages
    --predicate <predicate>        Filter messages using the provided predicate
    --start <date>                 Display events from the given date: "YYYY-MM-DD [HH:MM:SS]"
    --last <num>[m|h|d]            Display events from the recent past"""
EX_USAGE = 64
STYLES = ("default", "syslog", "json", "ndjson")
PREDICATE_KEYS = {"process", "processImagePath", "processID", "subsystem", "category", "eventMessage", "messageType"}


def message_type(priority: int) -> str:
    """How macOS files a syslog(3) priority in the unified log."""
    if priority <= 2:
        return "Fault"
    return {3: "Error", 4: "Default", 5: "Default", 6: "Info"}.get(priority, "Debug")


def parse_show_args(args: list) -> dict:
    """Options of `log show`; ValueError (with the message to print) on anything else."""
    opts = {"style": "default", "info": False, "debug": False, "predicate": None, "start": None, "last": None}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--info", "--debug"):
            opts[arg[2:]] = True
        elif arg in ("--style", "--predicate", "--start", "--last") and i + 1 < len(args):
            opts[arg[2:]] = args[i + 1]
            i += 1
        else:
            raise ValueError(f"log: unrecognized option `{arg}'\n{SHOW_USAGE}")
        i += 1
    if opts["style"] not in STYLES:
        raise ValueError(f"log: invalid style `{opts['style']}'\n{SHOW_USAGE}")
    return opts


def since(opts: dict, now: float):
    """The earliest time to show, from --start or --last; None for everything."""
    import re
    import time

    if opts["start"] is not None:
        for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
            try:
                return time.mktime(time.strptime(opts["start"], form))
            except ValueError:
                pass
        raise ValueError(f"log: invalid start date `{opts['start']}'\n{SHOW_USAGE}")
    if opts["last"] is not None:
        m = re.fullmatch(r"(\d+)([smhd]?)", opts["last"])
        if not m:
            raise ValueError(f"log: invalid time `{opts['last']}'\n{SHOW_USAGE}")
        return now - int(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
    return None


def parse_predicate(text: str) -> list:
    """`key == "value"`, `key != "value"`, `key CONTAINS[c] "value"`, joined by AND or &&."""
    import re

    clause = re.compile(r'\s*(\w+)\s*(==|!=|CONTAINS\[c\]|CONTAINS|BEGINSWITH)\s*(?:"([^"]*)"|\'([^\']*)\'|(\d+))\s*',
                        re.I)
    clauses = []
    for part in re.split(r"\s+(?:AND|&&)\s+", text.strip(), flags=re.I):
        m = clause.fullmatch(part)
        if not m or m[1] not in PREDICATE_KEYS:
            raise ValueError(f"log: Cannot use predicate '{text}': unsupported or malformed")
        value = next(v for v in (m[3], m[4], m[5]) if v is not None)
        clauses.append((m[1], m[2].upper(), value))
    return clauses


def matches(event: dict, clauses: list) -> bool:
    for key, op, value in clauses:
        have = str(event.get(key, ""))
        if op == "==" and have != value or op == "!=" and have == value:
            return False
        if op == "CONTAINS" and value not in have or op == "CONTAINS[C]" and value.lower() not in have.lower():
            return False
        if op == "BEGINSWITH" and not have.startswith(value):
            return False
    return True


def event(record: dict) -> dict:
    """One stored record as macOS's ndjson shows a log event (same keys, same order)."""
    import datetime
    import uuid

    image_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, record["image"])).upper()
    stamp = datetime.datetime.fromtimestamp(record["time"]).astimezone()
    return {
        "traceID": int(record["time"] * 1e6) & 0xFFFFFFFFFFFF, "eventMessage": record["message"],
        "eventType": "logEvent", "source": None, "formatString": "%{public}s", "activityIdentifier": 0,
        "subsystem": "", "category": "", "threadID": record["tid"] & 0xFFFFFFF, "senderImageUUID": image_uuid,
        "backtrace": {"frames": []}, "bootUUID": "", "processImagePath": record["image"],
        "timestamp": stamp.strftime("%Y-%m-%d %H:%M:%S.%f%z"), "senderImagePath": "/usr/lib/system/libsystem_c.dylib",
        "machTimestamp": int(record["time"] * 1e9), "messageType": message_type(record["priority"]),
        "processImageUUID": image_uuid, "processID": record["pid"], "senderProgramCounter": 0,
        "parentActivityIdentifier": 0, "timezoneName": "", "process": record["process"],
    }


def stored_records() -> list:
    """Every record in the store; nothing for a non-root caller (the records are private)."""
    if os.geteuid() != 0:
        return []
    try:
        with open(UNIFIED_LOG) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def select_events(opts: dict, records: list, now: float) -> list:
    start = since(opts, now)
    clauses = parse_predicate(opts["predicate"]) if opts["predicate"] else []
    shown = {"Default", "Error", "Fault"} | ({"Info"} if opts["info"] else set()) | ({"Debug"} if opts["debug"] else set())
    events = [event(r) for r in records if start is None or r["time"] >= start]
    return [e for e in events if e["messageType"] in shown and matches(e, clauses)]


def _skipping(opts: dict) -> str:
    if opts["info"] and opts["debug"]:
        return ""
    if opts["info"]:
        return "Skipping debug messages, pass --debug to include.\n"
    if opts["debug"]:
        return "Skipping info messages, pass --info to include.\n"
    return "Skipping info and debug messages, pass --info and/or --debug to include.\n"


def render(opts: dict, events: list) -> str:
    """The text `log show` prints in the chosen style."""
    public = [{k: v for k, v in e.items() if k != "process"} for e in events]
    if opts["style"] == "ndjson":
        compact = {"separators": (",", ":")}  # as macOS prints it
        return "".join(json.dumps(e, **compact) + "\n" for e in public) + \
            json.dumps({"count": len(events), "finished": 1}, **compact) + "\n"
    if opts["style"] == "json":
        return json.dumps(public, indent=2) + "\n"
    out = f'Filtering the log data using "{opts["predicate"]}"\n' if opts["predicate"] else ""
    out += _skipping(opts)
    if opts["style"] == "syslog":
        out += "Timestamp                       (process)[PID]    \n"
        for e in events:
            out += f"{e['timestamp']}  localhost {e['process']}[{e['processID']}]: {e['eventMessage']}\n"
        return out
    out += "Timestamp                       Thread     Type        Activity             PID    TTL  \n"
    for e in events:
        out += (f"{e['timestamp']} {hex(e['threadID']):<10} {e['messageType']:<11} 0x0                  "
                f"{e['processID']:<6} 0    {e['process']}: {e['eventMessage']}\n")
    kinds = {t: sum(e["messageType"] == t for e in events) for t in ("Default", "Info", "Debug", "Error", "Fault")}
    out += "-" * 116 + "\n"
    out += (f"Log      - Default: {kinds['Default']:>10}, Info: {kinds['Info']:>16}, Debug: {kinds['Debug']:>13}, "
            f"Error: {kinds['Error']:>10}, Fault: {kinds['Fault']:>10}\n")
    out += f"Activity - Create: {0:>11}, Transition: {0:>10}, Actions: {0:>11}\n"
    return out


def log_cmd(args: list) -> None:
    """`log show ...` like macOS; every other subcommand or option is a usage error (exit 64)."""
    import time

    if not args or args[0] != "show":
        fail(f"log: unrecognized command `{args[0]}'\n{LOG_USAGE}" if args else LOG_USAGE, EX_USAGE)
    try:
        opts = parse_show_args(args[1:])
        events = select_events(opts, stored_records(), time.time())
    except ValueError as e:
        fail(str(e), EX_USAGE)
    sys.stdout.write(render(opts, events))


# ---- fleetlab-session: the drop-mid-transfer persona's ForceCommand ----

DROP_AFTER_BYTES = 1 << 20


def fleetlab_session(args: list) -> None:
    """Run the client's command, but kill the SSH session once it has sent 1 MiB of input."""
    import signal
    import subprocess

    command = os.environ.get("SSH_ORIGINAL_COMMAND")
    argv = ["/bin/bash", "-c", command] if command else ["/bin/bash", "-l"]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE)
    sent = 0
    while chunk := os.read(0, 65536):
        sent += len(chunk)
        if sent > DROP_AFTER_BYTES:
            child.kill()
            os.kill(os.getppid(), signal.SIGKILL)  # the user's sshd session: the connection dies
            sys.exit(255)
        try:
            child.stdin.write(chunk)
            child.stdin.flush()
        except BrokenPipeError:
            break
    child.stdin.close()
    sys.exit(child.wait())


COMMANDS = {
    "sw_vers": sw_vers, "uname": uname, "sysctl": sysctl, "df": df, "system_profiler": system_profiler,
    "pkgutil": pkgutil, "installer": installer, "dscl": dscl, "launchctl": launchctl, "log": log_cmd,
    "fleetlab-session": fleetlab_session,
}

def main() -> None:
    name = os.path.basename(sys.argv[0])
    count(name)
    try:
        COMMANDS[name](sys.argv[1:])
    except BrokenPipeError:
        sys.exit(141)


if __name__ == "__main__":
    main()
