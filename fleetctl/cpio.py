"""The portable-ASCII ("odc") cpio format that macOS package payloads use.

Stdlib only: proxy-encrypt reads string-util out of a payload with it, and the lab copies it
onto simulated Macs so their `installer` can unpack payloads.
"""
from __future__ import annotations

import os
from typing import BinaryIO, Iterator

MAGIC = b"070707"
TRAILER = "TRAILER!!!"


def _header(name: str, mode: int, size: int, ino: int, mtime: int) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (0, ino, mode, 0, 0, 1, 0)
    head = MAGIC + b"".join(b"%06o" % v for v in fields)
    return head + b"%011o%06o%011o" % (mtime, len(encoded), size) + encoded


def write(out: BinaryIO, entries: list[tuple[str, int, bytes]], mtime: int = 0) -> None:
    """Write (path, mode, data) entries; mode carries the file type bits (0o100755, 0o040755)."""
    for ino, (name, mode, data) in enumerate(entries, start=1):
        out.write(_header(name, mode, len(data), ino, mtime))
        out.write(data)
    out.write(_header(TRAILER, 0, 0, 0, 0))


def read(f: BinaryIO) -> Iterator[tuple[str, int, bytes]]:
    """Yield (path, mode, data) until the trailer; raise ValueError on a damaged archive."""
    while True:
        head = f.read(76)
        if len(head) != 76 or head[:6] != MAGIC:
            raise ValueError("damaged payload archive")
        mode = int(head[18:24], 8)
        namesize = int(head[59:65], 8)
        size = int(head[65:76], 8)
        name = f.read(namesize)[:-1].decode()
        if name == TRAILER:
            return
        data = f.read(size)
        if len(data) != size:
            raise ValueError("truncated payload archive")
        yield name, mode, data


def extract(f: BinaryIO, target: str) -> list[str]:
    """Unpack into TARGET; return the installed paths (relative, as a receipt lists them)."""
    installed = []
    for name, mode, data in read(f):
        rel = os.path.normpath(name.lstrip("/"))
        if rel == "." or rel.startswith(".."):
            continue
        dest = os.path.join(target, rel)
        if mode & 0o170000 == 0o040000:
            os.makedirs(dest, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = dest + ".installer-tmp"
            with open(tmp, "wb") as out:
                out.write(data)
            os.chmod(tmp, mode & 0o7777)
            os.replace(tmp, dest)
        installed.append(rel)
    return installed
