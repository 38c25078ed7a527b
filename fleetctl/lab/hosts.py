"""The files that make a simulated Mac: its private Mac filesystem, accounts, sshd and sudo.

Everything a Mac owns lives under DIR/hosts/<name>/root and is bind-mounted over the
matching path (/Applications, /Library, ...) inside that Mac's own mount namespace.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from fleetctl.lab import identity, network
from fleetctl.lab.personas import MACOS, HostSpec

ADMIN_UID = 501
AGENT_USER_UID = 502  # "qagent": a standard account with no sudo at all, to run the agent as (User=)
STAFF_GID = 20
POD_NAME = "qagpublic.qg1.fleetlab.test"
LAB_CA = "/Library/Keychains/fleetlab-root-ca.pem"
# Mac paths each host gets privately; they must exist (empty) on the real root as mount points.
MAC_PATHS = ["/Applications", "/Library", "/Users", "/private", "/etc/qualys", "/var/log/qualys", "/usr/local/qualys"]
SHIMS = ["installer", "sw_vers", "pkgutil", "launchctl", "sysctl", "uname", "df", "system_profiler", "dscl", "log",
         "fleetlab-session", "ioreg", "ifconfig", "networksetup", "pgrep"]
SHIM_MODULES = ["macshim.py", "shimcommon.py", "launchd.py", "logshow.py", "hardware.py", "netports.py"]
LINUX_IFCONFIG = "/usr/sbin/ifconfig"  # /sbin/ifconfig too (merged /usr): the Mac's own answers there
GIB = 1 << 30
# sshd's own files, at a path inside the Mac: the lab dir itself may be hidden (e.g. under /tmp).
SSHD_DIR = "/private/var/fleetlab/sshd"


def host_dir(lab_dir: Path, spec: HostSpec) -> Path:
    return lab_dir / "hosts" / spec.name


def write_lab_etc(lab_dir: Path, slot: int, specs: list[HostSpec], password_hash: str) -> None:
    """Accounts and names every simulated Mac shares: admin (uid 501), qagent (uid 502, never in
    sudoers), wheel/staff groups, the pod. Admin's sudo rules differ per persona (_sudoers)."""
    etc = lab_dir / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    passwd = [
        line.replace(":/root:", ":/private/var/root:") if line.startswith("root:") else line
        for line in Path("/etc/passwd").read_text().splitlines()
        if not line.startswith(("admin:", "qagent:"))
    ]
    passwd.append(f"admin:x:{ADMIN_UID}:{STAFF_GID}:Fleet Admin:/Users/admin:/bin/bash")
    passwd.append(f"qagent:x:{AGENT_USER_UID}:{STAFF_GID}:Qualys Agent:/Users/qagent:/bin/bash")
    # macOS names gid 0 wheel and gid 20 staff; listed first so ls and id show Mac names.
    group = ["wheel:x:0:root", f"staff:x:{STAFF_GID}:admin", "admin:x:80:admin"]
    group += [l for l in Path("/etc/group").read_text().splitlines() if not l.startswith(("wheel:", "staff:", "admin:"))]
    shadow = []
    for line in Path("/etc/shadow").read_text().splitlines():
        name, rest = line.split(":", 1)
        if name == "root":  # a locked root ('!') would refuse even key logins without PAM
            rest = "*:" + rest.split(":", 1)[1]
        if name not in ("admin", "qagent"):
            shadow.append(f"{name}:{rest}")
    shadow.append(f"admin:{password_hash}:20000:0:99999:7:::")
    shadow.append("qagent:*:20000:0:99999:7:::")  # no password: sudo can never succeed for it
    hosts = ["127.0.0.1\tlocalhost", f"{network.pod_address(slot)}\t{POD_NAME}"]
    hosts += [f"{network.host_address(slot, s.index)}\t{s.name} {s.name}.local" for s in specs]
    for name, lines, mode in [("passwd", passwd, 0o644), ("group", group, 0o644), ("shadow", shadow, 0o640), ("hosts", hosts, 0o644)]:
        path = etc / name
        path.write_text("\n".join(lines) + "\n")
        path.chmod(mode)


