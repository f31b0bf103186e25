"""Adversarial data-integrity checks of the block engine (resume, fresh targets, odd geometries)."""

from __future__ import annotations

import os
import random

import pytest

from scmt_cli.blocks.api import changed_copy, full_copy
from scmt_cli.blocks.checkpoint import Checkpointer, MemoryCheckpointStore
from scmt_cli.blocks.digest import ZERO
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.blocks.verify import verify_target
from scmt_cli.errors import TransportError
from scmt_cli.transports.base import Extent

from .memdisk import MemSource, MemTarget

KiB = 1024
CS = 64 * KiB


def _opts(**kw) -> CopyOptions:
    kw.setdefault("chunk_size", CS)
    return CopyOptions(**kw)


class _FirstPutStore(MemoryCheckpointStore):
    """Remembers the store as it was after the first checkpoint put: a crash right after the copy started."""

    def __init__(self) -> None:
        super().__init__()
        self.first: dict[str, str] | None = None

    def put_checkpoint(self, key, data) -> None:
        super().put_checkpoint(key, data)
        if self.first is None:
            self.first = dict(self.data)

    def crash(self) -> None:
        assert self.first is not None
        self.data = dict(self.first)


def test_resume_rewrites_zero_chunks_the_interrupted_run_may_have_written():
    """A crash after writes but before their checkpoint: on resume those chunks are re-done, never assumed.

    The first run copied everything to a fresh target but died before any
    checkpoint past the start was durable.  Between runs the (live) source
    zeroed chunk 5 and one 64 KiB... block inside chunk 9.  The resumed copy
    must not skip them as "fresh" zeroes: the target holds the old bytes.
    """
    rnd = random.Random(7)
    size = 12 * CS + 12345
    src = MemSource(rnd.randbytes(size))
    dst = MemTarget(size, fresh=True)
    store = _FirstPutStore()
    full_copy(src, dst, options=_opts(in_flight=2), checkpointer=Checkpointer(store, "k", {}))
    assert dst.data == src.data
    store.crash()  # the checkpoint store lost every update after the first
    src.data[5 * CS : 6 * CS] = bytes(CS)
    src.data[9 * CS + 4 * KiB : 9 * CS + 8 * KiB] = bytes(4 * KiB)
    resumed_target = MemTarget(0, fresh=False)  # the reopened target exists: not fresh
    resumed_target.data = dst.data
    out = full_copy(src, resumed_target, options=_opts(in_flight=2, sparse_block=4 * KiB),
                    checkpointer=Checkpointer(store, "k", {}), resume=True)
    assert resumed_target.data == src.data, "resume left bytes of the interrupted run on the target"
    assert out.manifest.chunks[5] == ZERO
    verify_target(resumed_target, out.manifest)


def test_interrupted_fresh_copy_checkpoint_no_longer_claims_a_fresh_target():
    """Once the engine has started writing, the checkpoint must not say the rest of the target reads as zeroes."""
    src = MemSource(random.Random(1).randbytes(6 * CS))
    store = _FirstPutStore()
    full_copy(src, MemTarget(src.size, fresh=True), options=_opts(),
              checkpointer=Checkpointer(store, "k", {}))
    store.crash()
    assert store.get_checkpoint("k")["fresh"] is False


