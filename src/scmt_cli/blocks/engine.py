"""Copying the data: a bounded, pipelined, checkpointed chunk copier.

Shape (as in bmaptool): reader threads take planned chunks in order, read them
into one of ``in_flight`` preallocated buffers, detect zeroes, hash, and put
the chunk on a bounded queue; writer threads write it (or zero it, or skip
it) and return the buffer.  Peak memory is therefore ``in_flight x
chunk_size`` whatever the disk size.  The calling thread only coordinates:
it collects completions, reports progress, commits checkpoints and is where
``KeyboardInterrupt`` / ``TerminatedSignal`` land.

Contracts:

* every planned chunk is accounted for exactly once (written, zeroed,
  skipped as zero on a fresh target, unchanged against a base manifest, or
  done before a resume); the engine checks the count at the end and raises
  InternalError otherwise;
* an exception in any worker stops the pipeline and is re-raised in the
  caller; a BaseException in the caller (SIGINT/SIGTERM) stops it too;
* whenever the copy stops before the end, a final checkpoint is written (if
  a checkpointer was given and the target could be flushed), then the
  exception propagates unchanged;
* checkpoints are written only after ``target.flush()``, so a checkpoint
  never claims data that is not durable; the checkpoint's ``fresh`` flag is
  cleared before the first write, so a resume rewrites every chunk at or
  above the watermark (zero chunks included) instead of assuming the
  target still reads as zeroes there;
* data chunks are written sparsely: on a fresh target their all-zero
  ``sparse_block`` runs are skipped; on a non-fresh target whose
  ``punches_holes`` attribute is true (its ``write_zeroes`` deallocates) they
  are zeroed with ``write_zeroes`` -- never skipped, the target may hold old
  bytes there -- (and re-reserved where the source map says data, like the
  fresh path's preallocation) so a resumed copy ends as sparse as an
  uninterrupted one;
  other non-fresh targets get the whole chunk written;
* on a fresh target that offers ``preallocate``, the source's data extents
  still to copy are reserved first (a best-effort speed hint that changes no
  byte the target reads back).
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from scmt_cli.blocks.checkpoint import Checkpointer
from scmt_cli.blocks.digest import ZERO, Manifest, digest, is_zero, zero_runs
from scmt_cli.blocks.plan import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, Chunk, chunk_count
from scmt_cli.errors import InternalError, ScmtError, SizeMismatchError
from scmt_cli.events import NullReporter, Reporter
from scmt_cli.transports.base import BlockSource, BlockTarget

Action = Literal["write", "zeroes", "skip", "unchanged"]
_POLL = 0.1
_ZERO_VIEW = memoryview(bytes(MAX_CHUNK_SIZE))
_PAGE = 4096


#: Chunks in flight for a source on this host (file://): the disk, not the round trip, sets the pace.
LOCAL_IN_FLIGHT = 4
#: Chunks in flight for a source across a network (NBD, /folder, VDDK, agent): enough requests to keep a
#: link a few milliseconds away busy (measured: see the README's benchmark table), 64 MiB of buffers.
REMOTE_IN_FLIGHT = 16


def default_in_flight(source_url: str) -> int:
    """The in-flight default for a source URL: LOCAL_IN_FLIGHT for file://, REMOTE_IN_FLIGHT otherwise."""
    return LOCAL_IN_FLIGHT if source_url.split(":", 1)[0].lower() == "file" else REMOTE_IN_FLIGHT


