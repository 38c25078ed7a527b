#!/usr/bin/python3 -S
"""macOS commands on a simulated Mac: one entry point, dispatched on the name it was run as.

Outputs match ../../shared/spec/qualys-macos-agent.md byte for byte where it quotes them.
Per-host facts come from /private/var/fleetlab/host.json (written by the lab); every
invocation is counted in /private/var/fleetlab/counts/<command> so tests can assert on it.
launchctl lives in launchd.py, `log show` in logshow.py, ioreg and the hardware overview in
hardware.py, ifconfig and networksetup in netports.py; what every command shares (host facts,
the counter, fail) in shimcommon.py. The lab copies them all, with xar.py and cpio.py, into
/usr/local/bin/.lib on every Mac. Stdlib only: this runs with the Mac's /usr/bin/python3.
"""
import os
import sys

import launchd
import logshow
from shimcommon import count, facts, fail, read_plist

# Heavier modules are imported inside the commands that need them: every shim call pays
# Python's start-up, and fleetctl's checks call several of them per Mac (json and plistlib
# too: shimcommon reads host facts, launchd jobs and receipts without them).

RECEIPTS = "/private/var/db/receipts"
DARWIN = {"12": "21.6.0", "13": "22.6.0", "14": "23.5.0", "15": "24.1.0"}


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
    if "rsr-extra" in f["traits"]:  # a Rapid Security Response: one tab, as the guide quotes it
        print("ProductVersionExtra:\t(a)")


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
    import hardware

    f = facts()
    oids = {
        "hw.memsize": str(f["memsize"]),
        "hw.ncpu": str(hardware.model(f)["ncpu"]),
        "hw.model": hardware.model(f)["id"],
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
    import hardware

    f = facts()
    release = DARWIN[f["product_version"].split(".")[0]]
    sections = {
        "SPHardwareDataType": hardware.hardware_overview(f),
        "SPSoftwareDataType": ["Software:", "", "    System Software Overview:", "",
                               f"      System Version: macOS {f['product_version']} ({f['build_version']})",
                               f"      Kernel Version: Darwin {release}", f"      Computer Name: {f['name']}", ""],
    }
    wanted = [a for a in args if a in sections] or list(sections)
    for name in wanted:
        print("\n".join(sections[name]))


# ---- ioreg, ifconfig, networksetup: the Mac's hardware identity (hardware.py, netports.py) ----

def ioreg(args: list) -> None:
    import hardware

    hardware.ioreg(args)


def ifconfig(args: list) -> None:
    import netports

    netports.ifconfig(args)


def networksetup(args: list) -> None:
    import netports

    netports.networksetup(args)


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
    try:
        return read_plist(f"{RECEIPTS}/{pkg_id}.plist")
    except OSError:
        return None
    except Exception as e:
        import plistlib

        if isinstance(e, plistlib.InvalidFileException):
            return None
        raise


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
    "pkgutil": pkgutil, "installer": installer, "dscl": dscl, "launchctl": launchd.launchctl, "log": logshow.log_cmd,
    "fleetlab-session": fleetlab_session, "ioreg": ioreg, "ifconfig": ifconfig, "networksetup": networksetup,
    "pgrep": launchd.pgrep,  # macOS matches argv[0]'s basename; Debian's procps only the 15-byte name
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