def write_macbin(lab_dir: Path) -> Path:
    """The macOS command shims, bind-mounted over /usr/local/bin on every Mac."""
    macbin = lab_dir / "macbin"
    shutil.rmtree(macbin, ignore_errors=True)
    (macbin / ".lib").mkdir(parents=True)
    lib = macbin / ".lib"
    for package, name in [*(("fleetctl.lab.mac", m) for m in SHIM_MODULES),
                          ("fleetctl", "xar.py"), ("fleetctl", "cpio.py")]:
        (lib / name).write_bytes(resources.files(package).joinpath(name).read_bytes())
    # A tiny launcher imports the precompiled shim modules: compiling them on every
    # call would cost each simulated `sw_vers` more than the command itself.
    launcher = lib / "launch"
    launcher.write_text("#!/usr/bin/python3 -S\nimport sys\nsys.path.insert(0, '/usr/local/bin/.lib')\n"
                        "import macshim\nmacshim.main()\n")
    launcher.chmod(0o755)
    shutil.copy2(os.path.realpath("/bin/date"), lib / "date-real")  # for the clock-skew persona
    shutil.copy2(os.path.realpath("/bin/cat"), lib / "cat-real")  # for the relay-* personas
    subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", str(lib)], check=True, capture_output=True)
    for shim in SHIMS:
        (macbin / shim).symlink_to(".lib/launch")
    macbin.chmod(0o755)
    return macbin


def _authorize(home: Path, uid: int, gid: int, client_pub: str) -> None:
    """HOME/.ssh/authorized_keys with the lab's client key, owned by the account, as ssh-copy-id leaves it."""
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    ssh.chmod(0o700)
    keys = ssh / "authorized_keys"
    keys.write_text(client_pub)
    keys.chmod(0o600)
    for path in (ssh, keys):
        os.chown(path, uid, gid)


def _mkdirs(root: Path) -> None:
    for rel, mode in [
        ("Applications", 0o775), ("Library/Application Support", 0o755), ("Library/LaunchDaemons", 0o755),
        ("Library/Keychains", 0o755), ("Library/Preferences", 0o755), ("Users/admin", 0o755), ("Users/qagent", 0o755),
        ("private/tmp", 0o1777), ("private/var/tmp", 0o1777), ("private/var/root", 0o700),
        ("private/var/db/receipts", 0o755), ("private/var/fleetlab/counts", 0o777),
        ("private/var/fleetlab/launchd", 0o755), ("private/var/fleetlab/unified-log", 0o700),
        ("etc/qualys", 0o755), ("var/log/qualys", 0o755),
        ("usr/local/qualys", 0o755),
    ]:
        path = root / rel
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
    os.chown(root / "Users/admin", ADMIN_UID, STAFF_GID)
    os.chown(root / "Users/qagent", AGENT_USER_UID, STAFF_GID)


def host_facts(spec: HostSpec, lab_ca: str, seed: int = 1) -> dict:
    """What the shims report for this Mac (read from /private/var/fleetlab/host.json): its
    system, and its hardware identity, derived from the lab's SEED and its index."""
    version, build = MACOS[spec.macos]
    ident = identity.derive(seed, spec.index)
    return {
        "name": spec.name,
        "arch": spec.arch,
        "product_version": version,
        "build_version": build,
        "traits": spec.as_list()[2:],
        "memsize": 268435456 if spec.has("lowmem") else 16 * GIB,
        "disk_total_kb": 488245288,
        "disk_free_kb": 81920 if spec.has("lowdisk") else 201326592,
        "lab_ca": lab_ca,
        "laptop": spec.wifi_only,  # a MacBook Pro; wired Macs are Mac minis
        "serial": ident.serial,
        "hardware_uuid": ident.hardware_uuid,
        "provisioning_udid": ident.provisioning_udid,
        "ports": identity.ports(ident, spec.wifi_only),
    }


