"""The copy engine: bit-identical copies, zero handling, errors, interruption and resume, incrementals."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scmt_cli.blocks import checkpoint as ckmod
from scmt_cli.blocks import engine as engmod
from scmt_cli.blocks.api import changed_copy, full_copy, incremental_copy
from scmt_cli.blocks.checkpoint import Checkpointer, MemoryCheckpointStore
from scmt_cli.blocks.digest import ZERO, Manifest
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.errors import InternalError, InvalidStateError, SizeMismatchError, TransportError
from scmt_cli.events import RecordingReporter
from scmt_cli.transports.base import Extent
from scmt_cli.transports.wrappers import Fault, FaultPlan, FaultySource, FaultyTarget

from .memdisk import MemSource, MemTarget

KiB = 1024
CS = 64 * KiB  # small chunks keep the tests fast; the engine does not care


def sparse_disk(seed: int, size: int, cs: int = CS) -> MemSource:
    """A random disk: data runs, explicit zero runs inside data, holes; an exact extent map."""
    rnd = random.Random(seed)
    data = bytearray(size)
    exts: list[Extent] = []
    pos = 0
    while pos < size:
        n = min(size - pos, rnd.choice([4 * KiB, 16 * KiB, cs, 3 * cs + 100, 5 * cs]))
        kind = rnd.choice(["data", "data", "hole", "zero"])
        if kind == "data":
            style = rnd.random()
            if style < 0.2:
                payload = bytes(n)  # allocated but zero: the engine must detect it
            elif style < 0.5:
                payload = (b"compressible %d " % pos * (n // 10 + 1))[:n]
            else:
                payload = rnd.randbytes(n)
            data[pos : pos + n] = payload
        exts.append(Extent(pos, n, kind))
        pos += n
    return MemSource(data, exts)


def opts(**kw) -> CopyOptions:
    kw.setdefault("chunk_size", CS)
    return CopyOptions(**kw)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), nchunks=st.integers(1, 40), in_flight=st.integers(1, 6),
       fresh=st.booleans(), ts=st.booleans())
def test_copy_is_bit_identical(seed, nchunks, in_flight, fresh, ts):
    src = sparse_disk(seed, nchunks * CS - (seed % 3) * 1000)
    src._thread_safe = ts
    dst = MemTarget(src.size, fresh=fresh, fill=0 if fresh else 0xAB, thread_safe=ts)
    out = full_copy(src, dst, options=opts(in_flight=in_flight))
    assert dst.data == src.data
    s = out.stats
    assert s.chunks_done == s.chunks_planned == len(out.manifest.chunks)
    # Zero chunks are never written as data; on a fresh target they are not touched at all.
    for i, d in enumerate(out.manifest.chunks):
        if d == ZERO:
            assert not any(o // CS == i for o, _ in dst.writes)
    if fresh:
        assert not dst.zeroes
    assert s.bytes_read == sum(n for _, n in src.reads)


def test_fresh_target_gets_sparse_writes_only_for_nonzero_blocks():
    data = bytearray(4 * CS)
    data[CS + 5] = 1
    src = MemSource(data)  # all "data" by the map, mostly zero bytes
    dst = MemTarget(len(data), fresh=True)
    out = full_copy(src, dst, options=opts(sparse_block=4 * KiB))
    assert dst.data == data
    assert dst.writes == [(CS, 4 * KiB)]
    assert out.stats.zero_chunks_detected == 3 and out.stats.bytes_written == 4 * KiB


def test_memory_stays_bounded_by_in_flight():
    """Chunks read but not yet written never exceed ``in_flight`` (each holds one buffer)."""
    src = sparse_disk(7, 60 * CS)
    in_flight = 3
    state = {"now": 0, "max": 0, "read": set()}
    lock = threading.Lock()
    dst = MemTarget(src.size, fresh=False)
    orig_read, orig_write, orig_zero = src.read, dst.write, dst.write_zeroes

    def read(off, n):
        with lock:
            if off // CS not in state["read"]:
                state["read"].add(off // CS)
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
        return orig_read(off, n)

    def done(off):
        with lock:
            if off // CS in state["read"]:
                state["read"].discard(off // CS)
                state["now"] -= 1

    def write(off, d):
        orig_write(off, d)
        done(off)

    def write_zeroes(off, n):
        orig_zero(off, n)
        done(off)

    src.read, dst.write, dst.write_zeroes = read, write, write_zeroes
    full_copy(src, dst, options=opts(in_flight=in_flight))
    assert dst.data == src.data
    assert 1 <= state["max"] <= in_flight


def test_worker_exception_reaches_caller_and_leaves_resumable_checkpoint():
    src = sparse_disk(3, 50 * CS)
    store = MemoryCheckpointStore()
    plan = FaultPlan([Fault(op, start=30 * CS, end=31 * CS, times=-1, transient=False)
                      for op in ("write", "write_zeroes")])
    dst = MemTarget(src.size, fresh=False, fill=0xAB)
    ck = Checkpointer(store, "k", {"p": 1})
    with pytest.raises(TransportError, match="injected permanent"):
        full_copy(src, FaultyTarget(dst, plan), options=opts(in_flight=2, checkpoint_seconds=0),
                  checkpointer=ck)
    saved = store.get_checkpoint("k")
    assert saved is not None and 0 < saved["watermark"] <= 30
    src.reads.clear()
    out = full_copy(src, dst, options=opts(in_flight=2), checkpointer=Checkpointer(store, "k", {"p": 1}),
                    resume=True)
    assert dst.data == src.data
    assert out.stats.chunks_resumed == saved["watermark"]
    assert min(o for o, _ in src.reads) >= saved["watermark"] * CS, "resumed copy re-read finished chunks"
    assert store.get_checkpoint("k") is None, "a finished copy removes its checkpoint"
    # The manifest of the resumed copy equals the one of an uninterrupted copy.
    fresh = full_copy(src, MemTarget(src.size), options=opts())
    assert out.manifest.chunks == fresh.manifest.chunks


class _InterruptAt:
    """A reporter that raises KeyboardInterrupt in the calling (main) thread once ``at`` bytes are done."""

    def __init__(self, at: int, exc: type[BaseException] = KeyboardInterrupt):
        self.at, self.exc, self.fired = at, exc, False

    def log(self, *a, **k):
        pass

    def event(self, *a, **k):
        pass

    def progress(self, task, done, total, **k):
        if not self.fired and done >= self.at:
            self.fired = True
            raise self.exc()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interrupt_writes_final_checkpoint_and_reraises(exc):
    src = sparse_disk(11, 80 * CS)
    store = MemoryCheckpointStore()
    dst = MemTarget(src.size, fresh=True)
    rep = _InterruptAt(30 * CS, exc)
    with pytest.raises(exc):
        full_copy(src, dst, options=opts(in_flight=2, checkpoint_seconds=3600),
                  checkpointer=Checkpointer(store, "k", {}), reporter=rep)
    saved = store.get_checkpoint("k")
    assert saved["watermark"] >= 1 and saved["fresh"] is False  # writes may lie above the watermark
    assert threading.active_count() < 5 or not [t for t in threading.enumerate() if t.name.startswith("scmt-")]
    out = full_copy(src, dst, options=opts(), checkpointer=Checkpointer(store, "k", {}), resume=True)
    assert dst.data == src.data and out.stats.chunks_resumed == saved["watermark"]


def test_resume_with_other_parameters_is_refused():
    store = MemoryCheckpointStore()
    Checkpointer(store, "k", {"chunk_size": 1}).save(3, {}, True)
    with pytest.raises(InvalidStateError, match="chunk_size"):
        Checkpointer(store, "k", {"chunk_size": 2}).load()


def test_checkpoint_segments_round_trip(monkeypatch):
    monkeypatch.setattr(ckmod, "SEGMENT", 4)
    store = MemoryCheckpointStore()
    ck = Checkpointer(store, "k", {"a": 1})
    digests = {i: f"{i:032x}" for i in range(11)}
    ck.save(6, digests, False)
    ck.save(11, digests, False)
    assert store.get_checkpoint("k")["segments"] == 2
    wm, got, fresh = Checkpointer(store, "k", {"a": 1}).load()
    assert wm == 11 and got == digests and fresh is False
    ck.clear()
    assert store.data == {}


def test_chunk_count_is_checked(monkeypatch):
    monkeypatch.setattr(engmod, "_account", lambda *a: None)
    src = sparse_disk(1, 4 * CS)
    with pytest.raises(InternalError, match="planned"):
        full_copy(src, MemTarget(src.size), options=opts())


def test_target_smaller_than_source():
    src = sparse_disk(1, 4 * CS)
    with pytest.raises(SizeMismatchError, match="smaller"):
        full_copy(src, MemTarget(src.size - 1), options=opts())


def test_incremental_writes_only_changed_chunks():
    src = sparse_disk(5, 40 * CS)
    dst = MemTarget(src.size, fresh=True)
    base = full_copy(src, dst, options=opts()).manifest
    changed = {3, 17, 39}
    for i in changed:
        src.data[i * CS + 10] ^= 0xFF
    src._extents = [Extent(0, src.size, "data")]
    dst.writes.clear()
    out = incremental_copy(src, dst, base, options=opts())
    assert dst.data == src.data
    assert {o // CS for o, _ in dst.writes} == changed
    assert out.stats.chunks_written == 3 and out.stats.chunks_unchanged == 37


def test_incremental_zeroes_chunks_that_became_holes():
    src = MemSource(bytes([7]) * (8 * CS))
    dst = MemTarget(src.size)
    base = full_copy(src, dst, options=opts()).manifest
    src.data[2 * CS : 4 * CS] = bytes(2 * CS)
    src._extents = [Extent(0, 2 * CS, "data"), Extent(2 * CS, 2 * CS, "hole"), Extent(4 * CS, 4 * CS, "data")]
    out = incremental_copy(src, dst, base, options=opts())
    assert dst.data == src.data
    assert out.stats.chunks_zeroed == 2 and dst.zeroes == [(2 * CS, 2 * CS)]  # the hole's run: one request


def test_changed_extents_copy_reads_only_changed_chunks():
    src = sparse_disk(9, 50 * CS)
    dst = MemTarget(src.size)
    base = full_copy(src, dst, options=opts()).manifest
    src.data[10 * CS : 10 * CS + 100] = b"x" * 100
    src.data[20 * CS : 22 * CS] = bytes(2 * CS)
    src.reads.clear()
    out = changed_copy(src, dst, [Extent(10 * CS, 100, "data"), Extent(20 * CS, 2 * CS, "zero")], base=base,
                       options=opts())
    assert dst.data == src.data
    assert {o // CS for o, _ in src.reads} == {10}, "the source was read outside the changed extents"
    assert out.manifest.chunks[:10] == base.chunks[:10] and out.manifest.chunks[20] == ZERO
    # Without a base, unchanged chunks are unknown in the manifest.
    out2 = changed_copy(src, dst, [Extent(0, 10, "data")], options=opts())
    assert out2.manifest.chunks[1] is None and out2.manifest.chunks[0] is not None


def test_manifest_save_load_round_trip(tmp_path):
    src = sparse_disk(2, 9 * CS)
    m = full_copy(src, MemTarget(src.size), options=opts()).manifest
    m.target = "mem://t"
    m.save(tmp_path / "m.json")
    assert Manifest.load(tmp_path / "m.json") == m


def test_progress_reaches_total():
    src = sparse_disk(4, 20 * CS)
    rep = RecordingReporter()
    full_copy(src, MemTarget(src.size), options=opts(task="d0"), reporter=rep)
    prog = rep.of_type("progress")
    assert prog[-1]["done"] == prog[-1]["total"] == src.size
    assert all(p["task"] == "d0" for p in prog)


def test_transient_source_errors_without_retry_wrapper_fail():
    src = sparse_disk(4, 10 * CS)
    plan = FaultPlan([Fault("read", times=1, transient=True)])
    with pytest.raises(TransportError, match="transient"):
        full_copy(FaultySource(src, plan), MemTarget(src.size), options=opts())


def test_buffers_zero_only_what_the_next_chunk_does_not_read_over():
    """A reused buffer keeps no byte of the chunk before it, outside the new chunk's read ranges."""
    from scmt_cli.blocks.pipeline import Buffer, _minus

    assert _minus(((0, 10), (20, 30)), ((5, 25),)) == [(0, 5), (25, 30)]
    assert _minus(((0, 10),), ()) == [(0, 10)]
    assert _minus(((0, 10),), ((0, 10),)) == []
    assert _minus(((0, 100),), ((10, 20), (30, 40), (90, 120))) == [(0, 10), (20, 30), (40, 90)]
    rnd = random.Random(5)
    buf = Buffer(1024 * KiB)
    assert buf.addr % 4096 == 0
    for _ in range(50):
        n = rnd.randrange(1, 5)
        cuts = sorted(rnd.sample(range(0, 1024 * KiB, 512), 2 * n))
        ranges = tuple(zip(cuts[::2], cuts[1::2], strict=True))
        buf.prepare(ranges)
        view = buf.view(1024 * KiB)
        for lo, hi in ranges:  # a read fills its ranges
            view[lo:hi] = rnd.randbytes(hi - lo)
        outside = bytearray(view)
        for lo, hi in ranges:
            outside[lo:hi] = bytes(hi - lo)
        assert outside == bytes(1024 * KiB)
        view.release()
