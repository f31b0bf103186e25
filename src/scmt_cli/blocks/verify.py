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
from collections.abc import Iterator
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
    rep = reporter or NullReporter()
    idx = [i for i, d in enumerate(manifest.chunks) if d is not None]
    total = sum(chunk_range(i, manifest.size, manifest.chunk_size)[1] for i in idx)
    bad: list[int] = []
    done = 0
    last = 0.0

    def check(i: int) -> bool:
        off, length = chunk_range(i, manifest.size, manifest.chunk_size)
        data = target.read(off, length)
        want = manifest.chunks[i]
        if len(data) != length:
            return False
        return is_zero(data) if want == ZERO else digest(data) == want

    workers = in_flight if target.thread_safe else 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scmt-verify") as pool:
        for i, fut in _bounded(pool, check, idx, workers * 2):
            if not fut.result():
                bad.append(i)
            done += chunk_range(i, manifest.size, manifest.chunk_size)[1]
            now = time.monotonic()
            if now - last > 0.1 or done == total:
                rep.progress(task, done, total)
                last = now
    if bad:
        where = ", ".join(f"chunk {i} (offset {i * manifest.chunk_size})" for i in bad[:MAX_LISTED])
        more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise VerificationError(
            f"verification failed: {len(bad)} chunk(s) of {target.describe()} differ from the manifest: {where}{more}",
            hint="the target does not match the source; copy again (without --since) to repair it",
        )
    return len(idx)


def verify_copy(source: BlockSource, target: BlockTarget, chunk_size: int, *, in_flight: int = 4,
                reporter: Reporter | None = None, task: str = "verify") -> int:
    """Check that ``target`` holds ``source`` as it is now, chunk by chunk; return the chunks checked."""
    rep = reporter or NullReporter()
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
        want = source_digest(c)
        data = target.read(c.offset, c.length)
        if len(data) != c.length:
            return False
        return is_zero(data) if want == ZERO else digest(data) == want

    total = size
    bad: list[int] = []
    done = 0
    last = 0.0
    workers = in_flight if target.thread_safe and source.thread_safe else 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scmt-verify") as pool:
        for pos, fut in _bounded(pool, check, list(range(len(chunks))), workers * 2):
            if not fut.result():
                bad.append(chunks[pos].index)
            done += chunks[pos].length
            now = time.monotonic()
            if now - last > 0.1 or done == total:
                rep.progress(task, done, total)
                last = now
    if bad:
        where = ", ".join(f"chunk {i} (offset {i * chunk_size})" for i in bad[:MAX_LISTED])
        more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise VerificationError(
            f"verification failed: {len(bad)} chunk(s) of {target.describe()} differ from {source.describe()} as it "
            f"is now: {where}{more}",
            hint="the source changed during or after the copy, or the target was written by something else; "
                 "copy again (without --since) to repair it",
        )
    return len(chunks)


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
