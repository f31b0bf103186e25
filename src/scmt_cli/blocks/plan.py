"""Finding the data: turn a source's extents into an aligned chunk plan.

The plan is separate from the copy (as in bmaptool): it is computed from the
allocation map only, never from the bytes.  A disk of ``size`` bytes is cut on
a fixed grid of ``chunk_size`` bytes; chunk ``i`` covers
``[i * chunk_size, min((i + 1) * chunk_size, size))``.  A chunk is

* ``data`` when any byte of it lies in a ``data`` extent (the whole chunk is
  read; the engine then checks whether the bytes read are zero), or
* ``zero`` when the allocation map says every byte of it reads as zero
  (``zero`` or ``hole`` extents): it is never read.

Because the grid is fixed, the same disk always gives the same chunk indices,
which is what lets manifests, checkpoints and incremental copies refer to
chunks by index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from scmt_cli.errors import UsageError
from scmt_cli.transports.base import Extent, ExtentKind

MiB = 1024 * 1024
DEFAULT_CHUNK_SIZE = 4 * MiB
MIN_CHUNK_SIZE = 1 * MiB
MAX_CHUNK_SIZE = 8 * MiB
#: Chunk sizes must be a multiple of this (covers 4 KiB sectors and O_DIRECT).
CHUNK_ALIGN = 64 * 1024

ChunkKind = Literal["data", "zero"]


#: Data ranges of a chunk closer than this are read with one request.
READ_MERGE_GAP = 256 * 1024

Ranges = tuple[tuple[int, int], ...]


class ExtentMapError(ValueError):
    """An allocation map (or change list) that breaks the extent contract.

    Raised by the planners for extents that overlap, come out of order or lie
    outside the disk.  The message names the offending extent; callers know
    where the map came from and turn this into an :class:`~scmt_cli.errors.ScmtError`
    naming the source (a ValueError subclass so direct library callers keep working).
    """

    def __init__(self, message: str, extent: Extent) -> None:
        super().__init__(message)
        self.extent = extent


def _show(ext: Extent) -> str:
    return f"{ext.kind} extent at offset {ext.offset} (length {ext.length})"


@dataclass(frozen=True, slots=True)
class Chunk:
    """One grid cell of the plan: ``index`` on the grid, its byte range and kind.

    ``ranges`` (data chunks only) lists the ``(start, end)`` byte ranges,
    relative to ``offset``, that the allocation map says hold data; the rest
    of the chunk reads as zeroes and need not be read.  ``None`` means "read
    the whole chunk".  Ranges closer than ``READ_MERGE_GAP`` are merged for
    reading; ``allocated`` then keeps the map's exact data ranges (``None``:
    the same as ``ranges``), which the engine uses to mirror the source's
    allocation on the target.  It takes no part in comparisons.
    """

    index: int
    offset: int
    length: int
    kind: ChunkKind
    ranges: Ranges | None = None
    allocated: Ranges | None = field(default=None, compare=False)

    @property
    def data_ranges(self) -> Ranges:
        """The exact ranges the allocation map says hold data (the whole chunk when unknown)."""
        return self.allocated or self.ranges or ((0, self.length),)

    @property
    def count(self) -> int:
        """Grid chunks this is (as for :class:`ZeroRun`): one."""
        return 1

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, slots=True)
class ZeroRun:
    """``count`` consecutive zero chunks from grid index ``index``: ``[offset, offset+length)`` reads as zeroes.

    A streamed plan gives a hole as one of these instead of one :class:`Chunk`
    per grid cell (a sparse 1 TiB disk is 262144 chunks), so the engine spends
    nothing per empty chunk.
    """

    index: int
    count: int
    offset: int
    length: int
    kind: ChunkKind = "zero"

    @property
    def end(self) -> int:
        return self.offset + self.length

    def chunks(self, size: int, chunk_size: int) -> Iterator[Chunk]:
        """The run as zero chunks of the grid of ``chunk_size`` over ``size`` bytes."""
        for i in range(self.index, self.index + self.count):
            off, length = chunk_range(i, size, chunk_size)
            yield Chunk(i, off, length, "zero")

    def split(self, at: int, chunk_size: int) -> tuple[ZeroRun | None, ZeroRun | None]:
        """The parts below and from grid index ``at`` (None where empty)."""
        if at <= self.index:
            return None, self
        if at >= self.index + self.count:
            return self, None
        cut = at * chunk_size
        return (ZeroRun(self.index, at - self.index, self.offset, cut - self.offset),
                ZeroRun(at, self.index + self.count - at, cut, self.end - cut))


@dataclass(frozen=True)
class ChunkPlan:
    """A plan that may still be in the making: ``chunks`` is iterated once, by the copy engine.

    ``count`` and ``nbytes`` say how many grid chunks (and bytes) it will
    yield in all, a :class:`ZeroRun` counting as its chunks; the engine
    checks the count at the end.  :func:`plan_units` behind a remote source's
    allocation map is the typical ``chunks``: the copy starts with the first
    extents instead of waiting for the whole map.
    """

    chunks: Iterable[Chunk | ZeroRun]
    count: int
    nbytes: int


def check_chunk_size(chunk_size: int) -> int:
    """Return ``chunk_size`` if it is valid (1-8 MiB, a multiple of 64 KiB), else raise UsageError."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE or chunk_size % CHUNK_ALIGN:
        raise UsageError(
            f"chunk size {chunk_size} bytes is not allowed: expected 1 MiB to 8 MiB, a multiple of 64 KiB"
        )
    return chunk_size