@pytest.mark.parametrize("size", [0, 1, 511, CS - 1, CS, CS + 1, 3 * CS + 4095, 3 * CS + 4097])
def test_odd_disk_sizes_copy_checkpoint_and_verify(size):
    src = MemSource(random.Random(size).randbytes(size))
    dst = MemTarget(size, fresh=False, fill=0xEE)
    store = MemoryCheckpointStore()
    out = full_copy(src, dst, options=_opts(), checkpointer=Checkpointer(store, "k", {}))
    assert dst.data == src.data and store.data == {}
    assert len(out.manifest.chunks) == -(-size // CS)
    verify_target(dst, out.manifest)


def test_changed_copy_with_unsorted_overlapping_extents_in_the_last_partial_chunk():
    size = 4 * CS + 777
    src = MemSource(random.Random(3).randbytes(size))
    dst = MemTarget(size, fresh=False)
    base = full_copy(src, dst, options=_opts()).manifest
    src.data[size - 5 :] = b"ABCDE"
    src.data[10:12] = b"xy"
    changed = [Extent(size - 5, 5), Extent(8, 8), Extent(0, 12), Extent(size - 700, 700)]
    out = changed_copy(src, dst, changed, base=base, options=_opts())
    assert dst.data == src.data and out.stats.chunks_planned == 2
    verify_target(dst, out.manifest)
    with pytest.raises(TransportError, match="outside the disk"):  # a clear, permanent error (exit 30)
        changed_copy(src, dst, [Extent(size - 1, 2)], base=base, options=_opts())


def test_resume_onto_a_target_replaced_between_runs_starts_over(tmp_path):
    """The checkpoint says chunks below the watermark are on THAT file; a different file at the path has none."""
    from scmt_cli.events import NullReporter
    from scmt_cli.services.copy import CopyRequest, run_copy
    from scmt_cli.state.store import StateStore
    from scmt_cli.transports.wrappers import Fault, FaultPlan, FaultySource

    MiB = 1024 * KiB
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    src.write_bytes(random.Random(5).randbytes(12 * MiB))
    plan = FaultPlan([Fault("read", start=8 * MiB, end=12 * MiB, times=-1, transient=False)])
    with StateStore.open(tmp_path / "st.db") as store:
        with pytest.raises(TransportError):
            run_copy(CopyRequest(f"file://{src}", f"file://{dst}", chunk_size=MiB, in_flight=1,
                                 checkpoint_seconds=0.0), NullReporter(), store,
                     wrap_source=lambda s: FaultySource(s, plan))
        (key,) = store.checkpoint_keys("copy/")
        assert store.get_checkpoint(key)["watermark"] > 0
        other = tmp_path / "other.img"
        other.write_bytes(b"\xee" * (12 * MiB))  # e.g. restored from a backup, or another disk's image
        os.replace(other, dst)
        res = run_copy(CopyRequest(f"file://{src}", f"file://{dst}", chunk_size=MiB, resume=True),
                       NullReporter(), store)
    assert dst.read_bytes() == src.read_bytes()
    assert res.stats.chunks_resumed == 0 and any("replaced" in w for w in res.warnings)


def test_since_with_a_manifest_written_for_another_target_is_refused(tmp_path):
    """A base manifest must describe THIS target: chunks equal to it are not written (here: chunk 1 kept b2)."""
    from scmt_cli.errors import ScmtError
    from scmt_cli.events import NullReporter
    from scmt_cli.services.copy import CopyRequest, run_copy

    MiB = 1024 * KiB
    rnd = random.Random(9)
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    a.write_bytes(rnd.randbytes(MiB) + bytes(MiB))
    b.write_bytes(rnd.randbytes(2 * MiB))
    ma, mb = tmp_path / "a.json", tmp_path / "b.json"
    run_copy(CopyRequest(f"file://{a}", f"file://{tmp_path}/ta.img", manifest_out=ma, chunk_size=MiB),
             NullReporter(), None)
    run_copy(CopyRequest(f"file://{b}", f"file://{tmp_path}/tb.img", manifest_out=mb, chunk_size=MiB),
             NullReporter(), None)
    with open(b, "r+b") as fh:
        fh.seek(MiB)
        fh.write(bytes(MiB))  # chunk 1 of b becomes zero, as chunk 1 of a is
    with pytest.raises(ScmtError, match="ta.img"):
        run_copy(CopyRequest(f"file://{b}", f"file://{tmp_path}/tb.img", since=ma), NullReporter(), None)
    run_copy(CopyRequest(f"file://{b}", f"file://{tmp_path}/tb.img", since=mb), NullReporter(), None)
    assert (tmp_path / "tb.img").read_bytes() == b.read_bytes()
