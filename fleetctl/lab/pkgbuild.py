"""Build fake Qualys agent packages in Apple's flat-package format for the simulated fleet.

The payload is incompressible and as large as the real one, so uploads cost what they
would; its app bundle holds the simulated agent (the modules of agent/, entry point qagent.py)
behind the real script names, and string-util (agent/stringutil.py) as a standalone program: the
guide only says the package includes it, so fleetctl finds it by name (exactly one file called
string-util).
"""
from __future__ import annotations

import gzip
import io
import os
import plistlib
import random
from importlib import resources
from pathlib import Path

from fleetctl import xar
from fleetctl.errors import UsageError
from fleetctl import cpio
from fleetctl.package import AGENT_PACKAGE_ID

ARCHES = ("arm64", "x86_64")
APP = "Applications/QualysCloudAgent.app/Contents"
LEGACY_BIN = "usr/local/qualys/cloud-agent/bin"
LAUNCHD_PLIST = "Library/LaunchDaemons/com.qualys.cloud-agent.plist"
# script name on the Mac -> qagent.py sub-command it runs
TOOLS = {
    "qualys-cloud-agent.sh": "configure",
    "qagent_upgrade.sh": "upgrade",
    "qagent_restart.sh": "restart",
    "qagent_uninstall.sh": "uninstall",
    "cloudagentctl.sh": "ctl",
    "qualys-cloud-agent": "daemon",
}
STRING_UTIL = f"{APP}/MacOS/string-util"
# the agent's modules, side by side in Contents/Resources (qagent.py imports the others;
# proxyfile.py decodes string-util's output with stringutil.py)
AGENT_MODULES = ("qagent.py", "agentcommon.py", "configtool.py", "proxyfile.py", "agentdaemon.py", "agenttools.py",
                 "stringutil.py")
POSTINSTALL = b"""#!/bin/sh
# Reload the daemon so an upgrade runs the new code, as the vendor's package does.
PATH=/usr/local/bin:/usr/bin:/bin
launchctl unload /Library/LaunchDaemons/com.qualys.cloud-agent.plist >/dev/null 2>&1
launchctl load /Library/LaunchDaemons/com.qualys.cloud-agent.plist
"""


def default_name(version: str, arch: str) -> str:
    return f"QualysCloudAgent-{version}-{arch}.pkg"


def _wrapper(command: str) -> bytes:
    """Import (not run) qagent.py, so Python caches the agent's bytecode after the first call."""
    return (
        "#!/bin/sh\n"
        f"exec /usr/bin/python3 -S -c 'import sys; sys.path.insert(0, \"/{APP}/Resources\"); "
        f"import qagent; qagent.main(sys.argv[1:])' {command} \"$@\"\n"
    ).encode()


def _payload(version: str, arch: str, size: int) -> bytes:
    """A gzipped cpio of the app bundle, padded with seeded random bytes up to SIZE."""
    agent_files = resources.files("fleetctl.lab.agent")
    modules = {name: agent_files.joinpath(name).read_bytes() for name in AGENT_MODULES}
    info = plistlib.dumps({
        "CFBundleIdentifier": AGENT_PACKAGE_ID,
        "CFBundleName": "QualysCloudAgent",
        "CFBundleShortVersionString": version,
        "CFBundleVersion": version,
        "LSMinimumSystemVersion": "12.0",
    })
    daemon = plistlib.dumps({
        "Label": AGENT_PACKAGE_ID,
        "ProgramArguments": [f"/{APP}/MacOS/qualys-cloud-agent"],
        "RunAtLoad": True,
        "KeepAlive": True,
    })
    files: list[tuple[str, int, bytes]] = [
        ("./Library/Application Support/QualysCloudAgent/Config", 0o040755, b""),
        ("./Library/Application Support/QualysCloudAgent/Data", 0o040755, b""),
        (f"./{APP}/Config/cert", 0o040755, b""),
        (f"./{APP}/Info.plist", 0o100644, info),
        *[(f"./{APP}/Resources/{name}", 0o100644, data) for name, data in modules.items()],
        (f"./{STRING_UTIL}", 0o100755, modules["stringutil.py"]),
        (f"./{LAUNCHD_PLIST}", 0o100644, daemon),
    ]
    files += [(f"./{APP}/MacOS/{name}", 0o100755, _wrapper(cmd)) for name, cmd in TOOLS.items()]
    if arch == "x86_64":  # older Intel builds also ship the tools under /usr/local/qualys
        files += [(f"./{LEGACY_BIN}/{n}", 0o100755, _wrapper(c)) for n, c in TOOLS.items() if n.endswith(".sh")]
    used = sum(len(d) for _, _, d in files)
    blob = random.Random(f"{version}/{arch}").randbytes(max(size - used, 0))
    files.append((f"./{APP}/Frameworks/libqagent.dylib", 0o100755, blob))
    raw = io.BytesIO()
    cpio.write(raw, files)
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def _scripts() -> bytes:
    raw = io.BytesIO()
    cpio.write(raw, [("./postinstall", 0o100755, POSTINSTALL)])
    return gzip.compress(raw.getvalue(), mtime=0)


def build(out: Path, version: str, arch: str, size_mb: int = 40) -> Path:
    """Write a flat package to OUT atomically; the same arguments give the same bytes."""
    parts = version.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--version {version!r}: agent versions have four numeric parts, e.g. 6.1.0.20")
    if arch not in ARCHES:
        raise UsageError(f"--arch {arch!r}: use arm64 or x86_64")
    if not 1 <= size_mb <= 2048:
        raise UsageError(f"--size-mb {size_mb}: use 1 to 2048")
    payload = _payload(version, arch, size_mb << 20)
    package_info = (
        f'<?xml version="1.0" encoding="utf-8"?>\n'
        f'<pkg-info format-version="2" identifier="{AGENT_PACKAGE_ID}" version="{version}" '
        f'install-location="/" auth="root">\n'
        f'  <payload installKBytes="{(size_mb << 10)}"/>\n'
        f'  <scripts><postinstall file="./postinstall"/></scripts>\n'
        f"</pkg-info>\n"
    ).encode()
    distribution = (
        f'<?xml version="1.0" encoding="utf-8"?>\n'
        f'<installer-gui-script minSpecVersion="2">\n'
        f"  <title>Qualys Cloud Agent</title>\n"
        f'  <options customize="never" hostArchitectures="{arch}"/>\n'
        f'  <choices-outline><line choice="default"/></choices-outline>\n'
        f'  <choice id="default" title="Qualys Cloud Agent"><pkg-ref id="{AGENT_PACKAGE_ID}"/></choice>\n'
        f'  <pkg-ref id="{AGENT_PACKAGE_ID}" version="{version}" onConclusion="none">#QualysCloudAgent.pkg</pkg-ref>\n'
        f"</installer-gui-script>\n"
    ).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        xar.write(f, [
            ("Distribution", distribution),
            ("QualysCloudAgent.pkg/PackageInfo", package_info),
            ("QualysCloudAgent.pkg/Scripts", _scripts()),
            ("QualysCloudAgent.pkg/Payload", payload),
        ])
    os.replace(tmp, out)
    return out
