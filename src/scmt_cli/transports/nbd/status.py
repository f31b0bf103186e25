"""Pipelined ``NBD_CMD_BLOCK_STATUS``: the allocation map of a range, several windows in flight.

The range is cut into windows of ``window`` bytes; up to ``ahead`` windows are
queried at once (spread over the connections like reads), so mapping a large
disk costs about one round trip per ``ahead`` windows instead of one per
window, and the queries share the connections with reads instead of holding
them up.  A server may describe less than a window (the protocol allows it):
the rest of that window is asked again before anything beyond it is yielded,
so extents still come out in order, merged, covering the range exactly.

A server that answers ENOTSUP/EINVAL (nbdkit when its plugin cannot report
extents) gets the rest of the range reported as ``data``, conservatively.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from scmt_cli.transports.base import Extent, ExtentKind
from scmt_cli.transports.nbd import protocol as p

WINDOW = 1 << 30  # bytes asked per BLOCK_STATUS request
AHEAD = 8  # BLOCK_STATUS requests in flight at once


def extent_kind(flags: int) -> ExtentKind:
    """Map base:allocation flags to an extent kind (a hole that may not read as zero is data)."""
    if flags & p.STATE_ZERO:
        return "hole" if flags & p.STATE_HOLE else "zero"
    return "data"


class _Merger:
    """Merges adjacent extents of one kind; ``add`` returns the extent it completed, if any."""

    def __init__(self) -> None:
        self.cur: Extent | None = None

    def add(self, offset: int, length: int, kind: ExtentKind) -> Extent | None:
        cur = self.cur
        if cur is not None and cur.kind == kind and cur.end == offset:
            self.cur = Extent(cur.offset, cur.length + length, kind)
            return None
        self.cur = Extent(offset, length, kind)
        return cur


def pipelined_extents(
    submit: Callable[[int, int], Any],
    wait: Callable[[Any], Any],
    offset: int,
    length: int,
    where: str,
    *,
    window: int = WINDOW,
    ahead: int = AHEAD,
) -> Iterator[Extent]:
    """Yield the merged extents of ``[offset, offset+length)``.

    ``submit(pos, length)`` sends one BLOCK_STATUS request and returns a handle;
    ``wait(handle)`` returns the completed request (with ``status``: a list of
    ``(length, flags)``) or raises its error.
    """
    end = offset + length
    pending: deque[tuple[int, int, Any]] = deque()  # (start, stop, handle) in offset order
    next_pos = offset
    merged = _Merger()

    def fill() -> None:
        nonlocal next_pos
        while len(pending) < ahead and next_pos < end:
            stop = min(end, next_pos + window)
            pending.append((next_pos, stop, submit(next_pos, stop - next_pos)))
            next_pos = stop

    fill()
    while pending:
        start, stop, handle = pending.popleft()
        try:
            req = wait(handle)
        except p.ServerError as exc:
            if exc.errno not in (p.ENOTSUP, p.EINVAL):
                raise
            done = merged.add(start, end - start, "data")  # the server cannot tell after all
            if done is not None:
                yield done
            break
        if not req.status:
            raise p.ProtocolError(f"NBD server {where} sent no base:allocation status at {start}")
        pos = start
        for dlen, flags in req.status:
            n = min(dlen, stop - pos)
            done = merged.add(pos, n, extent_kind(flags))
            if done is not None:
                yield done
            pos += n
            if pos >= stop:
                break
        if pos < stop:  # described less than asked: ask again for the rest of this window first
            pending.appendleft((pos, stop, submit(pos, stop - pos)))
        fill()
    if merged.cur is not None:
        yield merged.cur
