"""What an agent package is (id, version, architectures), read on the controller.

Vendor file names vary and lie; the package's own Distribution and PackageInfo don't.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from fleetctl import xar
from fleetctl.errors import UsageError

AGENT_PACKAGE_ID = "com.qualys.cloud-agent"


@dataclass(frozen=True)
class PackageInfo:
    path: Path
    identifier: str
    version: str
    architectures: tuple[str, ...]  # empty when the package does not say
    size: int


def inspect(path: Path) -> PackageInfo:
    """Read id, version and host architectures from a flat package, or explain why not."""
    try:
        with open(path, "rb") as f:
            reader = xar.Reader(f)
            info_path = next(
                (p for p in reader.members if p == "PackageInfo" or p.endswith(".pkg/PackageInfo")), None
            )
            if info_path is None:
                raise xar.XarError("package has no PackageInfo")
            info = ET.fromstring(reader.read(info_path))
            archs: tuple[str, ...] = ()
            if "Distribution" in reader.members:
                options = ET.fromstring(reader.read("Distribution")).find("options")
                if options is not None and options.get("hostArchitectures"):
                    archs = tuple(a.strip() for a in options.get("hostArchitectures", "").split(","))
    except OSError as e:
        raise UsageError(f"{path}: cannot read package: {e.strerror}") from None
    except (xar.XarError, ET.ParseError) as e:
        raise UsageError(f"{path}: not a valid macOS flat package: {e}") from None
    return PackageInfo(path, info.get("identifier", ""), info.get("version", ""), archs, path.stat().st_size)


def sha256(path: Path) -> str:
    """Digest of a package, computed once per run and compared on every Mac."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
