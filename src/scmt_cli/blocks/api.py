"""The three ways to copy a disk, for services (``scmt copy``, ``sync``).

* :func:`full_copy` - every allocated chunk (zero chunks become WRITE_ZEROES,
  or nothing on a fresh target);
* :func:`incremental_copy` - digest comparison against the manifest of the
  previous copy: the source's allocated chunks are read and hashed, only
  chunks whose digest differs are written;
* :func:`changed_copy` - an explicit changed-extent list (CBT): only those
  chunks are read; the rest of the source is never touched.

All return a :class:`~scmt_cli.blocks.engine.CopyOutcome` whose manifest
describes the whole target afterwards (for :func:`changed_copy`, unchanged
chunks take their digests from ``base``, or are ``null`` without one).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from scmt_cli.blocks.checkpoint import Checkpointer
from scmt_cli.blocks.digest import Manifest
from scmt_cli.blocks.engine import CopyOptions, CopyOutcome, copy_chunks
from scmt_cli.blocks.plan import (
    Chunk,
    ChunkPlan,
    ExtentMapError,
    ZeroRun,
    chunk_count,
    plan_changed,
    plan_chunks,
    plan_units,
)
from scmt_cli.errors import SizeMismatchError, TransportError
from scmt_cli.events import Reporter
from scmt_cli.transports.base import BlockSource, BlockTarget, Extent


def plan_source(source: BlockSource, chunk_size: int) -> ChunkPlan:
    """The full chunk plan of ``source``, streamed from its allocation map as the copy consumes it.

    The map is asked for once, when the engine starts iterating; each chunk
    is yielded as soon as the extents received describe it, holes as runs
    (see :func:`~scmt_cli.blocks.plan.plan_units`).  A map that breaks the extent
    contract (overlapping, unsorted, past the end: a buggy transport) is a
    permanent TransportError naming the source and the extent, raised where
    the iteration reaches it.
    """
    size = source.size

    def stream() -> Iterator[Chunk | ZeroRun]:
        try:
            yield from plan_units(source.extents(0, size), size, chunk_size)
        except ExtentMapError as exc:
            raise bad_map(source, "allocation map", exc) from None

    return ChunkPlan(stream(), chunk_count(size, chunk_size), size)


def plan_list(source: BlockSource, chunk_size: int) -> list[Chunk]:
    """Every grid chunk of ``source``'s plan, as a list (holes as zero chunks); errors as :func:`plan_source`."""
    try:
        return plan_chunks(source.extents(0, source.size), source.size, chunk_size)
    except ExtentMapError as exc:
        raise bad_map(source, "allocation map", exc, before=True) from None


def bad_map(source: BlockSource, what: str, exc: ExtentMapError, *, before: bool = False) -> TransportError:
    """The error for an invalid extent list (``what``: "allocation map", "change list") of ``source``.

    ``before``: the list was read whole before any chunk was touched (nothing was copied or checked);
    otherwise it streamed during the copy, which stopped there.
    """
    where = "nothing was copied or checked" if before else "the copy stopped there"
    return TransportError(f"{source.describe()} returned an invalid {what}: {exc}", transient=False,
                          hint=f"this is a bug in the source or its transport; {where}")


def full_copy(source: BlockSource, target: BlockTarget, *, options: CopyOptions | None = None,
              checkpointer: Checkpointer | None = None, resume: bool = False,
              reporter: Reporter | None = None) -> CopyOutcome:
    """Copy every allocated chunk of ``source`` to ``target``."""
    opts = options or CopyOptions()
    return copy_chunks(source, target, plan_source(source, opts.chunk_size), options=opts,
                       checkpointer=checkpointer, resume=resume, reporter=reporter)


def incremental_copy(source: BlockSource, target: BlockTarget, base: Manifest, *,
                     options: CopyOptions | None = None, checkpointer: Checkpointer | None = None,
                     resume: bool = False, reporter: Reporter | None = None) -> CopyOutcome:
    """Bring a ``target`` that matches ``base`` up to date with ``source`` by digest comparison."""
    opts = options or CopyOptions(chunk_size=base.chunk_size)
    if source.size != base.size:
        raise SizeMismatchError(
            f"the source has {source.size} bytes but the base manifest describes {base.size} bytes",
            hint="a resized disk needs a full copy (run without --since)")
    return copy_chunks(source, target, plan_source(source, opts.chunk_size), options=opts, base=base,
                       fresh=False, checkpointer=checkpointer, resume=resume, reporter=reporter)


def changed_copy(source: BlockSource, target: BlockTarget, changed: Iterable[Extent], *,
                 base: Manifest | None = None, options: CopyOptions | None = None,
                 checkpointer: Checkpointer | None = None, resume: bool = False,
                 reporter: Reporter | None = None) -> CopyOutcome:
    """Copy only the chunks overlapping ``changed`` (e.g. from CBT); the source is read nowhere else.

    ``changed`` extents of kind ``zero``/``hole`` that cover whole chunks are
    zeroed on the target without reading the source.
    """
    opts = options or CopyOptions(chunk_size=base.chunk_size if base else CopyOptions().chunk_size)
    t0 = time.monotonic()
    try:
        chunks = plan_changed(list(changed), source.size, opts.chunk_size)
    except ExtentMapError as exc:
        raise bad_map(source, "change list", exc, before=True) from None
    plan_s = time.monotonic() - t0
    out = copy_chunks(source, target, chunks, options=opts, base=base, fresh=False, checkpointer=checkpointer,
                      resume=resume, reporter=reporter)
    out.stats.plan_seconds = plan_s
    return out
