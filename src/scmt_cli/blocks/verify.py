"""``--verify``: re-read a target and compare it with a manifest.

Reads every known chunk of the manifest (``in_flight`` reads at a time, so
memory stays bounded), compares its digest (or, for ``"0"`` entries, that it
is all zeroes) and raises :class:`~scmt_cli.errors.VerificationError` listing
the first mismatching chunks.  Unknown (``null``) entries are not checked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from scmt_cli.blocks.digest import ZERO, Manifest, digest, is_zero
from scmt_cli.blocks.plan import chunk_range
from scmt_cli.errors import VerificationError
from scmt_cli.events import NullReporter, Reporter
from scmt_cli.transports.base import BlockTarget

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
