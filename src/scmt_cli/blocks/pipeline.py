"""The copy engine's worker threads: one planner, ``in_flight`` readers, a few writers.

Used only by :func:`scmt_cli.blocks.engine.copy_chunks`, which owns the
contracts; this module is how they are carried out.

* The **planner** iterates the plan (a list, or a stream computed from a
  remote allocation map while the copy runs), checks every chunk against the
  grid, numbers it (its *position*), registers it in :attr:`_Pipeline.chunk_at`
  and hands it to the readers through a bounded queue; chunks below the
  resume watermark go straight to the caller as ``resumed``, and so do zero
  chunks that need no I/O (``skip`` on a fresh target, ``unchanged`` against
  the base): a sparse 1 TiB disk is 262144 chunks, mostly those.  On a fresh
  target it reserves each data chunk's data ranges before handing it over
  (``preallocate``, a best-effort speed hint).
* **Readers** read a data chunk into one of ``in_flight`` preallocated
  buffers, detect zeroes, hash, and queue it for the writers; zero chunks
  need no buffer.
* **Writers** write (or zero, or skip) and give the buffer back.

Everything that completes goes to :attr:`_Pipeline.done` as
``(position, action, digest, bytes_written)``; the planner's last message is
:class:`PlanEnd`; any exception a worker raises goes there too (then every
worker stops).
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from scmt_cli.blocks.digest import ZERO, Manifest, digest, is_zero, zero_runs
from scmt_cli.blocks.plan import MAX_CHUNK_SIZE, Chunk, ZeroRun
from scmt_cli.errors import InternalError
from scmt_cli.transports.base import BlockSource, BlockTarget

Action = Literal["write", "zeroes", "skip", "unchanged", "resumed"]
_POLL = 0.1
_ZERO_VIEW = memoryview(bytes(MAX_CHUNK_SIZE))
_PAGE = 4096
#: How many planned chunks the planner may keep ready ahead of the readers.
PLAN_AHEAD = 1024
#: Zero chunks zeroed with one ``write_zeroes`` on a non-fresh target, at most (a checkpoint's granularity).
ZEROES_RUN = 256


@dataclass(frozen=True)
class PlanEnd:
    """The planner's last message: the plan yielded ``count`` chunks in ``units`` positions, in ``seconds``."""

    count: int
    units: int
    seconds: float


class Buffer:
    """One chunk buffer: ``size`` page-aligned bytes (O_DIRECT needs alignment) at ``raw[base:]``.

    ``dirty`` lists the ranges (relative to ``base``) that may hold bytes of an
    earlier chunk; everything else reads as zero.  :meth:`prepare` zeroes only
    what the next chunk will not read over, so a mostly-hole chunk does not
    cost a 4 MiB memset under the GIL; large ranges are zeroed by libc's
    ``memset`` through ctypes, which releases the GIL.
    """

    def __init__(self, size: int) -> None:
        self.raw = bytearray(size + _PAGE)
        self._pin = ctypes.c_char.from_buffer(self.raw)  # keeps the address valid (no resize) while it lives
        addr = ctypes.addressof(self._pin)
        self.base = (-addr) % _PAGE
        self.addr = addr + self.base
        self.size = size
        self.dirty: tuple[tuple[int, int], ...] = ()

    def view(self, length: int) -> memoryview:
        return memoryview(self.raw)[self.base : self.base + length]

    def prepare(self, ranges: tuple[tuple[int, int], ...]) -> None:
        """Make every byte outside ``ranges`` zero (``ranges`` will be read over); they become ``dirty``."""
        for lo, hi in _minus(self.dirty, ranges):
            if hi - lo >= _MEMSET_MIN:
                ctypes.memset(self.addr + lo, 0, hi - lo)
            else:
                self.raw[self.base + lo : self.base + hi] = _ZERO_VIEW[: hi - lo]
        self.dirty = ranges


_MEMSET_MIN = 64 * 1024