def chunk_count(size: int, chunk_size: int) -> int:
    """Number of grid chunks of a disk of ``size`` bytes."""
    return (size + chunk_size - 1) // chunk_size


def chunk_range(index: int, size: int, chunk_size: int) -> tuple[int, int]:
    """``(offset, length)`` of grid chunk ``index``."""
    offset = index * chunk_size
    return offset, min(chunk_size, size - offset)


def coalesce(extents: Iterable[Extent]) -> Iterator[Extent]:
    """Merge adjacent extents of the same class (``data`` vs zero-reading).

    ``zero`` and ``hole`` both read as zeroes, so they merge into one ``zero``
    extent; empty extents are dropped.  Input must be sorted and non-overlapping
    (as :meth:`BlockSource.extents` guarantees); output is too.
    """
    cur: Extent | None = None
    for ext in extents:
        if ext.length <= 0:
            continue
        kind: ExtentKind = "data" if ext.kind == "data" else "zero"
        if cur is not None:
            if ext.offset < cur.end:
                raise ExtentMapError(
                    f"{_show(ext)} starts before the previous extent ends at offset {cur.end} "
                    "(extents overlap or are out of order)", ext)
            if ext.offset == cur.end and cur.kind == kind:
                cur = Extent(cur.offset, cur.length + ext.length, kind)
                continue
            yield cur
        cur = Extent(ext.offset, ext.length, kind)
    if cur is not None:
        yield cur


