"""Re-reading a copy: a target against the source as it is now, or against a manifest.

:func:`verify_copy` is ``scmt copy --verify``: it plans the source again from
its allocation map, then for every chunk reads the target and compares it with
the source *now* -- the source's bytes read again (or the digests the scmt
agent computes where the data lives), zeroes where the map says the source
reads as zeroes.  Digests recorded during the copy are not trusted: a source
that changed, or a target written by someone else, shows as a mismatch.

:func:`verify_target` checks a target against a manifest (every known chunk
of it; ``"0"`` entries must be all zeroes, ``null`` ones are not checked).

Both read ``in_flight`` chunks at a time (memory stays bounded) and raise
:class:`~scmt_cli.errors.VerificationError` listing the first mismatching chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from scmt_cli.blocks.api import plan_list
from scmt_cli.blocks.digest import ZERO, Manifest, digest, is_zero
from scmt_cli.blocks.plan import Chunk, chunk_range
from scmt_cli.errors import SizeMismatchError, VerificationError
from scmt_cli.events import NullReporter, Reporter
from scmt_cli.transports.base import BlockSource, BlockTarget

MAX_LISTED = 5


def verify_target(target: BlockTarget, manifest: Manifest, *, in_flight: int = 4,
                  reporter: Reporter | None = None, task: str = "verify") -> int:
    """Check ``target`` against ``manifest``; return the number of chunks checked."""
    wants = {i: d for i, d in enumerate(manifest.chunks) if d is not None}
    idx = list(wants)
    ranges = {i: chunk_range(i, manifest.size, manifest.chunk_size) for i in idx}

    def check(i: int) -> bool:
        return _holds(target, *ranges[i], wants[i])

    workers = in_flight if target.thread_safe else 1
    bad = _run(check, idx, lambda i: ranges[i][1], workers, reporter, task)
    if bad:
        raise VerificationError(
            f"verification failed: {len(bad)} chunk(s) of {target.describe()} differ from the manifest: "
            f"{_listed(bad, manifest.chunk_size)}",
            hint="the target does not match the source; copy again (without --since) to repair it",
        )
    return len(idx)


def verify_copy(source: BlockSource, target: BlockTarget, chunk_size: int, *, in_flight: int = 4,
                reporter: Reporter | None = None, task: str = "verify") -> int:
    """Check that ``target`` holds ``source`` as it is now, chunk by chunk; return the chunks checked."""
    size = source.size
    if target.size < size:
        raise SizeMismatchError(f"target {target.describe()} is smaller than the source: {target.size} < {size} bytes")
    chunks = plan_list(source, chunk_size)
    remote = source.remote_digests(chunk_size)  # computed now, where the data lives (the scmt agent)

    def source_digest(c: Chunk) -> str:
        if c.kind == "zero":
            return ZERO
        if remote is not None:
            return remote[c.index]
        data = source.read(c.offset, c.length)
        return ZERO if is_zero(data) else digest(data)

    def check(pos: int) -> bool:
        c = chunks[pos]
        return _holds(target, c.offset, c.length, source_digest(c))

    workers = in_flight if target.thread_safe and source.thread_safe else 1
    bad = _run(check, list(range(len(chunks))), lambda pos: chunks[pos].length, workers, reporter, task)
    if bad:
        raise VerificationError(
            f"verification failed: {len(bad)} chunk(s) of {target.describe()} differ from {source.describe()} as it "
            f"is now: {_listed([chunks[pos].index for pos in bad], chunk_size)}",
            hint="the source changed during or after the copy, or the target was written by something else; "
                 "copy again (without --since) to repair it",
        )
    return len(chunks)


def _holds(target: BlockTarget, offset: int, length: int, want: str) -> bool:
    """True when ``target`` holds ``length`` bytes at ``offset`` whose digest is ``want`` (ZERO: all zeroes)."""
    data = target.read(offset, length)
    if len(data) != length:
        return False
    return is_zero(data) if want == ZERO else digest(data) == want


def _run(check: Callable[[int], bool], items: list[int], length: Callable[[int], int], workers: int,
         reporter: Reporter | None, task: str) -> list[int]:
    """``check`` every item, ``workers`` at a time (memory stays bounded), with progress in bytes; the failed."""
    rep = reporter or NullReporter()
    total = sum(length(i) for i in items)
    bad: list[int] = []
    done = 0
    last = 0.0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scmt-verify") as pool:
        for i, fut in _bounded(pool, check, items, workers * 2):
            if not fut.result():
                bad.append(i)
            done += length(i)
            now = time.monotonic()
            if now - last > 0.1 or done == total:
                rep.progress(task, done, total)
                last = now
    return bad


def _listed(indexes: list[int], chunk_size: int) -> str:
    """The first mismatching chunks, for a message."""
    where = ", ".join(f"chunk {i} (offset {i * chunk_size})" for i in indexes[:MAX_LISTED])
    return where + (f" and {len(indexes) - MAX_LISTED} more" if len(indexes) > MAX_LISTED else "")


def _bounded(pool: ThreadPoolExecutor, fn: object, items: list[int], window: int) -> Iterator[tuple[int, Future[bool]]]:
    """Submit ``fn(item)`` keeping at most ``window`` futures pending; yield in order."""
    pending: list[tuple[int, Future[bool]]] = []
    it = iter(items)
    for i in it:
        pending.append((i, pool.submit(fn, i)))  # type: ignore[arg-type]
        if len(pending) >= window:
            yield pending.pop(0)
    while pending:
        yield pending.pop(0)
