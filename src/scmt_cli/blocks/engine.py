"""Copying the data: a bounded, pipelined, checkpointed chunk copier.

Shape (as in bmaptool): a planner thread walks the plan (streamed from the
source's allocation map while the copy runs, so reads do not wait for the
whole map); reader threads take planned chunks in order, read them into one
of ``in_flight`` preallocated buffers, detect zeroes, hash, and put the chunk
on a bounded queue; writer threads write it (or zero it, or skip it) and
return the buffer (see :mod:`scmt_cli.blocks.pipeline`).  Peak memory is
therefore ``in_flight x chunk_size`` whatever the disk size.  The calling
thread only coordinates: it collects completions, reports progress, commits
checkpoints and is where ``KeyboardInterrupt`` / ``TerminatedSignal`` land.

Contracts:

* every planned chunk is accounted for exactly once (written, zeroed,
  skipped as zero on a fresh target, unchanged against a base manifest, or
  done before a resume); the engine checks the count at the end (against
  the plan's announced count, so a plan stream that ends early or yields
  too much is caught) and raises InternalError otherwise;
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
* on a fresh target that offers ``preallocate``, each data chunk's data
  ranges are reserved as it is planned, before it is read (a best-effort
  speed hint that changes no byte the target reads back).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scmt_cli.blocks.checkpoint import Checkpointer
from scmt_cli.blocks.digest import ZERO, Manifest
from scmt_cli.blocks.pipeline import Action, PlanEnd, Unit, _Pipeline
from scmt_cli.blocks.plan import DEFAULT_CHUNK_SIZE, Chunk, ChunkPlan, chunk_count
from scmt_cli.errors import InternalError, ScmtError, SizeMismatchError
from scmt_cli.events import NullReporter, Reporter
from scmt_cli.transports.base import BlockSource, BlockTarget

#: Chunks in flight for a source on this host (file://): the disk, not the round trip, sets the pace
#: (``bench/run.py --only inflight``, 2 cores: 4 and 8 within 5% of each other, 16 and 32 slower).
LOCAL_IN_FLIGHT = 4
#: Chunks in flight for a source across a network (NBD, /folder, VDDK, agent), 64 MiB of buffers: the
#: fastest median of 4/8/16/32 behind nbdkit's rdelay=2ms and rdelay=10ms in ``bench/run.py --only
#: inflight`` (32 was within 8% at 10 ms but takes the process over 150 MiB); see README, Performance.
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
    #: how long the plan took to walk; a streamed plan (a full copy's allocation map) overlaps the copy
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


def copy_chunks(
    source: BlockSource,
    target: BlockTarget,
    chunks: Sequence[Chunk] | ChunkPlan,
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
    ``options.chunk_size`` over ``source.size`` (see :mod:`scmt_cli.blocks.plan`);
    a :class:`~scmt_cli.blocks.plan.ChunkPlan` is consumed while the copy runs
    (reads start with its first chunk), a sequence is checked before anything
    is copied.  ``base`` is the manifest the target is known to match before
    the copy (an incremental's previous manifest): chunks whose digest equals
    the base are not written, and unplanned chunks keep the base's digests in
    the returned manifest (``None`` when there is no base).  ``fresh``
    (default: ``target.fresh``) means the target reads as zeroes, so zero
    chunks are skipped and data chunks are written sparsely.

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
    plan = chunks if isinstance(chunks, ChunkPlan) else _listed(chunks, opts.chunk_size, nchunks)
    is_fresh = target.fresh if fresh is None else fresh
    manifest = Manifest(size, opts.chunk_size, list(base.chunks) if base else [None] * nchunks)
    stats = CopyStats(size=size, chunk_size=opts.chunk_size, chunks_planned=plan.count)

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

    pipe = _Pipeline(source, target, plan.chunks, chunk_size=opts.chunk_size, in_flight=opts.in_flight,
                     writers=opts.writers, sparse_block=opts.sparse_block, nchunks=nchunks, base=base,
                     fresh=is_fresh, watermark=watermark)
    completed: set[int] = set()  # completed positions at or above ``low``
    low = 0  # first position not completed
    passed = watermark  # the grid index after the last chunk below ``low`` (the watermark when all are done)
    plan_end: PlanEnd | None = None
    done_bytes = since_ckpt_bytes = 0
    last_ckpt = last_prog = time.monotonic()
    t0 = time.monotonic()
    finished = False
    rep.progress(opts.task, done_bytes, plan.nbytes)

    def complete(item: tuple[int, Action, str | None, int]) -> int:
        """Account one completed unit (a chunk or a run of zero chunks); return its length."""
        pos, action, d, written = item
        unit = pipe.chunk_at[pos]
        completed.add(pos)
        if action == "resumed":  # below the watermark: the checkpoint's digests (the base's where it has none)
            for i in range(unit.index, unit.index + unit.count):
                manifest.chunks[i] = digests.get(i, manifest.chunks[i])
        else:
            manifest.chunks[unit.index : unit.index + unit.count] = [d] * unit.count
        _account(stats, unit, action, d, written)
        return unit.length

    def advance() -> None:
        nonlocal low, passed
        while low in completed:
            completed.discard(low)
            with pipe.plan_lock:
                unit = pipe.chunk_at.pop(low)
            passed = unit.index + unit.count
            for i in range(unit.index, passed):
                digests[i] = manifest.chunks[i]
            low += 1

    def commit() -> None:
        with pipe.plan_lock:
            pending = pipe.chunk_at.get(low)
        wm = pending.index if pending is not None else nchunks if plan_end is not None else passed
        # Never below the loaded watermark: everything under it was on the target before this run began, and
        # the planner may still be walking the resumed units below it (a second interruption would redo them).
        wm = max(wm, watermark)
        if checkpointer is not None:
            checkpointer.save(wm, digests, False)
            stats.checkpoints += 1

    pipe.start()
    try:
        while plan_end is None or low < plan_end.units:
            try:
                item = pipe.done.get(timeout=0.25)
            except queue.Empty:
                item = None
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, PlanEnd):
                plan_end = item
                stats.plan_seconds = item.seconds
            elif item is not None:
                n = complete(item)
                done_bytes += n
                if item[1] != "resumed":
                    since_ckpt_bytes += n
                advance()
            now = time.monotonic()
            if now - last_prog >= 0.1:
                rep.progress(opts.task, done_bytes, plan.nbytes)
                last_prog = now
            if checkpointer is not None and (
                    now - last_ckpt >= opts.checkpoint_seconds or since_ckpt_bytes >= opts.checkpoint_bytes):
                target.flush()
                commit()
                last_ckpt, since_ckpt_bytes = now, 0
        rep.progress(opts.task, done_bytes, plan.nbytes)
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
                if isinstance(late, PlanEnd):
                    plan_end = late
                elif not isinstance(late, BaseException):
                    complete(late)
            advance()
        if not finished and checkpointer is not None:
            _final_checkpoint(target, commit, rep, opts.resume_hint)
    if stats.chunks_done != stats.chunks_planned or plan_end is None or plan_end.count != plan.count:
        raise InternalError(f"copied {stats.chunks_done} chunks but planned {stats.chunks_planned}")
    if checkpointer is not None:
        checkpointer.clear()
    return CopyOutcome(stats, manifest)


def _listed(chunks: Sequence[Chunk], chunk_size: int, nchunks: int) -> ChunkPlan:
    """A listed plan, checked against the grid before anything is copied."""
    last = -1
    for c in chunks:
        if c.index >= nchunks or c.offset != c.index * chunk_size or c.index <= last:
            raise InternalError(f"chunk {c.index} at {c.offset} is not on the plan grid")
        last = c.index
    return ChunkPlan(chunks, len(chunks), sum(c.length for c in chunks))


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


def _account(stats: CopyStats, unit: Unit, action: Action, d: str | None, written: int) -> None:
    n = unit.count
    if action == "resumed":
        stats.chunks_resumed += n
        return
    if isinstance(unit, Chunk) and unit.kind == "data":
        stats.bytes_read += sum(e - s for s, e in unit.ranges) if unit.ranges else unit.length
        if d == ZERO:
            stats.zero_chunks_detected += 1
    if action == "write":
        stats.chunks_written += n
        stats.bytes_written += written
        stats.bytes_skipped += unit.length - written
    elif action == "zeroes":
        stats.chunks_zeroed += n
        stats.bytes_zeroed += unit.length
    elif action == "skip":
        stats.chunks_skipped += n
        stats.bytes_skipped += unit.length
    else:
        stats.chunks_unchanged += n
        stats.bytes_unchanged += unit.length
