"""The contract every BlockSource/BlockTarget passes (see conftest.py to add a transport)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import pytest

from scmt_cli.blocks.api import full_copy
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.errors import ReadOnlyTargetError, ScmtError, SizeMismatchError
from scmt_cli.transports.base import open_source, open_target

MiB = 1024 * 1024
SIZE = 12 * MiB
# (offset, length) of data runs; everything else is a hole.
DATA_RUNS = [(0, 4096), (1 * MiB, 1 * MiB + 12345), (5 * MiB, 64 * 1024), (SIZE - 1 * MiB, 1 * MiB)]


def _make_image(path: Path) -> bytes:
    """A sparse image with DATA_RUNS filled with a deterministic pattern; returns its content."""
    content = bytearray(SIZE)
    with open(path, "wb") as fh:
        fh.truncate(SIZE)
        for i, (off, length) in enumerate(DATA_RUNS):
            chunk = hashlib.sha256(str(i).encode()).digest() * (length // 32 + 1)
            chunk = chunk[:length]
            fh.seek(off)
            fh.write(chunk)
            content[off : off + length] = chunk
    return bytes(content)


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, bytes]:
    p = tmp_path / "image.raw"
    return p, _make_image(p)


def test_size_and_reads(transport, image):
    path, content = image
    with transport.serve(path, True) as url:
        src = open_source(url)
        try:
            assert src.size == SIZE
            for off, length in [(0, 4096), (MiB - 100, 300), (SIZE - 5000, 5000), (5 * MiB, 64 * 1024), (0, SIZE)]:
                assert src.read(off, length) == content[off : off + length]
            with pytest.raises(ScmtError):
                src.read(SIZE - 10, 20)
        finally:
            src.close()


def test_extents_cover_exactly_and_find_data(transport, image):
    path, content = image
    with transport.serve(path, True) as url:
        src = open_source(url)
        try:
            for off, length in [(0, SIZE), (MiB + 7, 3 * MiB), (SIZE - 4096, 4096)]:
                exts = list(src.extents(off, length))
                pos = off
                for e in exts:
                    assert e.offset == pos and e.length > 0
                    assert e.kind in ("data", "zero", "hole")
                    if e.kind != "data":
                        assert content[e.offset : e.end] == bytes(e.length), "a zero/hole extent must read as zeroes"
                    pos = e.end
                assert pos == off + length
            exts = list(src.extents(0, SIZE))
            if transport.reports_holes:
                assert any(e.kind != "data" for e in exts), "the image's holes are not reported"
                # Every byte of data lies in a data extent.
                for off, length in DATA_RUNS:
                    assert any(e.kind == "data" and e.offset <= off and off + length <= e.end or
                               e.kind == "data" and e.offset <= off < e.end for e in exts)
        finally:
            src.close()


def test_concurrent_reads_when_thread_safe(transport, image):
    path, content = image
    with transport.serve(path, True) as url:
        src = open_source(url)
        try:
            if not src.thread_safe:
                pytest.skip("transport is not thread-safe")
            errors: list[BaseException] = []

            def worker(k: int) -> None:
                try:
                    for j in range(20):
                        off = ((k * 7 + j * 13) % 11) * MiB
                        assert src.read(off, MiB) == content[off : off + MiB]
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors
        finally:
            src.close()


def test_target_write_zero_flush_readback(transport, tmp_path):
    if not transport.target:
        pytest.skip("read-only transport")
    path = tmp_path / "target.raw"
    with open(path, "wb") as fh:
        fh.truncate(SIZE)
    with transport.serve(path, True) as url:
        dst = open_target(url, size=SIZE)
        try:
            assert dst.size >= SIZE
            data = os.urandom(3 * MiB)
            dst.write(MiB, data)
            dst.write(5 * MiB, bytearray(b"x" * 4096))
            dst.write(6 * MiB, memoryview(data)[:8192])
            dst.write_zeroes(MiB + 4096, 8192)
            dst.flush()
            want = bytearray(data)
            want[4096 : 4096 + 8192] = bytes(8192)
            assert dst.read(MiB, 3 * MiB) == bytes(want)
            assert dst.read(5 * MiB, 4096) == b"x" * 4096
            assert dst.read(6 * MiB, 8192) == data[:8192]
            dst.write_zeroes(0, SIZE)
            dst.flush()
            assert dst.read(0, SIZE) == bytes(SIZE)
            with pytest.raises(ScmtError):
                dst.write(SIZE - 10, b"y" * 20)
        finally:
            dst.close()


def _open_and_close(url: str, write: bool = False) -> None:
    t = open_target(url, size=SIZE)
    try:
        if write:
            t.write(0, b"z" * 4096)
            t.flush()
    finally:
        t.close()


def test_target_smaller_than_needed_is_size_mismatch(transport, tmp_path):
    if not transport.target:
        pytest.skip("read-only transport")
    path = tmp_path / "small.raw"
    with open(path, "wb") as fh:
        fh.truncate(MiB)
    with transport.serve(path, True) as url:
        with pytest.raises(SizeMismatchError):
            _open_and_close(url)


def test_read_only_target_refused(transport, tmp_path):
    path = tmp_path / "ro.raw"
    with open(path, "wb") as fh:
        fh.truncate(SIZE)
    with transport.serve(path, False) as url:
        if url is None:
            pytest.skip("no read-only variant for this transport here")
        with pytest.raises(ReadOnlyTargetError):
            _open_and_close(url, write=True)


def test_engine_copies_through_transport(transport, image, tmp_path):
    path, content = image
    out = tmp_path / "copy.raw"
    with open(out, "wb") as fh:
        fh.truncate(SIZE)
        fh.seek(3 * MiB)
        fh.write(b"garbage" * 1000)  # must be zeroed by the copy
    with transport.serve(path, True) as src_url, (transport.serve(out, True) if transport.target
                                                  else contextlib.nullcontext(f"file://{out}")) as dst_url:
        src, dst = open_source(src_url), open_target(dst_url, size=SIZE)
        try:
            outcome = full_copy(src, dst, options=CopyOptions(chunk_size=MiB, in_flight=3))
        finally:
            src.close()
            dst.close()
    assert out.read_bytes()[:SIZE] == content
    assert outcome.stats.chunks_done == outcome.stats.chunks_planned == SIZE // MiB


def test_optional_parts_are_answered(transport, image, tmp_path):
    """Every transport answers the optional parts of the interface ("not supported" is None/False/{})."""
    from scmt_cli.transports.base import SOURCE_OPTIONAL, TARGET_OPTIONAL, BlockSource, BlockTarget, Identity

    path, content = image
    with transport.serve(path, True) as url:
        src = open_source(url)
        try:
            assert isinstance(src, BlockSource)
            assert all(hasattr(src, name) for name in SOURCE_OPTIONAL)
            ident = src.identity()
            assert ident is None or (isinstance(ident, Identity) and ident.fields.get("size") == SIZE)
            assert ident is None or ident == src.identity(), "an unchanged source keeps its identity"
            assert isinstance(src.stats(), dict)
            assert src.changed_extents(None) is None or isinstance(src.changed_extents(None), tuple)
            digests = src.remote_digests(MiB)
            assert digests is None or len(digests) == SIZE // MiB
            buf = bytearray(5000)
            src.readinto(MiB - 100, memoryview(buf))
            assert bytes(buf) == content[MiB - 100 : MiB + 4900]
        finally:
            src.close()
    if not transport.target:
        return
    out = tmp_path / "optional-target.raw"
    out.write_bytes(bytes(SIZE))
    with transport.serve(out, True) as url:
        dst = open_target(url, size=SIZE)
        try:
            assert isinstance(dst, BlockTarget)
            assert all(hasattr(dst, name) for name in TARGET_OPTIONAL)
            ident = dst.identity()
            assert ident is None or isinstance(ident, Identity)
            assert isinstance(dst.preallocate(0, MiB), bool)
            assert isinstance(dst.punches_holes, bool)
            assert isinstance(dst.stats(), dict)
        finally:
            dst.close()
