"""Read and write xar archives, the container of Apple flat packages (.pkg).

Stdlib only: the lab copies this file onto simulated Macs for their `installer`.
Layout: a 28-byte header, a zlib-compressed XML table of contents, then a heap that
starts with the TOC's sha1 and holds every file's bytes at the offset the TOC names.
"""
from __future__ import annotations

import bz2
import hashlib
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO
from xml.etree import ElementTree as ET

MAGIC = b"xar!"
HEADER = struct.Struct(">4sHHQQI")  # magic, header size, version, toc sizes, checksum algo
SHA1 = 1


class XarError(ValueError):
    """The file is not a readable xar archive."""


@dataclass(frozen=True)
class Member:
    path: str
    offset: int  # from the start of the heap
    size: int  # archived size
    encoding: str


def write(out: BinaryIO, files: list[tuple[str, bytes]]) -> None:
    """Write FILES (slash-separated path, bytes) stored uncompressed; parent dirs are implied."""
    root = ET.Element("xar")
    toc = ET.SubElement(root, "toc")
    checksum = ET.SubElement(toc, "checksum", style="sha1")
    ET.SubElement(checksum, "offset").text = "0"
    ET.SubElement(checksum, "size").text = "20"
    dirs: dict[str, ET.Element] = {"": toc}
    next_id = 1
    offset = 20
    for path, data in files:
        parent = ""
        for part in path.split("/")[:-1]:
            key = f"{parent}/{part}" if parent else part
            if key not in dirs:
                node = ET.SubElement(dirs[parent], "file", id=str(next_id))
                next_id += 1
                ET.SubElement(node, "name").text = part
                ET.SubElement(node, "type").text = "directory"
                dirs[key] = node
            parent = key
        node = ET.SubElement(dirs[parent], "file", id=str(next_id))
        next_id += 1
        ET.SubElement(node, "name").text = path.split("/")[-1]
        ET.SubElement(node, "type").text = "file"
        digest = hashlib.sha1(data).hexdigest()
        d = ET.SubElement(node, "data")
        ET.SubElement(d, "length").text = str(len(data))
        ET.SubElement(d, "offset").text = str(offset)
        ET.SubElement(d, "size").text = str(len(data))
        ET.SubElement(d, "encoding", style="application/octet-stream")
        ET.SubElement(d, "extracted-checksum", style="sha1").text = digest
        ET.SubElement(d, "archived-checksum", style="sha1").text = digest
        offset += len(data)
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)
    packed = zlib.compress(xml)
    out.write(HEADER.pack(MAGIC, HEADER.size, 1, len(packed), len(xml), SHA1))
    out.write(packed)
    out.write(hashlib.sha1(packed).digest())
    for _, data in files:
        out.write(data)


class Reader:
    """Random access to members of an open xar file, without reading the heap up front."""

    def __init__(self, f: BinaryIO):
        self.f = f
        raw = f.read(HEADER.size)
        if len(raw) < HEADER.size:
            raise XarError("file too short to be a package")
        magic, header_size, _version, packed_len, xml_len, _algo = HEADER.unpack(raw)
        if magic != MAGIC:
            raise XarError("not a flat package (no xar header)")
        f.seek(header_size)
        try:
            xml = zlib.decompress(f.read(packed_len))
            root = ET.fromstring(xml)
        except (zlib.error, ET.ParseError) as e:
            raise XarError(f"damaged table of contents: {e}") from None
        if len(xml) != xml_len:
            raise XarError("damaged table of contents: wrong length")
        self.heap_start = header_size + packed_len
        self.members: dict[str, Member] = {}
        toc = root.find("toc")
        if toc is None:
            raise XarError("table of contents has no <toc>")
        self._walk(toc, "")

    def _walk(self, node: ET.Element, prefix: str) -> None:
        for child in node.findall("file"):
            path = prefix + (child.findtext("name") or "")
            data = child.find("data")
            if data is not None:
                enc = data.find("encoding")
                self.members[path] = Member(
                    path,
                    int(data.findtext("offset") or 0),
                    int(data.findtext("size") or 0),
                    enc.get("style", "") if enc is not None else "",
                )
            self._walk(child, path + "/")

    def read(self, path: str) -> bytes:
        m = self.members.get(path)
        if m is None:
            raise XarError(f"package has no {path}")
        self.f.seek(self.heap_start + m.offset)
        raw = self.f.read(m.size)
        if m.encoding == "application/x-gzip":
            return zlib.decompress(raw)
        if m.encoding == "application/x-bzip2":
            return bz2.decompress(raw)
        return raw
