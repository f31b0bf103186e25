"""The engine over real files: random sparse images of 8-64 MiB end bit-identical and stay sparse."""

from __future__ import annotations

import os
import random

import pytest

from scmt_cli.blocks.api import full_copy, incremental_copy
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.blocks.plan import READ_MERGE_GAP
from scmt_cli.blocks.verify import verify_target
from scmt_cli.transports.base import open_source, open_target

KiB, MiB = 1024, 1024 * 1024


def random_sparse_file(path, size, seed):
    """Random runs of data (random, repetitive, explicit zeroes) between holes, at 4 KiB-unaligned offsets too."""
    rnd = random.Random(seed)
    with open(path, "wb") as fh:
        fh.truncate(size)
        pos = 0
        while pos < size:
            pos += rnd.choice([0, 4 * KiB, 100 * KiB, MiB, 3 * MiB + 7])
            n = min(size - pos, rnd.choice([1, 511, 64 * KiB, 700 * KiB, 2 * MiB]))
            if n <= 0:
                break
            fh.seek(pos)
            style = rnd.random()
            fh.write(bytes(n) if style < 0.15 else (b"%d" % pos * n)[:n] if style < 0.4 else rnd.randbytes(n))
            pos += n
    return path.read_bytes()


@pytest.mark.parametrize(
    ("size", "seed", "chunk", "in_flight", "direct"),
    [
        (8 * MiB, 1, 1 * MiB, 1, None),
        (24 * MiB + 12345, 2, 4 * MiB, 4, None),  # unaligned tail: O_DIRECT falls back for it
        (64 * MiB, 3, 8 * MiB, 3, "0"),
        (40 * MiB + 4096, 4, 2 * MiB, 6, "1"),
    ],
)
def test_random_sparse_image_copies_bit_identical(tmp_path, size, seed, chunk, in_flight, direct):
    src_p, dst_p = tmp_path / "src.img", tmp_path / "dst.img"
    data = random_sparse_file(src_p, size, seed)
    q = f"?direct={direct}" if direct is not None else ""
    src = open_source(f"file://{src_p}{q}")
    dst = open_target(f"file://{dst_p}{q}", size=src.size)
    try:
        out = full_copy(src, dst, options=CopyOptions(chunk_size=chunk, in_flight=in_flight))
        assert verify_target(dst, out.manifest) == len(out.manifest.chunks)
    finally:
        src.close()
        dst.close()
    assert dst_p.read_bytes() == data
    allocated = os.stat(src_p).st_blocks * 512
    nchunks = len(out.manifest.chunks)
    # Sparse writes work in 64 KiB blocks, reads merge ranges closer than READ_MERGE_GAP: small slack only.
    assert os.stat(dst_p).st_blocks * 512 <= allocated * 1.1 + MiB, "the copy is much less sparse than the source"
    assert out.stats.bytes_read <= allocated + nchunks * READ_MERGE_GAP * 2
    assert out.stats.bytes_read < size or allocated > size * 0.9


def test_incremental_over_files_then_second_incremental(tmp_path):
    src_p, dst_p = tmp_path / "src.img", tmp_path / "dst.img"
    random_sparse_file(src_p, 16 * MiB, 9)
    opts = CopyOptions(chunk_size=MiB)
    with open_source(f"file://{src_p}") as src, open_target(f"file://{dst_p}", size=src.size) as dst:
        m1 = full_copy(src, dst, options=opts).manifest
    with open(src_p, "r+b") as fh:
        fh.seek(5 * MiB + 3)
        fh.write(b"new data")
        fh.seek(15 * MiB)
        fh.write(os.urandom(MiB))
    with open_source(f"file://{src_p}") as src, open_target(f"file://{dst_p}", size=src.size) as dst:
        out = incremental_copy(src, dst, m1, options=opts)
        assert out.stats.chunks_written == 2
        m2 = out.manifest
        again = incremental_copy(src, dst, m2, options=opts)
        assert again.stats.chunks_written == 0 and again.stats.chunks_zeroed == 0
    assert dst_p.read_bytes() == src_p.read_bytes()


def test_fresh_target_reserves_exactly_the_source_data_extents(tmp_path):
    """The preallocation hint covers the source's data extents from the resume point on, and nothing else."""
    src_p, dst_p = tmp_path / "src.img", tmp_path / "dst.img"
    data = random_sparse_file(src_p, 32 * MiB, 5)
    src = open_source(f"file://{src_p}")
    dst = open_target(f"file://{dst_p}", size=src.size)
    calls: list[tuple[int, int]] = []
    real = dst.preallocate

    def spy(offset: int, length: int) -> bool:
        calls.append((offset, length))
        return real(offset, length)

    dst.preallocate = spy  # type: ignore[method-assign]
    try:
        full_copy(src, dst, options=CopyOptions(chunk_size=MiB))
        expected = [(e.offset, e.length) for e in src.extents(0, src.size) if e.kind == "data"]
    finally:
        src.close()
        dst.close()
    assert calls == expected and calls
    assert dst_p.read_bytes() == data
    # Reserving the source's extents adds nothing beyond the 64 KiB granularity of sparse writes.
    assert os.stat(dst_p).st_blocks * 512 <= os.stat(src_p).st_blocks * 512 * 1.1 + MiB


def test_preallocate_reads_as_zeroes_and_refuses_out_of_range(tmp_path):
    dst = open_target(f"file://{tmp_path / 'd.img'}", size=4 * MiB)
    try:
        assert dst.preallocate(MiB, MiB) in (True, False)  # False only where fallocate is unsupported
        assert dst.read(0, 4 * MiB) == bytes(4 * MiB)
        assert dst.preallocate(3 * MiB, 2 * MiB) is False  # past the end: never grows the target
        assert dst.size == 4 * MiB and os.stat(tmp_path / "d.img").st_size == 4 * MiB
    finally:
        dst.close()