def data_chunk_indices(extents: Iterable[Extent], chunk_size: int) -> Iterator[int]:
    """Indices of grid chunks touched by a ``data`` extent, ascending, each once."""
    last = -1
    for ext in coalesce(extents):
        if ext.kind != "data":
            continue
        first = max(ext.offset // chunk_size, last + 1)
        stop = (ext.end - 1) // chunk_size
        yield from range(first, stop + 1)
        last = max(last, stop)


def plan_chunks(extents: Iterable[Extent], size: int, chunk_size: int) -> list[Chunk]:
    """The full plan as a list (see :func:`iter_plan`)."""
    return list(iter_plan(extents, size, chunk_size))


def iter_plan(extents: Iterable[Extent], size: int, chunk_size: int) -> Iterator[Chunk]:
    """The full plan, streamed: every grid chunk of ``[0, size)`` exactly once, in order.

    :func:`plan_units` with each :class:`ZeroRun` given as its zero chunks.
    """
    for unit in plan_units(extents, size, chunk_size):
        if isinstance(unit, ZeroRun):
            yield from unit.chunks(size, chunk_size)
        else:
            yield unit


def plan_units(extents: Iterable[Extent], size: int, chunk_size: int) -> Iterator[Chunk | ZeroRun]:
    """The full plan, streamed: data chunks, and runs of zero chunks as one :class:`ZeroRun` each.

    Together they cover every grid index of ``[0, size)`` exactly once, in
    order.  A chunk is yielded as soon as the extents read so far describe all
    of it (an extent reaching its end), so a consumer can copy the first
    chunks while the rest of a remote allocation map is still being fetched;
    only the chunk the last extent ends in is held back.  ``extents`` must
    cover ``[0, size)`` (data outside the map is not expected; any part of the
    disk not covered by an extent is treated as zero, which is what
    :class:`BlockSource` implementations promise for holes).  An extent that
    breaks the contract raises :class:`ExtentMapError` when it is reached:
    the chunks before it have been yielded by then.
    """
    nchunks = chunk_count(size, chunk_size)
    nxt = 0  # next grid index to yield
    ranges: dict[int, list[tuple[int, int]]] = {}  # data ranges of chunks not yet yielded (merged for reading)
    exact: dict[int, list[tuple[int, int]]] = {}  # the map's exact data ranges of the same chunks

    def upto(stop: int) -> Iterator[Chunk | ZeroRun]:
        """Yield grid indices ``nxt .. stop-1``, all described whole by now."""
        nonlocal nxt
        while nxt < stop:
            i = nxt
            r = ranges.pop(i, None)
            if r is None:  # zero up to the next chunk holding data (ranges holds only a few)
                end = min([stop, *(k for k in ranges if k > i)])
                nxt = end
                yield ZeroRun(i, end - i, i * chunk_size, min(end * chunk_size, size) - i * chunk_size)
                continue
            off, length = chunk_range(i, size, chunk_size)
            e = exact.pop(i)
            nxt = i + 1
            yield Chunk(i, off, length, "data", None if r == [(0, length)] else tuple(r), None if e == r else tuple(e))

    for ext in _in_order(_inside(extents, size)):  # not merged first: that would hold back each extent
        if ext.kind == "data":
            for i in range(ext.offset // chunk_size, (ext.end - 1) // chunk_size + 1):
                yield from upto(i)  # every chunk before i is described whole: the map is sorted
                base = i * chunk_size
                start = max(ext.offset, base) - base
                end = min(ext.end, base + chunk_size, size) - base
                ex = exact.setdefault(i, [])
                if ex and ex[-1][1] == start:  # adjacent data extents: one range, as merged extents give
                    ex[-1] = (ex[-1][0], end)
                else:
                    ex.append((start, end))
                lst = ranges.setdefault(i, [])
                if lst and start - lst[-1][1] < READ_MERGE_GAP:
                    lst[-1] = (lst[-1][0], end)
                else:
                    lst.append((start, end))
        yield from upto(nchunks if ext.end >= size else ext.end // chunk_size)  # chunks ending by this extent's end
    yield from upto(nchunks)


def _in_order(extents: Iterable[Extent]) -> Iterator[Extent]:
    """Pass the non-empty ``extents`` through, raising ExtentMapError for one that overlaps or goes back."""
    end: int | None = None
    for ext in extents:
        if ext.length <= 0:
            continue
        if end is not None and ext.offset < end:
            raise ExtentMapError(
                f"{_show(ext)} starts before the previous extent ends at offset {end} "
                "(extents overlap or are out of order)", ext)
        end = ext.end
        yield ext


def _inside(extents: Iterable[Extent], size: int) -> Iterator[Extent]:
    """Pass ``extents`` through, raising ExtentMapError for a non-empty one outside ``[0, size)``."""
    for ext in extents:
        if ext.length > 0 and (ext.offset < 0 or ext.end > size):
            raise ExtentMapError(f"{_show(ext)} lies outside the disk ({size} bytes)", ext)
        yield ext


def plan_changed(changed: Iterable[Extent], size: int, chunk_size: int) -> list[Chunk]:
    """A plan restricted to chunks overlapping ``changed`` (a CBT change list).

    A chunk is ``data`` if any changed ``data`` extent touches it, ``zero`` if
    only changed ``zero``/``hole`` extents touch it *and* they cover it whole
    (it is then zeroed on the target without reading the source); a chunk only
    partly covered by zero extents is read, because its other bytes keep their
    old contents.  Extents may overlap and come in any order; extents past
    ``size`` are an error.  Runs in O(extents log extents + chunks touched).
    """
    exts = sorted((e for e in changed if e.length > 0), key=lambda e: e.offset)
    kinds: dict[int, ChunkKind] = {}
    zero_spans: list[tuple[int, int]] = []  # union of zero/hole extents
    for ext in exts:
        if ext.offset < 0 or ext.end > size:
            raise ExtentMapError(f"changed {_show(ext)} lies outside the disk ({size} bytes)", ext)
        for i in range(ext.offset // chunk_size, (ext.end - 1) // chunk_size + 1):
            if ext.kind == "data":
                kinds[i] = "data"
            else:
                kinds.setdefault(i, "zero")
        if ext.kind != "data":
            if zero_spans and ext.offset <= zero_spans[-1][1]:
                zero_spans[-1] = (zero_spans[-1][0], max(zero_spans[-1][1], ext.end))
            else:
                zero_spans.append((ext.offset, ext.end))
    covered: dict[int, int] = {}
    for start, end in zero_spans:
        for i in range(start // chunk_size, (end - 1) // chunk_size + 1):
            lo, hi = max(start, i * chunk_size), min(end, (i + 1) * chunk_size)
            covered[i] = covered.get(i, 0) + hi - lo
    out = []
    for i in sorted(kinds):
        off, length = chunk_range(i, size, chunk_size)
        kind = kinds[i]
        if kind == "zero" and covered.get(i, 0) < length:
            kind = "data"
        out.append(Chunk(i, off, length, kind))
    return out


def plan_bytes(chunks: Iterable[Chunk], kind: ChunkKind | None = None) -> int:
    """Total bytes of ``chunks`` (of one ``kind`` if given)."""
    return sum(c.length for c in chunks if kind is None or c.kind == kind)


def validate_extents(extents: list[Extent], offset: int, length: int) -> None:
    """Raise ValueError unless ``extents`` cover ``[offset, offset+length)`` exactly, in order."""
    pos = offset
    for ext in extents:
        if ext.offset != pos or ext.length <= 0:
            raise ValueError(f"extent at {ext.offset} (length {ext.length}) does not continue at {pos}")
        pos = ext.end
    if pos != offset + length:
        raise ValueError(f"extents end at {pos}, expected {offset + length}")


__all__ = [
    "CHUNK_ALIGN",
    "DEFAULT_CHUNK_SIZE",
    "ExtentMapError",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "Chunk",
    "ChunkPlan",
    "ZeroRun",
    "check_chunk_size",
    "chunk_count",
    "chunk_range",
    "coalesce",
    "data_chunk_indices",
    "iter_plan",
    "plan_bytes",
    "plan_changed",
    "plan_units",
    "plan_chunks",
    "validate_extents",
]
