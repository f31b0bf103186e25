"""Progress of a copy counted in data, not holes.

The copy engine reports its progress as the part of the disk it has passed
(holes and skipped zero runs included), so a bar fed with it races through a
sparse disk and its speed column shows a rate the link never carried.
:class:`DataMeter` wraps the copy's source and counts the bytes read from it
and the data extents of its allocation map; :class:`DataProgress` wraps the
reporter and turns the engine's progress of ``task`` into ``(data read, data in
the map)``, so the bar and its speed count data moved.

The map total is the data the engine was given so far (each byte of the map is
counted once, whatever the number of passes over it: a streamed plan grows it
as it goes, to the exact figure by the end).  A resumed copy reads nothing
below its checkpoint: that part is counted as its share of the disk's data
(the engine's first report says how far the checkpoint is), and the last
report, when the engine says it is done, fills the bar.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from scmt_cli.events import Level, Reporter
from scmt_cli.transports.base import BlockSource, Extent
from scmt_cli.transports.wrappers import SourceProxy


class DataMeter(SourceProxy):
    """Counts the bytes read through it (``bytes_read``) and the data extents it lists (``data_bytes``)."""

    def __init__(self, inner: BlockSource) -> None:
        super().__init__(inner)
        self.bytes_read = 0
        self.data_bytes = 0
        self._counted_to = 0  # the map is counted once: only what lies beyond the furthest extent counted
        self._lock = threading.Lock()

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        for ext in self.inner.extents(offset, length):
            if ext.kind == "data" and ext.end > self._counted_to:
                with self._lock:
                    start = max(ext.offset, self._counted_to)
                    if ext.end > start:
                        self.data_bytes += ext.end - start
                        self._counted_to = ext.end
            yield ext

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_read += n

    def read(self, offset: int, length: int) -> bytes:
        data = self.inner.read(offset, length)
        self._count(len(data))
        return data

    def readinto(self, offset: int, buf: memoryview) -> None:
        self.inner.readinto(offset, buf)
        self._count(len(buf))

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
        self.inner.readinto_many(ranges)
        self._count(sum(len(b) for _, b in ranges))


class DataProgress:
    """A reporter whose progress of ``task`` counts data (see the module doc); everything else passes through."""

    def __init__(self, inner: Reporter, meter: DataMeter, task: str) -> None:
        self._inner = inner
        self._meter = meter
        self._task = task
        self._resumed: float | None = None  # the checkpointed share of the disk, from the engine's first report

    def log(self, level: Level, message: str, **fields: Any) -> None:
        self._inner.log(level, message, **fields)

    def event(self, kind: str, **fields: Any) -> None:
        self._inner.event(kind, **fields)

    def progress(self, task: str, done: int, total: int | None, **fields: Any) -> None:
        if task != self._task or not total:
            self._inner.progress(task, done, total, **fields)
            return
        if self._resumed is None:
            self._resumed = done / total
        data = self._meter.data_bytes
        moved = self._meter.bytes_read + int(self._resumed * data)
        if done >= total:
            moved = max(moved, data) if data else moved
        self._inner.progress(task, moved, max(data, moved), **fields)
