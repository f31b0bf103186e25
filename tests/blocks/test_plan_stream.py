"""A full copy plans from the allocation map while it copies: reads start before the map is complete.

Every property of the plan still holds when it is streamed: exact data ranges,
zero chunks never read, the resume watermark, the final count check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from scmt_cli.blocks.api import full_copy, plan_source
from scmt_cli.blocks.checkpoint import Checkpointer, MemoryCheckpointStore
from scmt_cli.blocks.engine import CopyOptions, copy_chunks
from scmt_cli.blocks.plan import Chunk, ChunkPlan
from scmt_cli.errors import InternalError, TransportError
from scmt_cli.transports.base import Extent
from scmt_cli.transports.wrappers import RetryingSource, RetryPolicy

from .memdisk import MemSource, MemTarget
from .test_engine import sparse_disk

KiB = 1024
CS = 64 * KiB
FAST = RetryPolicy(attempts=3, initial_wait=0.001, max_wait=0.002)


class SlowMapSource(MemSource):
    """A MemSource whose allocation map arrives in two parts, like a remote map fetched window by window.

    The second part is released only once a read has happened (or ``patience``
    seconds passed): a copy that waits for the whole map before its first read
    sees the map stall and fails with "the map was consumed before any read".
    ``fail_after`` (an offset) makes the map raise ``fail`` at that point of the
    stream, once, after the target got ``writes_before_fail`` writes.
    """

    def __init__(self, disk: MemSource, split: int, *, patience: float = 5.0, fail_at: int | None = None,
                 fail: TransportError | None = None, target: MemTarget | None = None,
                 writes_before_fail: int = 0) -> None:
        super().__init__(disk.data, disk._extents)
        self.split = split
        self.patience = patience
        self.read_seen = threading.Event()
        self.fail_at = fail_at
        self.fail = fail
        self.target = target
        self.writes_before_fail = writes_before_fail
        self.map_calls: list[tuple[int, int | None]] = []

    def read(self, offset: int, length: int) -> bytes:
        self.read_seen.set()
        return super().read(offset, length)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        self.map_calls.append((offset, length))
        for ext in super().extents(offset, length):
            if ext.offset >= self.split and not self.read_seen.is_set():
                if not self.read_seen.wait(self.patience):
                    raise AssertionError("the map was consumed before any read")
            if self.fail_at is not None and ext.offset >= self.fail_at and self.fail is not None:
                fail, self.fail = self.fail, None
                end = time.monotonic() + 5
                while self.target is not None and len(self.target.writes) < self.writes_before_fail:
                    if time.monotonic() > end:
                        raise AssertionError("no chunk was written before the map failed")
                    time.sleep(0.005)
                raise fail
            yield ext


def _disk() -> MemSource:
    return sparse_disk(11, 48 * CS)


@pytest.mark.parametrize("wrapped", [False, True])
def test_reads_start_before_the_allocation_map_is_complete(wrapped: bool) -> None:
    disk = _disk()
    src = SlowMapSource(disk, split=24 * CS)
    dst = MemTarget(disk.size)
    outer = RetryingSource(src, FAST) if wrapped else src  # the retry layer streams the map too
    out = full_copy(outer, dst, options=CopyOptions(chunk_size=CS, in_flight=3))
    assert dst.data == disk.data
    assert out.stats.chunks_planned == out.stats.chunks_done == 48
    assert src.map_calls == [(0, disk.size)]  # one pass over the map: no second one for preallocation


def test_streamed_plan_reads_exactly_the_data_ranges() -> None:
    disk = _disk()
    src = SlowMapSource(disk, split=24 * CS)
    out = full_copy(src, MemTarget(disk.size), options=CopyOptions(chunk_size=CS, in_flight=2))
    data = [(e.offset, e.end) for e in disk._extents if e.kind == "data"]
    for off, n in src.reads:  # every read lies in a chunk that holds data; zero chunks are never read
        assert any(lo < (off // CS + 1) * CS and off // CS * CS < hi for lo, hi in data), (off, n)
    assert out.stats.bytes_read == sum(n for _, n in src.reads)


def test_a_map_error_part_way_checkpoints_what_was_copied_and_resume_completes() -> None:
    disk = _disk()
    dst = MemTarget(disk.size)
    store = MemoryCheckpointStore()
    bad = TransportError("injected: the map broke", transient=False)
    src = SlowMapSource(disk, split=disk.size, fail_at=30 * CS, fail=bad, target=dst, writes_before_fail=3)
    with pytest.raises(TransportError, match="the map broke"):
        full_copy(src, dst, options=CopyOptions(chunk_size=CS, in_flight=2),
                  checkpointer=Checkpointer(store, "k", {}))
    saved = store.get_checkpoint("k")
    broke_at = next(e.offset for e in disk._extents if e.offset >= 30 * CS)
    assert saved is not None and 0 < saved["watermark"] <= broke_at // CS  # never past what the map described
    out = full_copy(_disk(), dst, options=CopyOptions(chunk_size=CS, in_flight=2),
                    checkpointer=Checkpointer(store, "k", {}), resume=True)
    assert dst.data == disk.data
    assert out.stats.chunks_resumed == saved["watermark"] and out.stats.chunks_done == 48
    assert store.get_checkpoint("k") is None


def test_a_transient_map_error_part_way_is_retried_from_where_the_map_stopped() -> None:
    disk = _disk()
    dst = MemTarget(disk.size)
    src = SlowMapSource(disk, split=disk.size, fail_at=30 * CS, fail=TransportError("map hiccup", transient=True))
    outer = RetryingSource(src, FAST)
    full_copy(outer, dst, options=CopyOptions(chunk_size=CS, in_flight=2))
    assert dst.data == disk.data
    assert outer.retrier.retries == 1
    assert len(src.map_calls) == 2 and src.map_calls[1][0] >= 29 * CS  # asked again from where it broke


def _plan(chunks: list[Chunk], count: int) -> ChunkPlan:
    return ChunkPlan(iter(chunks), count, sum(c.length for c in chunks))


def test_a_stream_that_ends_early_fails_the_count_check() -> None:
    disk = _disk()
    full = list(plan_source(disk, CS).chunks)
    with pytest.raises(InternalError, match="planned 48"):
        copy_chunks(disk, MemTarget(disk.size), _plan(full[:-1], 48), options=CopyOptions(chunk_size=CS))


def test_a_stream_off_the_grid_or_out_of_order_is_an_internal_error() -> None:
    disk = _disk()
    full = list(plan_source(disk, CS).chunks)
    swapped = [full[1], full[0], *full[2:]]
    with pytest.raises(InternalError, match="not on the plan grid"):
        copy_chunks(disk, MemTarget(disk.size), _plan(swapped, 48), options=CopyOptions(chunk_size=CS))


class _HugeSparse(MemSource):
    """A 1 TiB source: a few data extents in a hole (reads of the hole are never expected)."""

    SIZE = 1 << 40

    def __init__(self) -> None:
        super().__init__(b"")
        self.pieces = {(k << 34) + 12345: bytes([k + 1]) * 70000 for k in range(3)}

    @property
    def size(self) -> int:
        return self.SIZE

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        pos = 0
        for off, data in sorted(self.pieces.items()):
            yield Extent(pos, off - pos, "hole")
            yield Extent(off, len(data), "data")
            pos = off + len(data)
        yield Extent(pos, self.SIZE - pos, "hole")

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        for off, data in self.pieces.items():
            lo, hi = max(off, offset), min(off + len(data), offset + length)
            if lo < hi:
                out[lo - offset : hi - offset] = data[lo - off : hi - off]
        return bytes(out)


class _RecordingTarget(MemTarget):
    """A target of any size that keeps only what it was sent."""

    def __init__(self, size: int, fresh: bool) -> None:
        super().__init__(0, fresh=fresh)
        self._size = size
        self.blobs: dict[int, bytes] = {}

    @property
    def size(self) -> int:
        return self._size

    def write(self, offset: int, data) -> None:
        self.blobs[offset] = bytes(data)
        self.writes.append((offset, len(data)))

    def write_zeroes(self, offset: int, length: int) -> None:
        self.zeroes.append((offset, length))


@pytest.mark.parametrize("fresh", [True, False])
def test_a_sparse_terabyte_is_planned_in_runs_of_zero_chunks(fresh: bool) -> None:
    src = _HugeSparse()
    dst = _RecordingTarget(src.size, fresh)
    out = full_copy(src, dst, options=CopyOptions(in_flight=4))
    nchunks = src.size // (4 << 20)
    assert out.stats.chunks_planned == out.stats.chunks_done == nchunks
    assert out.stats.chunks_written == 3 and out.stats.bytes_read == 3 * 70000  # the data ranges only
    data_chunks = {off // (4 << 20) for off in src.pieces}
    assert all((d == "0") != (i in data_chunks) for i, d in enumerate(out.manifest.chunks))
    for off, blob in src.pieces.items():  # the data landed where it belongs
        assert any(o <= off and off + len(blob) <= o + len(b) and b[off - o : off - o + len(blob)] == blob
                   for o, b in dst.blobs.items())
    if fresh:
        assert out.stats.chunks_skipped == nchunks - 3 and dst.zeroes == []
    else:  # the holes are zeroed a run at a time, never chunk by chunk
        assert out.stats.chunks_zeroed == nchunks - 3
        assert sum(n for _, n in dst.zeroes) == src.size - 3 * (4 << 20) and len(dst.zeroes) <= nchunks // 256 + 6


class _SlowMap(MemSource):
    """A map that arrives slowly, extent by extent, like a remote map far away."""

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        for ext in super().extents(offset, length):
            time.sleep(0.01)
            yield ext


def test_a_resumed_copy_never_checkpoints_below_the_watermark_it_resumed_from() -> None:
    """While the planner still walks the resumed units below the loaded watermark, a checkpoint must not
    move the watermark back (a second interruption would copy those chunks again)."""
    disk = _disk()
    dst = MemTarget(disk.size)
    store = MemoryCheckpointStore()
    src = SlowMapSource(disk, split=disk.size, fail_at=30 * CS, fail=TransportError("broke", transient=False),
                        target=dst, writes_before_fail=3)
    with pytest.raises(TransportError):
        full_copy(src, dst, options=CopyOptions(chunk_size=CS, in_flight=2), checkpointer=Checkpointer(store, "k", {}))
    loaded = store.get_checkpoint("k")
    assert loaded is not None and loaded["watermark"] > 0
    saved: list[int] = []
    real_put = store.put_checkpoint

    def spy(key: str, data: dict[str, object]) -> None:
        saved.append(int(data["watermark"]))  # type: ignore[call-overload]
        real_put(key, data)

    store.put_checkpoint = spy  # type: ignore[method-assign]
    slow = _SlowMap(disk.data, disk._extents)
    full_copy(slow, dst, options=CopyOptions(chunk_size=CS, in_flight=2, checkpoint_seconds=0.001),
              checkpointer=Checkpointer(store, "k", {}), resume=True)
    assert dst.data == disk.data
    assert len(saved) >= 3 and min(saved) >= loaded["watermark"], (loaded["watermark"], saved)


def test_an_invalid_map_says_whether_anything_was_copied() -> None:
    """A map read whole before the work (verify, a change list) stopped nothing half-way; a streamed one did."""
    from scmt_cli.blocks.api import changed_copy, plan_list

    outside = [Extent(0, 8 * CS, "data")]  # a 4-chunk disk

    class Bad(MemSource):
        def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
            yield from outside  # as a buggy server sends it, unclipped

    bad = Bad(bytes(4 * CS))
    with pytest.raises(TransportError) as listed:
        plan_list(bad, CS)
    with pytest.raises(TransportError) as changed:
        changed_copy(bad, MemTarget(4 * CS), outside, options=CopyOptions(chunk_size=CS))
    with pytest.raises(TransportError) as streamed:
        full_copy(bad, MemTarget(4 * CS), options=CopyOptions(chunk_size=CS))
    for err in (listed, changed):
        assert "returned an invalid" in err.value.message and "nothing was copied or checked" in (err.value.hint or "")
    assert "the copy stopped there" in (streamed.value.hint or "")
