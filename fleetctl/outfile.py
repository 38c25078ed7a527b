"""Where a report, status or export goes: stdout for '-' (or no path), else a file written
atomically, so a reader never sees half of one."""
from __future__ import annotations

import sys
from pathlib import Path


def write(path: Path | None, data: str | bytes, mode: int | None = None) -> bool:
    """Write DATA; True when it went to a file (with MODE, if given), False for stdout."""
    raw = data.encode() if isinstance(data, str) else data
    if path is None or str(path) == "-":
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(raw)
    if mode is not None:
        tmp.chmod(mode)
    tmp.replace(path)
    return True