def _sshd_config(spec: HostSpec, address: str, jump_address: str | None) -> str:
    # A renumbered Mac listens on whatever address DHCP gives it (as macOS's sshd does everywhere).
    lines = [
        f"ListenAddress {'0.0.0.0' if spec.has('renumbered') else address}",
        "Port 22",
        f"HostKey {SSHD_DIR}/ssh_host_ed25519_key",
        f"PidFile {SSHD_DIR}/sshd.pid",
        "UsePAM no",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        f"PermitRootLogin {'prohibit-password' if spec.has('root-login') else 'no'}",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "LogLevel ERROR",
        "MaxStartups 100:30:200",
        "MaxSessions 64",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
    ]
    if spec.has("behind-bastion"):  # logins only from the jump host's address: direct SSH is refused
        lines.append(f"AllowUsers *@{jump_address}")
    if spec.has("drop-mid-transfer"):  # every session's input passes through a byte counter
        lines.append("ForceCommand /usr/local/bin/fleetlab-session")
    return "\n".join(lines) + "\n"


def _sudoers(spec: HostSpec) -> str:
    if spec.has("nosudo"):
        return ""
    if spec.has("sudo-password"):  # no cached credentials: every sudo asks, as fleetctl must expect
        return "Defaults:admin lecture=never, timestamp_timeout=0\nadmin ALL=(ALL) ALL\n"
    return "admin ALL=(ALL) NOPASSWD: ALL\n"


def prepare_host(lab_dir: Path, slot: int, spec: HostSpec, client_pub: str, jump: HostSpec | None,
                 seed: int = 1) -> Path:
    """Write a fresh Mac for SPEC; returns its directory (boot.json says how to start it)."""
    hdir = host_dir(lab_dir, spec)
    shutil.rmtree(hdir, ignore_errors=True)
    root = hdir / "root"
    _mkdirs(root)
    meta = root / "private/var/fleetlab"
    lab_ca = lab_dir / "pod" / "cert.pem"
    shutil.copyfile(lab_ca, root / LAB_CA.lstrip("/"))
    (meta / "host.json").write_text(json.dumps(host_facts(spec, LAB_CA, seed), indent=1))
    # sshd's default, as on a Mac: ~/.ssh/authorized_keys of the account logging in
    for home, uid, gid in (("Users/admin", ADMIN_UID, STAFF_GID), ("private/var/root", 0, 0)):
        _authorize(root / home, uid, gid, client_pub)
    sudoers = hdir / "sudoers.d"
    sudoers.mkdir()
    if text := _sudoers(spec):
        (sudoers / "admin").write_text(text)
        (sudoers / "admin").chmod(0o440)
    sshd = root / SSHD_DIR.lstrip("/")
    sshd.mkdir(mode=0o700)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", spec.name, "-f", str(sshd / "ssh_host_ed25519_key")],
        check=True, capture_output=True,
    )
    jump_address = network.host_address(slot, jump.index) if jump else None
    (sshd / "sshd_config").write_text(_sshd_config(spec, network.host_address(slot, spec.index), jump_address))
    binds = [[str(root / p.lstrip("/")), p] for p in MAC_PATHS]
    binds += [[str(root / "private/tmp"), "/tmp"], [str(sudoers), "/etc/sudoers.d"], [str(lab_dir / "macbin"), "/usr/local/bin"]]
    binds += [[str(lab_dir / "etc" / name), f"/etc/{name}"] for name in ("passwd", "group", "shadow", "hosts")]
    binds += _persona_binds(lab_dir, spec)
    if Path(LINUX_IFCONFIG).exists():  # a script calling /sbin/ifconfig gets the Mac's, not Linux's
        binds.append([str(lab_dir / "macbin" / "ifconfig"), LINUX_IFCONFIG])
    boot = {"binds": binds, "hostname": spec.name, "argv": ["/usr/sbin/sshd", "-D", "-e", "-f", f"{SSHD_DIR}/sshd_config"]}
    (hdir / "boot.json").write_text(json.dumps(boot, indent=1))
    return hdir


