"""file:// specifics: URL forms, creation, sparseness, hole punching, errors, O_DIRECT."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scmt_cli.errors import SizeMismatchError, SourceUnreachableError, UsageError
from scmt_cli.transports.base import open_source, open_target
from scmt_cli.transports.file import FileSource, parse_file_url

MiB = 1024 * 1024


def test_url_forms(tmp_path):
    assert parse_file_url("file:///a/b.img") == ("/a/b.img", {})
    assert parse_file_url("file://localhost/a%20b.img?direct=1") == ("/a b.img", {"direct": "1"})
    assert parse_file_url("file:rel/x.img")[0] == "rel/x.img"
    with pytest.raises(UsageError, match="host"):
        parse_file_url("file://otherhost/x")
    with pytest.raises(UsageError, match="unknown option"):
        parse_file_url("file:///x?speed=9")
    with pytest.raises(UsageError, match="no path"):
        parse_file_url("file://")


@pytest.mark.parametrize(
    ("url", "match"),
    [("gopher://x/y", "unknown URL scheme"), ("/just/a/path", "not a URL"), ("nbd://[::1/x", "malformed")],
)
def test_registry_rejects_bad_urls(url, match):
    with pytest.raises(UsageError, match=match):
        open_source(url)


def test_missing_source_and_directory(tmp_path):
    with pytest.raises(SourceUnreachableError, match="does not exist"):
        open_source(f"file://{tmp_path}/nope.img")
    with pytest.raises(SourceUnreachableError, match="directory"):
        open_source(f"file://{tmp_path}")


def test_new_target_is_created_sparse_and_fresh(tmp_path):
    p = tmp_path / "new.img"
    t = open_target(f"file://{p}", size=64 * MiB)
    try:
        assert t.fresh and t.size == 64 * MiB
        t.write(32 * MiB, b"a" * 4096)
        t.flush()
    finally:
        t.close()
    st = os.stat(p)
    assert st.st_size == 64 * MiB and st.st_blocks * 512 < 1 * MiB
    t2 = open_target(f"file://{p}", size=64 * MiB)
    try:
        assert not t2.fresh
    finally:
        t2.close()


def test_target_without_size_must_exist(tmp_path):
    from scmt_cli.errors import TargetMissingError

    with pytest.raises(TargetMissingError, match="does not exist"):
        open_target(f"file://{tmp_path}/x.img")


def test_target_in_a_missing_directory_is_target_missing(tmp_path):
    from scmt_cli.errors import TargetMissingError

    with pytest.raises(TargetMissingError, match="target directory .*/nodir does not exist"):
        open_target(f"file://{tmp_path}/nodir/x.img", size=4096)


def test_write_zeroes_punches_holes(tmp_path):
    p = tmp_path / "full.img"
    p.write_bytes(os.urandom(8 * MiB))
    t = open_target(f"file://{p}", size=8 * MiB)
    try:
        t.write_zeroes(MiB, 4 * MiB)
        t.flush()
    finally:
        t.close()
    data = p.read_bytes()
    assert data[MiB : 5 * MiB] == bytes(4 * MiB) and data[:MiB] != bytes(MiB)
    assert os.stat(p).st_blocks * 512 <= 5 * MiB  # the range was deallocated, not written
    src = open_source(f"file://{p}")
    try:
        kinds = [(e.offset, e.kind) for e in src.extents()]
    finally:
        src.close()
    assert (MiB, "hole") in kinds


def test_source_that_shrinks_is_size_mismatch(tmp_path):
    p = tmp_path / "s.img"
    p.write_bytes(os.urandom(4 * MiB))
    src = open_source(f"file://{p}")
    try:
        os.truncate(p, MiB)
        buf = bytearray(MiB)
        with pytest.raises(SizeMismatchError, match="shrink"):
            src.readinto(2 * MiB, memoryview(buf))
    finally:
        src.close()


def test_direct_io_reads_same_bytes(tmp_path):
    p = tmp_path / "d.img"
    data = os.urandom(2 * MiB + 1000)
    p.write_bytes(data)
    src = open_source(f"file://{p}?direct=1")
    assert isinstance(src, FileSource)
    try:
        import mmap

        buf = mmap.mmap(-1, MiB)  # page aligned, as O_DIRECT needs
        src.readinto(MiB, memoryview(buf))
        assert bytes(buf) == data[MiB : 2 * MiB]
        assert src.read(2 * MiB, 1000) == data[2 * MiB :]  # unaligned tail: buffered fallback
    finally:
        src.close()


def test_extents_of_fully_sparse_and_full_files(tmp_path: Path):
    sparse = tmp_path / "sparse.img"
    with open(sparse, "wb") as fh:
        fh.truncate(3 * MiB)
    full = tmp_path / "full.img"
    full.write_bytes(b"\1" * (3 * MiB))
    for p, kind in ((sparse, "hole"), (full, "data")):
        src = open_source(f"file://{p}")
        try:
            exts = list(src.extents())
        finally:
            src.close()
        assert [(e.offset, e.length, e.kind) for e in exts] == [(0, 3 * MiB, kind)]


def test_block_device_target_and_source(tmp_path):
    """A loop device (root only): size by seek, ZERO_RANGE zeroing, copy both ways."""
    import subprocess

    backing = tmp_path / "backing.img"
    with open(backing, "wb") as fh:
        fh.truncate(8 * MiB)
    try:
        dev = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no loop devices here (needs root)")
    try:
        data = os.urandom(8 * MiB)
        t = open_target(f"file://{dev}", size=8 * MiB)
        try:
            assert t.is_block and not t.fresh and t.size == 8 * MiB
            t.write(0, data)
            t.write_zeroes(MiB, 2 * MiB)
            t.flush()
        finally:
            t.close()
        src = open_source(f"file://{dev}")
        try:
            assert src.size == 8 * MiB
            got = src.read(0, 8 * MiB)
        finally:
            src.close()
        assert got[:MiB] == data[:MiB] and got[MiB : 3 * MiB] == bytes(2 * MiB) and got[3 * MiB :] == data[3 * MiB :]
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
