"""A workload that writes FILES inside a lab VM's guest file system, seen by CBT like a guest's writes.

``debugfs -w`` edits a private copy of the live disk; the 64 KiB blocks that
differ afterwards are written back through :meth:`FakeDisk.write`, so CBT
stamps them and every snapshot taken meanwhile keeps its frozen view (the
live file itself is never edited behind the fake disk's back).  A VM that is
not powered on writes nothing (the guest is down).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import scmt_cli.lab.guest.fs as fs
from scmt_cli.lab.disk import BLOCK, FakeDisk
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.lab.guest.cache import copy_sparse

_WINDOW = 1024 * 1024


def _data_extents(path: Path) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            out.append((start, end - start))
            pos = end
    finally:
        os.close(fd)
    return out


def changed_blocks(old: Path, new: Path) -> list[int]:
    """Indexes of the ``BLOCK``-sized blocks whose bytes differ (``new`` only gains data, never holes)."""
    out: list[int] = []
    with open(old, "rb") as a, open(new, "rb") as b:
        for start, length in _data_extents(new):
            pos = start - start % BLOCK
            end = start + length
            while pos < end:
                n = min(_WINDOW, end - pos)
                a.seek(pos)
                b.seek(pos)
                x, y = a.read(n).ljust(n, b"\0"), b.read(n).ljust(n, b"\0")
                if x != y:
                    for i in range(0, n, BLOCK):
                        if x[i : i + BLOCK] != y[i : i + BLOCK]:
                            out.append((pos + i) // BLOCK)
                pos += n
    return sorted(set(out))


@dataclass
class GuestFiles:
    """Write files into ``/scmt-data`` of ``vm``'s disk ``key`` (a disk with ``image: guest``)."""

    estate: FakeEstate
    vm: str
    key: int = 2000
    seed: int = 1
    written: list[str] = field(default_factory=list)
    blocks_changed: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 - test data

    def _disk(self) -> FakeDisk | None:
        with self.estate.lock:
            vm = self.estate.vm(self.vm)
            if vm.power != "poweredOn":
                return None
            return self.estate.disk(vm, self.key)

    def write(self, files: dict[str, bytes]) -> bool:
        """Create or replace ``files``; False (nothing written) when the VM is not running."""
        disk = self._disk()
        if disk is None:
            return False
        with disk._lock:  # noqa: SLF001 - one writer for the whole read-modify-write of the file system
            scratch = disk.path.with_name(disk.path.name + ".guestfs-edit")
            try:
                copy_sparse(disk.path, scratch)
                fs.write_files(scratch, files)
                blocks = changed_blocks(disk.path, scratch)
                with open(scratch, "rb") as f:
                    for b in blocks:
                        f.seek(b * BLOCK)
                        disk.write(b * BLOCK, f.read(min(BLOCK, disk.capacity - b * BLOCK)))
            finally:
                scratch.unlink(missing_ok=True)
        self.blocks_changed += len(blocks)
        self.written.extend(sorted(files))
        return True

    def write_random(self, count: int = 1, size: int = 96 * 1024) -> list[str]:
        """``count`` new files of ``size`` random bytes (names ``w0001.dat``, ...)."""
        files = {f"w{len(self.written) + i + 1:04d}.dat": self._rng.randbytes(size) for i in range(count)}
        return sorted(files) if self.write(files) else []

    def digest(self) -> str:
        """What the guest would print now: the digest of its data files on the live disk."""
        with self.estate.lock:
            disk = self.estate.disk(self.estate.vm(self.vm), self.key)
        with disk._lock:  # noqa: SLF001
            return fs.data_digest_of(disk.path)
