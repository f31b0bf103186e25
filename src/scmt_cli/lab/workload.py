"""A simulated guest workload: a thread that writes to a fake VM's live disks.

Used by tests and the demo so that incremental syncs and the final delta move
real changes.  Writes go through :meth:`FakeEstate.guest_write`, so CBT records
them and snapshots taken meanwhile stay frozen.  Writes stop by themselves while
the VM is powered off (the guest is down).

Patterns: ``random`` (uniform offsets), ``sequential`` (a log that appends and
wraps), ``hotspot`` (90% of writes into the first 10% of the disk).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from scmt_cli.lab.estate import FakeEstate, VimFault

Pattern = Literal["random", "sequential", "hotspot"]


@dataclass
class WriteRecord:
    disk_key: int
    offset: int
    length: int


@dataclass
class Workload:
    """Write ``rate`` bytes/second in ``io_size`` writes to ``vm``'s disks (all, or ``disk_keys``).

    ``start()``/``stop()``; ``records`` lists every write that reached a disk.
    ``max_bytes`` stops the workload after that many bytes (0: no limit).
    """

    estate: FakeEstate
    vm: str
    rate: int = 1024 * 1024
    io_size: int = 64 * 1024
    pattern: Pattern = "random"
    disk_keys: tuple[int, ...] = ()
    seed: int = 1
    max_bytes: int = 0
    tick: float = 0.02
    records: list[WriteRecord] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.io_size <= 0 or self.io_size % 512:
            raise ValueError("rate must be > 0 and io_size a positive multiple of 512")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random(self.seed)  # noqa: S311 - test data
        self._cursor: dict[int, int] = {}
        self._lock = threading.Lock()
        self.written = 0

    def start(self) -> Workload:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"workload-{self.vm}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Workload:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_once(self) -> WriteRecord | None:
        """One write now (also usable without the thread, for deterministic tests)."""
        with self.estate.lock:
            vm = self.estate.vm(self.vm)
            keys = self.disk_keys or tuple(
                k for k, d in vm.disks.items() if d.spec.rdm is None and d.spec.sharing == "sharingNone"
            )
            sizes = {k: vm.disks[k].capacity for k in keys}
        if not keys:
            return None
        key = self._rng.choice(keys)
        offset = self._offset(key, sizes[key])
        length = min(self.io_size, sizes[key] - offset)
        data = self._rng.randbytes(length)
        if not self.estate.guest_write(self.vm, key, offset, data):
            return None
        rec = WriteRecord(key, offset, length)
        with self._lock:
            self.records.append(rec)
            self.written += length
        return rec

    def _offset(self, key: int, size: int) -> int:
        slots = max(1, size // self.io_size)
        if self.pattern == "sequential":
            cur = self._cursor.get(key, 0)
            self._cursor[key] = (cur + 1) % slots
            return cur * self.io_size
        if self.pattern == "hotspot" and self._rng.random() < 0.9:
            return self._rng.randrange(max(1, slots // 10)) * self.io_size
        return self._rng.randrange(slots) * self.io_size

    def _run(self) -> None:
        budget = 0.0
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                budget = min(budget + (now - last) * self.rate, float(max(self.rate, self.io_size)))
                last = now
                while budget >= self.io_size and not self._stop.is_set():
                    if self.write_once() is None:
                        budget = 0
                        break
                    budget -= self.io_size
                    if self.max_bytes and self.written >= self.max_bytes:
                        return
                self._stop.wait(self.tick)
        except VimFault:
            return  # the VM went away
        except BaseException as exc:  # carried to the test / demo that owns the workload
            self.error = exc
