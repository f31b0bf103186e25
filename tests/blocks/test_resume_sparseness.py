"""A resumed copy to a once-fresh file target ends byte-identical AND as sparse as an uninterrupted copy."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from scmt_cli.blocks.api import full_copy
from scmt_cli.blocks.checkpoint import Checkpointer, MemoryCheckpointStore
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.transports.file import FileSource, FileTarget
from scmt_cli.transports.wrappers import RetryingTarget

KiB = 1024
MiB = 1024 * KiB
SIZE = 24 * MiB
TOLERANCE = 256 * KiB  # filesystem metadata (extent tree blocks) may differ a little


class _Stop(Exception):
    """The simulated kill."""


def _source(path: Path) -> None:
    """A sparse image: in every 1 MiB chunk, 64 KiB blocks are random data, holes, or allocated zeroes."""
    rnd = random.Random(11)
    with open(path, "wb") as fh:
        fh.truncate(SIZE)
        for off in range(0, SIZE, 64 * KiB):
            r = rnd.random()
            if r < 0.4 or off % MiB == 0:  # every chunk holds data
                fh.seek(off)
                fh.write(rnd.randbytes(64 * KiB))
            elif r < 0.55:
                fh.seek(off)
                fh.write(bytes(64 * KiB))


class _DyingSource(FileSource):
    """Raises after ``n`` chunk reads: the copy stops mid-way and writes its final checkpoint."""

    def __init__(self, path: str, n: int) -> None:
        super().__init__(path)
        self.left = n

    def readinto(self, offset: int, buf: memoryview) -> None:
        self.left -= 1
        if self.left < 0:
            raise _Stop
        super().readinto(offset, buf)


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def _clean(tmp_path: Path, src: Path) -> Path:
    clean = tmp_path / "clean.img"
    with FileSource(str(src)) as s:
        t = FileTarget(str(clean), size=SIZE)
        full_copy(s, t, options=CopyOptions(chunk_size=MiB))
        t.close()
    return clean


@pytest.mark.parametrize("wrapped", [False, True], ids=["file", "retrying-proxy"])
def test_resume_after_a_mid_copy_stop_is_as_sparse_as_a_clean_copy(tmp_path: Path, wrapped: bool) -> None:
    src = tmp_path / "src.img"
    _source(src)
    clean = _clean(tmp_path, src)
    if _allocated(clean) > SIZE * 0.75:
        pytest.skip("the filesystem does not keep files sparse")
    dst = tmp_path / "dst.img"
    store = MemoryCheckpointStore()
    opts = CopyOptions(chunk_size=MiB, in_flight=1, writers=1, checkpoint_seconds=0.0)
    t = FileTarget(str(dst), size=SIZE)
    with pytest.raises(_Stop):
        full_copy(_DyingSource(str(src), 9), t, options=opts, checkpointer=Checkpointer(store, "k", {}))
    t.close()
    watermark = store.get_checkpoint("k")["watermark"]
    assert 0 < watermark < SIZE // MiB
    t = FileTarget(str(dst))  # reopened: exists, so not fresh
    assert not t.fresh
    target = RetryingTarget(t) if wrapped else t
    with FileSource(str(src)) as s:
        out = full_copy(s, target, options=opts, checkpointer=Checkpointer(store, "k", {}), resume=True)
    t.close()
    assert out.stats.chunks_resumed == watermark
    assert dst.read_bytes() == src.read_bytes()
    assert abs(_allocated(dst) - _allocated(clean)) <= TOLERANCE, (_allocated(dst), _allocated(clean))


def test_resume_that_lost_its_checkpoints_punches_zero_blocks_the_dead_run_wrote(tmp_path: Path) -> None:
    """The dead run wrote every chunk but no checkpoint past the start survived; meanwhile the (live)
    source zeroed some 64 KiB blocks inside data chunks.  The resume must zero them (punch), not skip."""
    src = tmp_path / "src.img"
    _source(src)
    dst = tmp_path / "dst.img"
    store = MemoryCheckpointStore()
    opts = CopyOptions(chunk_size=MiB, in_flight=2)
    t = FileTarget(str(dst), size=SIZE)
    Checkpointer(store, "k", {}).save(0, {}, False)
    first = dict(store.data)
    full_copy(FileSource(str(src)), t, options=opts, checkpointer=Checkpointer(store, "k", {}), resume=True)
    t.close()
    store.data = first  # as if the process died before any later checkpoint was durable
    data = bytearray(src.read_bytes())
    with open(src, "r+b") as fh:  # zero the first non-zero 64 KiB block of every third chunk, in place
        for off in range(0, SIZE, 3 * MiB):
            blk = next(b for b in range(off, off + MiB, 64 * KiB) if any(data[b : b + 64 * KiB]))
            data[blk : blk + 64 * KiB] = bytes(64 * KiB)
            fh.seek(blk)
            fh.write(bytes(64 * KiB))
    clean = _clean(tmp_path, src)
    t = FileTarget(str(dst))
    full_copy(FileSource(str(src)), t, options=opts, checkpointer=Checkpointer(store, "k", {}), resume=True)
    t.close()
    assert dst.read_bytes() == bytes(data), "a zero block the dead run wrote was skipped, not zeroed"
    assert abs(_allocated(dst) - _allocated(clean)) <= TOLERANCE, (_allocated(dst), _allocated(clean))