SKEWED_DATE = """#!/bin/sh
# persona clock-skew: this Mac's clock runs 10 minutes ahead (GNU date underneath).
exec /usr/local/bin/.lib/date-real -d "@$(( $(/usr/local/bin/.lib/date-real +%s) + 600 ))" "$@"
"""


# The relay-* personas: a neighbour fetches a staged package from this Mac (the relay) with
# `ssh admin@relay` and a forced `command="/bin/cat <dir>/relay-<hex>.pkg"`. Only that one
# form is changed; any other cat (`cat > file` uploads, several files, options) is the real one.
RELAY_DIES = r"""#!/bin/sh
# persona relay-dies: half of a relay-*.pkg, then this SSH session dies (SIGKILL to its sshd).
case $#:$1 in 1:*/relay-*.pkg) [ -f "$1" ] && [ -r "$1" ] || exec /usr/local/bin/.lib/cat-real "$@";; *)
  exec /usr/local/bin/.lib/cat-real "$@";; esac
size=$(wc -c < "$1") && head -c $((size / 2)) "$1" || exit 1
sleep 1  # let sshd pass the half on: the neighbour gets exactly half, then the connection drops
p=$PPID n=0
while [ "$p" -gt 1 ] && [ $n -lt 16 ]; do  # the nearest sshd above: this session's, never pid 1 (the listener)
  read -r comm < /proc/$p/comm || break
  case $comm in sshd*) kill -9 "$p"; exit 137;; esac
  p=$(sed 's/.*) . \([0-9]*\) .*/\1/' /proc/$p/stat) n=$((n + 1))
done
exit 137
"""
RELAY_CORRUPTS = r"""#!/bin/sh
# persona relay-corrupts: a relay-*.pkg whole, but its middle byte flipped (a failing disk, a tampered relay).
case $#:$1 in 1:*/relay-*.pkg) [ -f "$1" ] && [ -r "$1" ] || exec /usr/local/bin/.lib/cat-real "$@";; *)
  exec /usr/local/bin/.lib/cat-real "$@";; esac
size=$(wc -c < "$1") && [ "$size" -gt 0 ] || exec /usr/local/bin/.lib/cat-real "$@"
mid=$((size / 2))
byte=$(od -An -tu1 -j $mid -N1 "$1") || exit 1
{ head -c $mid "$1" && printf "\\$(printf %03o $((byte ^ 255)))" && tail -c +$((mid + 2)) "$1"; } || exit 1
"""


def _extra(lab_dir: Path, name: str, text: str) -> Path:
    path = lab_dir / "macbin-extra" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _persona_binds(lab_dir: Path, spec: HostSpec) -> list[list[str]]:
    """Commands a persona changes for this Mac only: a skewed date, an absent openssl, a relay's cat."""
    binds = []
    for persona, name, text in (("relay-dies", "cat-relay-dies", RELAY_DIES),
                                ("relay-corrupts", "cat-relay-corrupts", RELAY_CORRUPTS)):
        if spec.has(persona):
            binds.append([str(_extra(lab_dir, name, text)), os.path.realpath("/bin/cat")])
    if spec.has("clock-skew"):
        skewed = lab_dir / "macbin-extra" / "date-skewed"
        skewed.parent.mkdir(exist_ok=True)
        skewed.write_text(SKEWED_DATE)
        skewed.chmod(0o755)
        binds.append([str(skewed), os.path.realpath("/bin/date")])
    if spec.has("no-openssl"):  # not executable: `command -v openssl` finds nothing, as on a Mac without it
        empty = lab_dir / "macbin-extra" / "absent"
        empty.parent.mkdir(exist_ok=True)
        empty.write_bytes(b"")
        empty.chmod(0o644)
        binds.append([str(empty), os.path.realpath(shutil.which("openssl") or "/usr/bin/openssl")])
    return binds


def known_hosts_line(lab_dir: Path, slot: int, spec: HostSpec) -> str:
    key = (host_dir(lab_dir, spec) / "root" / SSHD_DIR.lstrip("/") / "ssh_host_ed25519_key.pub").read_text().split()
    return f"{network.host_address(slot, spec.index)} {key[0]} {key[1]}\n"