def _minus(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """The parts of the sorted, disjoint ranges ``a`` outside the sorted, disjoint ranges ``b``."""
    out: list[tuple[int, int]] = []
    k = 0
    for lo, hi in a:
        while k < len(b) and b[k][1] <= lo:
            k += 1
        j = k
        while lo < hi and j < len(b) and b[j][0] < hi:
            if b[j][0] > lo:
                out.append((lo, b[j][0]))
            lo = max(lo, b[j][1])
            j += 1
        if lo < hi:
            out.append((lo, hi))
    return out


class _Stop(Exception):
    """Internal: a worker noticed the stop flag."""


Unit = Chunk | ZeroRun  # what a position stands for
WorkItem = tuple[int, Unit, Action, memoryview | None, str, Buffer | None]
DoneItem = tuple[int, Action, str | None, int] | PlanEnd | BaseException


class _Pipeline:
    def __init__(self, source: BlockSource, target: BlockTarget, plan: Iterable[Unit], *, chunk_size: int,
                 in_flight: int, writers: int, sparse_block: int, nchunks: int, base: Manifest | None,
                 fresh: bool, watermark: int) -> None:
        self.source = source
        self.target = target
        self.size = source.size
        self.plan = plan
        self.chunk_size = chunk_size
        self.in_flight = in_flight
        self.sparse_block = sparse_block
        self.nchunks = nchunks
        self.base = base
        self.fresh = fresh
        self.watermark = watermark
        # Zero runs inside data chunks of a non-fresh target are punched rather than written when
        # the target's write_zeroes deallocates (so a resumed copy ends as sparse as a clean one).
        self.punch = target.punches_holes
        self.stop = threading.Event()
        self.src_lock = None if source.thread_safe else threading.Lock()
        self.dst_lock = None if target.thread_safe else threading.Lock()
        self.nreaders = in_flight if source.thread_safe else 1
        self.nwriters = max(1, writers) if target.thread_safe else 1
        self.pool: queue.Queue[Buffer] = queue.Queue()  # buffers are made on first need, in_flight at most
        self.buffers = 0
        self.buffers_lock = threading.Lock()
        self.todo: queue.Queue[tuple[int, Unit] | None] = queue.Queue(maxsize=PLAN_AHEAD)
        self.work: queue.Queue[WorkItem | None] = queue.Queue(maxsize=in_flight)
        self.done: queue.SimpleQueue[DoneItem] = queue.SimpleQueue()
        #: position -> unit for every unit the planner numbered (the caller removes completed ones)
        self.chunk_at: dict[int, Unit] = {}
        self.planned = 0  # positions numbered so far
        self.plan_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.readers_left = self.nreaders
        self.readers_lock = threading.Lock()

    # -- helpers --------------------------------------------------------------
    def _get(self, q: queue.Queue[Any]) -> Any:
        while True:
            if self.stop.is_set():
                raise _Stop
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue

    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Stop
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _decide(self, index: int, d: str) -> Action:
        if self.base is not None and self.base.chunks[index] == d:
            return "unchanged"
        if d == ZERO:
            return "skip" if self.fresh else "zeroes"
        return "write"

    def _fail(self, exc: BaseException) -> None:
        self.done.put(exc)
        self.stop.set()

    # -- planner ----------------------------------------------------------------
    def planner(self) -> None:
        t0 = time.monotonic()
        reserve = _Reserver(self) if self.fresh else None
        last = -1
        seen = 0  # grid chunks in the units so far
        it = iter(self.plan)
        try:
            while True:
                if self.stop.is_set():
                    raise _Stop
                with self.src_lock or contextlib.nullcontext():  # the map comes from the source too
                    unit = next(it, None)
                if unit is None:
                    break
                self._check_grid(unit, last)
                last = unit.index + unit.count - 1
                seen += unit.count
                if unit.index < self.watermark:
                    below, rest = unit.split(self.watermark, self.chunk_size) if isinstance(unit, ZeroRun) \
                        else (unit, None)
                    assert below is not None
                    self.done.put((self._register(below), "resumed", None, 0))
                    if rest is None:
                        continue
                    unit = rest
                if unit.kind == "zero":
                    if reserve is not None:
                        reserve.flush()  # a gap: the run before it is complete
                    for part, action in self._zero_parts(unit):
                        pos = self._register(part)
                        if action == "zeroes":
                            self._put(self.todo, (pos, part))
                        else:  # nothing to read or write: done here, without a trip through the workers
                            self.done.put((pos, action, ZERO, 0))
                elif reserve is not None and reserve.active and isinstance(unit, Chunk):
                    reserve.add(self._register(unit), unit)
                else:
                    self._put(self.todo, (self._register(unit), unit))
            if reserve is not None:
                reserve.flush()
            self.done.put(PlanEnd(seen, self.planned, time.monotonic() - t0))
        except _Stop:
            pass
        except BaseException as exc:  # travels to the caller
            self._fail(exc)
        finally:
            for _ in range(self.nreaders):
                try:
                    self._put(self.todo, None)
                except _Stop:
                    break

    def _register(self, unit: Unit) -> int:
        """Number ``unit`` (its position) and make it known to the caller before any news of it."""
        with self.plan_lock:
            pos = self.planned
            self.chunk_at[pos] = unit
            self.planned = pos + 1
        return pos

    def _check_grid(self, unit: Unit, last: int) -> None:
        cs = self.chunk_size
        if (unit.index <= last or unit.count < 1 or unit.index + unit.count > self.nchunks
                or unit.offset != unit.index * cs):
            raise InternalError(f"chunk {unit.index} at {unit.offset} is not on the plan grid "
                                f"(after chunk {last}, {self.nchunks} chunks of {cs} bytes)")

    def _zero_parts(self, unit: Unit) -> Iterator[tuple[Unit, Action]]:
        """``unit`` (zero) cut where the action changes (against the base), zeroing at most ZEROES_RUN chunks each."""
        first = unit.index
        stop = unit.index + unit.count
        while first < stop:
            action = self._decide(first, ZERO)
            end = first + 1
            limit = min(stop, first + ZEROES_RUN) if action == "zeroes" else stop
            while end < limit and (self.base is None or self._decide(end, ZERO) == action):
                end += 1
            if first == unit.index and end == stop:
                yield unit, action
            else:
                off = first * self.chunk_size
                yield ZeroRun(first, end - first, off, min(end * self.chunk_size, self.size) - off), action
            first = end

    # -- readers ----------------------------------------------------------------
    def reader(self) -> None:
        try:
            while True:
                item = self._get(self.todo)
                if item is None:
                    return
                pos, chunk = item
                if not isinstance(chunk, Chunk) or chunk.kind == "zero":  # only zero units to zero come here
                    self._put(self.work, (pos, chunk, "zeroes", None, ZERO, None))
                    continue
                buf = self._buffer()
                view = buf.view(chunk.length)
                try:
                    self._read(chunk, buf, view)
                    # only what was read can be non-zero: the rest of the buffer is zero (Buffer.prepare)
                    zero = all(is_zero(buf.raw, buf.base + lo, buf.base + hi) for lo, hi in buf.dirty)
                    d = ZERO if zero else digest(view)
                except BaseException:
                    view.release()
                    self.pool.put(buf)
                    raise
                self._put(self.work, (pos, chunk, self._decide(chunk.index, d), view, d, buf))
        except _Stop:
            return
        except BaseException as exc:  # travels to the caller
            self._fail(exc)
        finally:
            with self.readers_lock:
                self.readers_left -= 1
                last = self.readers_left == 0
            if last:
                for _ in range(self.nwriters):
                    try:
                        self._put(self.work, None)
                    except _Stop:
                        break

    def _buffer(self) -> Buffer:
        """A free buffer; a new one while fewer than ``in_flight`` exist (a small copy allocates few)."""
        try:
            return self.pool.get_nowait()
        except queue.Empty:
            pass
        with self.buffers_lock:
            make = self.buffers < self.in_flight
            self.buffers += make
        return Buffer(self.chunk_size) if make else self._get(self.pool)

    def _read(self, chunk: Chunk, buf: Buffer, view: memoryview) -> None:
        """Fill ``view`` with the chunk: its data ranges from the source, zeroes elsewhere.

        A chunk of several ranges goes to the source's ``readinto_many`` in one
        call, so a transport that pipelines (NBD) keeps their requests in flight
        together; the others read them one by one.
        """
        ranges = chunk.ranges or ((0, chunk.length),)
        buf.prepare(ranges)
        with self.src_lock or contextlib.nullcontext():
            if len(ranges) > 1:
                self.source.readinto_many([(chunk.offset + start, view[start:end]) for start, end in ranges])
            else:
                start, end = ranges[0]
                self.source.readinto(chunk.offset + start, view[start:end])

    # -- writers ----------------------------------------------------------------
    def writer(self) -> None:
        try:
            while True:
                item = self._get(self.work)
                if item is None:
                    return
                pos, chunk, action, view, d, buf = item
                try:
                    written = self._write(chunk, action, view, buf)
                finally:
                    if view is not None:
                        view.release()
                    if buf is not None:
                        self.pool.put(buf)
                self.done.put((pos, action, d, written))
        except _Stop:
            return
        except BaseException as exc:
            self._fail(exc)

    def _write(self, chunk: Unit, action: Action, view: memoryview | None, buf: Buffer | None) -> int:
        if action in ("skip", "unchanged"):
            return 0
        with self.dst_lock or contextlib.nullcontext():
            if action == "zeroes":
                self.target.write_zeroes(chunk.offset, chunk.length)
                return 0
            assert view is not None and isinstance(chunk, Chunk)
            if not self.fresh and not self.punch:
                self.target.write(chunk.offset, view)
                return chunk.length
            written = 0
            assert buf is not None
            for start, end, zero in zero_runs(buf.raw, buf.base, chunk.length, self.sparse_block, buf.dirty):
                if not zero:
                    self.target.write(chunk.offset + start, view[start:end])
                    written += end - start
                elif not self.fresh:  # the target may hold old bytes here: punch, never skip
                    self._punch(chunk, start, end)
            # A non-fresh chunk was brought up to date over its whole length (written or punched):
            # it counts as written in full (status shows it as sync bytes).
            return written if self.fresh else chunk.length

    def _punch(self, chunk: Chunk, start: int, end: int) -> None:
        """Zero ``[start, end)`` of ``chunk`` on a non-fresh target by deallocating it.

        Where the source's map says data, the range is then reserved again
        (best effort, as :class:`_Reserver` does on a fresh target), so the
        target's allocation mirrors the source's exactly as a clean copy's does.
        """
        self.target.write_zeroes(chunk.offset + start, end - start)
        for lo, hi in chunk.data_ranges:
            lo, hi = max(lo, start), min(hi, end)
            if lo < hi and not self.target.preallocate(chunk.offset + lo, hi - lo):
                return

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        self.threads.append(threading.Thread(target=self.planner, name="scmt-plan", daemon=True))
        for i in range(self.nreaders):
            self.threads.append(threading.Thread(target=self.reader, name=f"scmt-read-{i}", daemon=True))
        for i in range(self.nwriters):
            self.threads.append(threading.Thread(target=self.writer, name=f"scmt-write-{i}", daemon=True))
        for t in self.threads:
            t.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop and join the workers; a worker stuck in I/O longer than ``timeout`` is abandoned (daemon)."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


class _Reserver:
    """The planner's preallocation on a fresh target: the source's data extents, reserved before they are read.

    Best effort (only targets whose ``preallocate`` answers True take part;
    file targets: see :meth:`FileTarget.preallocate`): the data ranges of
    consecutive chunks are merged into runs, exactly the source's data
    extents (so the target stays as sparse as the source), and each run is
    reserved before the chunks in it go to the readers; a run is cut at
    :attr:`RUN_CAP` so the readers never wait long.  A False answer or any
    failure ends the hint: the writes report real errors themselves.
    """

    RUN_CAP = 64 * 1024 * 1024

    def __init__(self, pipe: _Pipeline) -> None:
        self.pipe = pipe
        self.active = True
        self.run: tuple[int, int] | None = None
        self.held: list[tuple[int, Chunk]] = []

    def add(self, pos: int, chunk: Chunk) -> None:
        """Hold data chunk ``chunk`` (at ``pos``) until the run its data ranges end in is reserved."""
        for lo, hi in chunk.data_ranges:
            lo, hi = chunk.offset + lo, chunk.offset + hi
            if self.run is not None and self.run[1] == lo:
                self.run = (self.run[0], hi)
            else:
                self.flush()
                self.run = (lo, hi)
        self.held.append((pos, chunk))
        if self.run is None or self.run[1] - self.run[0] >= self.RUN_CAP:
            self.flush()

    def flush(self) -> None:
        """Reserve the current run, then hand every held chunk to the readers."""
        run, self.run = self.run, None
        if run is not None and self.active:
            pipe = self.pipe
            try:
                with pipe.dst_lock or contextlib.nullcontext():
                    self.active = pipe.target.preallocate(run[0], run[1] - run[0])
            except Exception:  # noqa: BLE001 - an optimisation only
                self.active = False
        held, self.held = self.held, []
        for item in held:
            self.pipe._put(self.pipe.todo, item)