@dataclass(frozen=True)
class CopyOptions:
    """Tuning knobs.  ``in_flight`` bounds the chunks held in memory at once."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    in_flight: int = 4
    checkpoint_seconds: float = 5.0
    checkpoint_bytes: int = 1024 * 1024 * 1024
    sparse_block: int = 64 * 1024
    task: str = "copy"
    writers: int = 2  # writer threads (thread-safe targets only): two keep O_DIRECT writes at queue depth 2
    resume_hint: str = "rerun with --resume to continue"  # said after an early stop's final checkpoint


@dataclass
class CopyStats:
    """What a copy did.  Byte counts are exact; times are seconds."""

    size: int = 0
    chunk_size: int = 0
    chunks_planned: int = 0
    chunks_written: int = 0
    chunks_zeroed: int = 0
    chunks_skipped: int = 0
    chunks_unchanged: int = 0
    chunks_resumed: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    bytes_zeroed: int = 0
    bytes_skipped: int = 0
    bytes_unchanged: int = 0
    zero_chunks_detected: int = 0
    checkpoints: int = 0
    plan_seconds: float = 0.0
    copy_seconds: float = 0.0
    verify_seconds: float = 0.0
    verified_chunks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def chunks_done(self) -> int:
        return (self.chunks_written + self.chunks_zeroed + self.chunks_skipped
                + self.chunks_unchanged + self.chunks_resumed)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        secs = self.copy_seconds
        out["read_throughput_bytes_per_s"] = int(self.bytes_read / secs) if secs > 0 else None
        out.update(self.extra)
        return out


@dataclass
class CopyOutcome:
    stats: CopyStats
    manifest: Manifest


def _aligned_buffer(size: int) -> tuple[bytearray, int]:
    """A bytearray and the offset in it where ``size`` page-aligned bytes start (O_DIRECT needs alignment)."""
    raw = bytearray(size + _PAGE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(raw))
    return raw, (-addr) % _PAGE


class _Stop(Exception):
    """Internal: a worker noticed the stop flag."""


class _Pipeline:
    def __init__(self, source: BlockSource, target: BlockTarget, todo: Sequence[Chunk],
                 options: CopyOptions, base: Manifest | None, fresh: bool, stats: CopyStats) -> None:
        self.source = source
        self.target = target
        self.todo = todo
        self.options = options
        self.base = base
        self.fresh = fresh
        # Zero runs inside data chunks of a non-fresh target are punched rather than written when
        # the target's write_zeroes deallocates (so a resumed copy ends as sparse as a clean one).
        self.punch = target.punches_holes
        self.stats = stats
        self.stop = threading.Event()
        self.next_pos = 0
        self.pos_lock = threading.Lock()
        self.src_lock = None if source.thread_safe else threading.Lock()
        self.dst_lock = None if target.thread_safe else threading.Lock()
        self.pool: queue.Queue[tuple[bytearray, int]] = queue.Queue()
        for _ in range(options.in_flight):
            self.pool.put(_aligned_buffer(options.chunk_size))
        self.work: queue.Queue[tuple[int, Chunk, Action, memoryview | None, str, tuple[bytearray, int] | None]] = (
            queue.Queue(maxsize=options.in_flight))
        self.done: queue.SimpleQueue[tuple[int, Action, str, int] | BaseException] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.readers_left = 0
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

    # -- workers --------------------------------------------------------------
    def reader(self) -> None:
        try:
            while True:
                with self.pos_lock:
                    pos = self.next_pos
                    if pos >= len(self.todo):
                        return
                    self.next_pos += 1
                chunk = self.todo[pos]
                if chunk.kind == "zero":
                    self._put(self.work, (pos, chunk, self._decide(chunk.index, ZERO), None, ZERO, None))
                    continue
                buf, base = self._get(self.pool)
                view = memoryview(buf)[base : base + chunk.length]
                try:
                    self._read(chunk, view)
                    d = ZERO if is_zero(buf, base, base + chunk.length) else digest(view)
                except BaseException:
                    view.release()
                    self.pool.put((buf, base))
                    raise
                self._put(self.work, (pos, chunk, self._decide(chunk.index, d), view, d, (buf, base)))
        except _Stop:
            return
        except BaseException as exc:  # travels to the caller
            self.done.put(exc)
            self.stop.set()
        finally:
            with self.readers_lock:
                self.readers_left -= 1
                last = self.readers_left == 0
            if last:
                for _ in range(self._nwriters):
                    try:
                        self._put(self.work, None)
                    except _Stop:
                        break

    def _read(self, chunk: Chunk, view: memoryview) -> None:
        """Fill ``view`` with the chunk: its data ranges from the source, zeroes elsewhere.

        A chunk of several ranges goes to the source's ``readinto_many`` in one
        call, so a transport that pipelines (NBD) keeps their requests in flight
        together; the others read them one by one.
        """
        ranges = chunk.ranges or ((0, chunk.length),)
        pos = 0
        for start, end in ranges:
            if start > pos:
                view[pos:start] = _ZERO_VIEW[: start - pos]
            pos = end
        if pos < chunk.length:
            view[pos : chunk.length] = _ZERO_VIEW[: chunk.length - pos]
        if len(ranges) > 1:
            with self.src_lock or contextlib.nullcontext():
                self.source.readinto_many([(chunk.offset + start, view[start:end]) for start, end in ranges])
            return
        for start, end in ranges:
            self._read_range(chunk.offset + start, view[start:end])

    def _read_range(self, offset: int, view: memoryview) -> None:
        lock = self.src_lock
        if lock is not None:
            lock.acquire()
        try:
            self.source.readinto(offset, view)
        finally:
            if lock is not None:
                lock.release()

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
            self.done.put(exc)
            self.stop.set()

    def _write(self, chunk: Chunk, action: Action, view: memoryview | None,
               buf: tuple[bytearray, int] | None) -> int:
        if action in ("skip", "unchanged"):
            return 0
        lock = self.dst_lock
        if lock is not None:
            lock.acquire()
        try:
            if action == "zeroes":
                self.target.write_zeroes(chunk.offset, chunk.length)
                return 0
            assert view is not None
            if not self.fresh and not self.punch:
                self.target.write(chunk.offset, view)
                return chunk.length
            written = 0
            assert buf is not None
            for start, end, zero in zero_runs(buf[0], buf[1], chunk.length, self.options.sparse_block):
                if not zero:
                    self.target.write(chunk.offset + start, view[start:end])
                    written += end - start
                elif not self.fresh:  # the target may hold old bytes here: punch, never skip
                    self._punch(chunk, start, end)
            # A non-fresh chunk was brought up to date over its whole length (written or punched):
            # it counts as written in full, as before punching existed (status shows it as sync bytes).
            return written if self.fresh else chunk.length
        finally:
            if lock is not None:
                lock.release()

    def _punch(self, chunk: Chunk, start: int, end: int) -> None:
        """Zero ``[start, end)`` of ``chunk`` on a non-fresh target by deallocating it.

        Where the source's map says data, the range is then reserved again
        (best effort, as :func:`_preallocate` does on a fresh target), so the
        target's allocation mirrors the source's exactly as a clean copy's does.
        """
        self.target.write_zeroes(chunk.offset + start, end - start)
        for lo, hi in chunk.data_ranges:
            lo, hi = max(lo, start), min(hi, end)
            if lo < hi and not self.target.preallocate(chunk.offset + lo, hi - lo):
                return

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        nreaders = self.options.in_flight if self.source.thread_safe else 1
        nwriters = max(1, self.options.writers) if self.target.thread_safe else 1
        self._nwriters = nwriters
        self.readers_left = nreaders
        for i in range(nreaders):
            self.threads.append(threading.Thread(target=self.reader, name=f"scmt-read-{i}", daemon=True))
        for i in range(nwriters):
            self.threads.append(threading.Thread(target=self.writer, name=f"scmt-write-{i}", daemon=True))
        for t in self.threads:
            t.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop and join the workers; a worker stuck in I/O longer than ``timeout`` is abandoned (daemon)."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


def copy_chunks(
    source: BlockSource,
    target: BlockTarget,
    chunks: Sequence[Chunk],
    *,
    options: CopyOptions | None = None,
    base: Manifest | None = None,
    fresh: bool | None = None,
    checkpointer: Checkpointer | None = None,
    resume: bool = False,
    reporter: Reporter | None = None,
) -> CopyOutcome:
    """Copy the planned ``chunks`` of ``source`` to ``target``; return statistics and the target's manifest.

    ``chunks`` must be sorted by index and lie on the grid of
    ``options.chunk_size`` over ``source.size`` (see :mod:`scmt_cli.blocks.plan`).
    ``base`` is the manifest the target is known to match before the copy (an
    incremental's previous manifest): chunks whose digest equals the base are
    not written, and unplanned chunks keep the base's digests in the returned
    manifest (``None`` when there is no base).  ``fresh`` (default:
    ``target.fresh``) means the target reads as zeroes, so zero chunks are
    skipped and data chunks are written sparsely.

    With a ``checkpointer``: ``resume=True`` continues from its checkpoint
    (raising InvalidStateError if it was made with other parameters); the
    checkpoint is updated every ``checkpoint_seconds`` or ``checkpoint_bytes``,
    written a last time if the copy stops early, and removed on success.
    """
    opts = options or CopyOptions()
    rep = reporter or NullReporter()
    size = source.size
    if target.size < size:
        raise SizeMismatchError(
            f"target {target.describe()} is smaller than the source: {target.size} < {size} bytes")
    if base is not None and (base.size, base.chunk_size) != (size, opts.chunk_size):
        raise SizeMismatchError(
            f"base manifest describes {base.size} bytes in {base.chunk_size}-byte chunks, "
            f"the source has {size} bytes in {opts.chunk_size}-byte chunks")
    nchunks = chunk_count(size, opts.chunk_size)
    for c in chunks:
        if c.index >= nchunks or c.offset != c.index * opts.chunk_size:
            raise InternalError(f"chunk {c.index} at {c.offset} is not on the plan grid")
    is_fresh = target.fresh if fresh is None else fresh
    manifest = Manifest(size, opts.chunk_size, list(base.chunks) if base else [None] * nchunks)
    stats = CopyStats(size=size, chunk_size=opts.chunk_size, chunks_planned=len(chunks))

    watermark = 0
    digests: dict[int, str | None] = {}
    if checkpointer is not None:
        loaded = checkpointer.load() if resume else None
        if loaded is None:
            checkpointer.clear()
        else:
            watermark, digests, is_fresh = loaded
            rep.log("info", f"resuming from chunk {watermark} of {nchunks}", watermark=watermark)
        # From now on chunks at or above the watermark may hold this run's writes before any checkpoint
        # says so (a crash between a write and its checkpoint; a live source may change before the resume):
        # a resume must rewrite them, zeroes included, so no checkpoint from here on claims a fresh target.
        checkpointer.save(watermark, digests, False)
    todo = [c for c in chunks if c.index >= watermark]
    for c in chunks:
        if c.index < watermark:
            manifest.chunks[c.index] = digests.get(c.index, manifest.chunks[c.index])
    stats.chunks_resumed = len(chunks) - len(todo)
    total = sum(c.length for c in chunks)
    done_bytes = total - sum(c.length for c in todo)

    if is_fresh and todo:
        _preallocate(source, target, todo[0].offset)
    pipe = _Pipeline(source, target, todo, opts, base, is_fresh, stats)
    completed = [False] * len(todo)
    low = 0  # first position in todo not completed
    since_ckpt_bytes = 0
    last_ckpt = last_prog = time.monotonic()
    t0 = time.monotonic()
    finished = False
    rep.progress(opts.task, done_bytes, total)

    def commit() -> None:
        wm = todo[low].index if low < len(todo) else nchunks
        for c in chunks:
            if c.index < wm:
                digests[c.index] = manifest.chunks[c.index]
        if checkpointer is not None:
            checkpointer.save(wm, digests, False)
            stats.checkpoints += 1

    pipe.start()
    try:
        remaining = len(todo)
        while remaining:
            try:
                item = pipe.done.get(timeout=0.25)
            except queue.Empty:
                item = None
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                pos, action, d, written = item
                chunk = todo[pos]
                completed[pos] = True
                remaining -= 1
                manifest.chunks[chunk.index] = d
                _account(stats, chunk, action, d, written)
                done_bytes += chunk.length
                since_ckpt_bytes += chunk.length
                while low < len(todo) and completed[low]:
                    low += 1
            now = time.monotonic()
            if now - last_prog >= 0.1 or not remaining:
                rep.progress(opts.task, done_bytes, total)
                last_prog = now
            if checkpointer is not None and remaining and (
                    now - last_ckpt >= opts.checkpoint_seconds or since_ckpt_bytes >= opts.checkpoint_bytes):
                target.flush()
                commit()
                last_ckpt, since_ckpt_bytes = now, 0
        pipe.shutdown()
        target.flush()
        finished = True
    finally:
        pipe.shutdown()
        stats.copy_seconds = time.monotonic() - t0
        if not finished:
            # Chunks that completed while the error or signal was being handled still count.
            while True:
                try:
                    late = pipe.done.get_nowait()
                except queue.Empty:
                    break
                if isinstance(late, BaseException) or completed[late[0]]:
                    continue
                completed[late[0]] = True
                manifest.chunks[todo[late[0]].index] = late[2]
                _account(stats, todo[late[0]], late[1], late[2], late[3])
            while low < len(todo) and completed[low]:
                low += 1
        if not finished and checkpointer is not None:
            _final_checkpoint(target, commit, rep, opts.resume_hint)
    if stats.chunks_done != stats.chunks_planned:
        raise InternalError(f"copied {stats.chunks_done} chunks but planned {stats.chunks_planned}")
    if checkpointer is not None:
        checkpointer.clear()
    return CopyOutcome(stats, manifest)


def _preallocate(source: BlockSource, target: BlockTarget, start: int) -> None:
    """Best effort: reserve the source's data extents from ``start`` on a fresh target.

    Only targets whose ``preallocate(offset, length)`` answers True take
    part (file targets: see :meth:`FileTarget.preallocate`); exactly the
    source's data extents are reserved, so the target stays as sparse as the
    source.  The allocation map is streamed (memory stays bounded) and any
    failure just ends the hint: the copy itself reports real errors.
    """
    if start >= source.size:
        return
    try:
        for ext in source.extents(start, source.size - start):
            if ext.kind == "data" and ext.length > 0 and not target.preallocate(ext.offset, ext.length):
                return
    except Exception:  # noqa: BLE001,S110 - an optimisation only
        return


def _final_checkpoint(target: BlockTarget, commit: Any, rep: Reporter, hint: str) -> None:
    """Flush and checkpoint after an early stop; never mask the original exception."""
    try:
        target.flush()
        commit()
        rep.log("info", f"progress checkpointed; {hint}")
    except ScmtError as exc:  # the previous checkpoint stays valid
        rep.log("warning", f"could not write a final checkpoint: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - the original error matters more
        rep.log("warning", f"could not write a final checkpoint: {exc}")


def _account(stats: CopyStats, chunk: Chunk, action: Action, d: str, written: int) -> None:
    if chunk.kind == "data":
        stats.bytes_read += sum(e - s for s, e in chunk.ranges) if chunk.ranges else chunk.length
        if d == ZERO:
            stats.zero_chunks_detected += 1
    if action == "write":
        stats.chunks_written += 1
        stats.bytes_written += written
        stats.bytes_skipped += chunk.length - written
    elif action == "zeroes":
        stats.chunks_zeroed += 1
        stats.bytes_zeroed += chunk.length
    elif action == "skip":
        stats.chunks_skipped += 1
        stats.bytes_skipped += chunk.length
    else:
        stats.chunks_unchanged += 1
        stats.bytes_unchanged += chunk.length
