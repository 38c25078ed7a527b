import io
from pathlib import Path

import pytest

from fleetctl import package, xar
from fleetctl.errors import UsageError
from fleetctl import cpio
from fleetctl.lab import pkgbuild


def test_xar_round_trip_with_nested_paths():
    out = io.BytesIO()
    files = [("Distribution", b"<d/>"), ("A.pkg/PackageInfo", b"<p/>"), ("A.pkg/Payload", bytes(range(256)) * 10)]
    xar.write(out, files)
    out.seek(0)
    reader = xar.Reader(out)
    assert sorted(reader.members) == ["A.pkg/PackageInfo", "A.pkg/Payload", "Distribution"]
    for path, data in files:
        assert reader.read(path) == data


def test_xar_reader_refuses_other_files():
    with pytest.raises(xar.XarError, match="no xar header"):
        xar.Reader(io.BytesIO(b"PK\x03\x04" + b"\0" * 40))
    with pytest.raises(xar.XarError, match="too short"):
        xar.Reader(io.BytesIO(b"xar!"))


def test_cpio_round_trip_and_extract(tmp_path: Path):
    raw = io.BytesIO()
    cpio.write(raw, [("./a", 0o040755, b""), ("./a/b.sh", 0o100755, b"#!/bin/sh\n"), ("../evil", 0o100644, b"x")])
    raw.seek(0)
    assert [n for n, _, _ in cpio.read(raw)] == ["./a", "./a/b.sh", "../evil"]
    raw.seek(0)
    assert cpio.extract(raw, str(tmp_path / "root")) == ["a", "a/b.sh"]  # never outside the target
    assert (tmp_path / "root/a/b.sh").stat().st_mode & 0o777 == 0o755
    assert not (tmp_path / "evil").exists()


def test_lab_package_is_read_back_by_package_inspection(tmp_path: Path):
    pkg = pkgbuild.build(tmp_path / "Misleading-ARM-Name.pkg", "6.2.0.7", "x86_64", size_mb=2)
    info = package.inspect(pkg)
    assert (info.identifier, info.version, info.architectures) == ("com.qualys.cloud-agent", "6.2.0.7", ("x86_64",))
    assert abs(info.size - (2 << 20)) < 64 << 10
    again = pkgbuild.build(tmp_path / "again.pkg", "6.2.0.7", "x86_64", size_mb=2)
    assert package.sha256(pkg) == package.sha256(again)  # reproducible, so uploads can be skipped by digest


@pytest.mark.parametrize("version, arch, size, message", [
    ("6.1", "arm64", 1, "four numeric parts"), ("6.1.0.x", "arm64", 1, "four numeric parts"),
    ("6.1.0.1", "ppc", 1, "arm64 or x86_64"), ("6.1.0.1", "arm64", 0, "1 to 2048"),
])
def test_bad_package_options(tmp_path: Path, version, arch, size, message):
    with pytest.raises(UsageError, match=message):
        pkgbuild.build(tmp_path / "x.pkg", version, arch, size)


def test_inspect_explains_what_is_wrong(tmp_path: Path):
    (tmp_path / "notes.pkg").write_text("not a package")
    with pytest.raises(UsageError, match="notes.pkg: not a valid macOS flat package"):
        package.inspect(tmp_path / "notes.pkg")
    with pytest.raises(UsageError, match="cannot read package"):
        package.inspect(tmp_path / "missing.pkg")
