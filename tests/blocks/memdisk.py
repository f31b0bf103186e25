"""In-memory BlockSource/BlockTarget used by the engine tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from scmt_cli.errors import SizeMismatchError
from scmt_cli.transports.base import Extent, SourceDefaults, TargetDefaults


class MemSource(SourceDefaults):
    """A disk in a bytearray with an explicit extent map; counts the bytes read."""

    def __init__(self, data: bytes | bytearray, extents: list[Extent] | None = None, *, thread_safe: bool = True):
        self.data = bytearray(data)
        self._extents = extents if extents is not None else [Extent(0, len(data), "data")]
        self._thread_safe = thread_safe
        self.reads: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def thread_safe(self) -> bool:
        return self._thread_safe

    def describe(self) -> str:
        return "mem://source"

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        end = self.size if length is None else offset + length
        for e in self._extents:
            s, t = max(e.offset, offset), min(e.end, end)
            if s < t:
                yield Extent(s, t - s, e.kind)

    def read(self, offset: int, length: int) -> bytes:
        if offset + length > self.size:
            raise SizeMismatchError("read past the end")
        with self._lock:
            self.reads.append((offset, length))
        return bytes(self.data[offset : offset + length])

    def close(self) -> None:
        pass


class MemTarget(TargetDefaults):
    """A target in a bytearray; records the operations it received."""

    def __init__(self, size: int, *, fresh: bool = True, fill: int = 0, thread_safe: bool = True):
        self.data = bytearray([fill]) * size
        self._fresh = fresh
        self._thread_safe = thread_safe
        self.writes: list[tuple[int, int]] = []
        self.zeroes: list[tuple[int, int]] = []
        self.flushes = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def thread_safe(self) -> bool:
        return self._thread_safe

    @property
    def fresh(self) -> bool:
        return self._fresh

    def describe(self) -> str:
        return "mem://target"

    def write(self, offset: int, data) -> None:
        n = len(data)
        if offset + n > self.size:
            raise SizeMismatchError("write past the end")
        with self._lock:
            self.data[offset : offset + n] = bytes(data)
            self.writes.append((offset, n))

    def write_zeroes(self, offset: int, length: int) -> None:
        with self._lock:
            self.data[offset : offset + length] = bytes(length)
            self.zeroes.append((offset, length))

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.data[offset : offset + length])

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        pass
