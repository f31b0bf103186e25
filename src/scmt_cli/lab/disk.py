"""One disk of the fake vCenter: a sparse file, CBT, and snapshot freezes.

The live content is a sparse file.  A *freeze* (taken when a snapshot is
created) keeps copy-on-write copies of every block the live disk overwrites
afterwards, so reading a frozen view is stable while a guest workload keeps
writing.  CBT is tracked per block (``BLOCK`` bytes): each write bumps the
disk's sequence number and stamps the blocks it touched, and a freeze keeps a
copy of the stamps, so "changed since change id X as of freeze F" is exact at
block granularity (a superset of the bytes really written, never less).

All methods are thread-safe.
"""

from __future__ import annotations

import os
import threading
import uuid as uuidlib
from array import array
from dataclasses import dataclass
from pathlib import Path

from scmt_cli.lab.model import LabDisk, image_path
from scmt_cli.vsphere.api import format_change_id, parse_change_id

BLOCK = 64 * 1024


@dataclass
class Freeze:
    """A disk as of one snapshot."""

    seq: int
    stamps: array[int]  # per block: sequence of the last write (0 = not written since CBT reset)
    allocated: bytearray  # per block: 1 when ever written
    cbt_uuid: bytes | None  # None: CBT not active then
    capacity: int
    cow: dict[int, bytes]  # block index -> content before the live disk overwrote it

    @property
    def change_id(self) -> str | None:
        return format_change_id(self.cbt_uuid, self.seq) if self.cbt_uuid is not None else None


class CbtQueryError(Exception):
    """The change id cannot be used (vSphere answers FileFault)."""


class FakeDisk:
    """A disk file shared by every VM that attaches it (multi-writer disks)."""

    def __init__(self, spec: LabDisk, path: Path, tag: str) -> None:
        self.spec = spec
        self.path = path
        self.capacity = spec.capacity
        self._lock = threading.RLock()
        nblocks = (self.capacity + BLOCK - 1) // BLOCK
        self._stamps = array("Q", bytes(8 * nblocks))
        self._allocated = bytearray(nblocks)
        self._seq = 0
        self._cbt_uuid: bytes | None = None
        self._freezes: dict[str, Freeze] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if spec.image is not None:
            self._load_image(image_path(spec.image))
            return
        with open(path, "wb") as f:
            f.truncate(self.capacity)
        for region in spec.layout:
            self._write_raw(region.offset, region.render(tag))

    def _load_image(self, image: Path) -> None:
        """Start from a copy of a disk image (holes kept); its data blocks count as allocated."""
        from scmt_cli.lab.guest import copy_sparse

        copy_sparse(image, self.path)
        if self.path.stat().st_size != self.capacity:
            raise ValueError(f"{image}: {self.path.stat().st_size} bytes, expected {self.capacity}")
        for offset, length in self.allocated_extents():
            for b in self._blocks(offset, length):
                self._allocated[b] = 1

    # -- CBT ---------------------------------------------------------------------
    @property
    def cbt_active(self) -> bool:
        return self._cbt_uuid is not None

    def reset_cbt(self, active: bool = True) -> None:
        """Start tracking anew (a new UUID, sequence 1) or stop tracking."""
        with self._lock:
            self._cbt_uuid = uuidlib.uuid4().bytes if active else None
            self._seq = 1 if active else 0
            self._stamps = array("Q", bytes(8 * len(self._allocated)))

    @property
    def change_id(self) -> str | None:
        with self._lock:
            return format_change_id(self._cbt_uuid, self._seq) if self._cbt_uuid is not None else None

    # -- data --------------------------------------------------------------------
    def _blocks(self, offset: int, length: int) -> range:
        return range(offset // BLOCK, (offset + length + BLOCK - 1) // BLOCK)

    def _write_raw(self, offset: int, data: bytes) -> None:
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)
        for b in self._blocks(offset, len(data)):
            self._allocated[b] = 1

    def _read_raw(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        return data.ljust(length, b"\0")

    def write(self, offset: int, data: bytes) -> None:
        """A guest write: copy-on-write into every freeze, then stamp the blocks for CBT."""
        if offset < 0 or offset + len(data) > self.capacity:
            raise ValueError(f"write [{offset}, {offset + len(data)}) outside the disk (size {self.capacity})")
        if not data:
            return
        with self._lock:
            blocks = self._blocks(offset, len(data))
            for fr in self._freezes.values():
                for b in blocks:
                    if b not in fr.cow and b * BLOCK < fr.capacity:
                        fr.cow[b] = self._read_raw(b * BLOCK, min(BLOCK, self.capacity - b * BLOCK))
            self._write_raw(offset, data)
            if self._cbt_uuid is not None:
                self._seq += 1
                for b in blocks:
                    self._stamps[b] = self._seq

    def read(self, offset: int, length: int, freeze: str | None = None) -> bytes:
        """Bytes of the live disk, or of the disk as frozen by ``freeze``."""
        with self._lock:
            if freeze is None:
                return self._read_raw(offset, length)
            fr = self._freezes[freeze]
            out = bytearray(self._read_raw(offset, length))
            for b in self._blocks(offset, length):
                saved = fr.cow.get(b)
                if saved is None:
                    continue
                lo = max(offset, b * BLOCK)
                hi = min(offset + length, b * BLOCK + len(saved))
                out[lo - offset : hi - offset] = saved[lo - b * BLOCK : hi - b * BLOCK]
            return bytes(out)

    def allocated_extents(self) -> list[tuple[int, int]]:
        """Allocated (offset, length) runs of the live file, from SEEK_DATA/SEEK_HOLE."""
        out: list[tuple[int, int]] = []
        fd = os.open(self.path, os.O_RDONLY)
        try:
            pos = 0
            while pos < self.capacity:
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:
                    break
                end = min(os.lseek(fd, start, os.SEEK_HOLE), self.capacity)
                out.append((start, end - start))
                pos = end
        finally:
            os.close(fd)
        return out

    def grow(self, new_capacity: int) -> None:
        """Extend the disk (the new area reads as zeroes).  Not allowed while frozen by snapshots."""
        with self._lock:
            if new_capacity < self.capacity:
                raise ValueError("a disk cannot shrink")
            if self._freezes:
                raise ValueError("a disk with snapshots cannot be extended")
            with open(self.path, "r+b") as f:
                f.truncate(new_capacity)
            nblocks = (new_capacity + BLOCK - 1) // BLOCK
            self._stamps.extend([0] * (nblocks - len(self._stamps)))
            self._allocated.extend(bytes(nblocks - len(self._allocated)))
            self.capacity = new_capacity

    # -- freezes -----------------------------------------------------------------
    def freeze(self, name: str) -> Freeze:
        with self._lock:
            fr = Freeze(
                seq=self._seq,
                stamps=array("Q", self._stamps),
                allocated=bytearray(self._allocated),
                cbt_uuid=self._cbt_uuid,
                capacity=self.capacity,
                cow={},
            )
            self._freezes[name] = fr
            return fr

    def release(self, name: str) -> None:
        with self._lock:
            self._freezes.pop(name, None)

    def frozen(self, name: str) -> Freeze:
        with self._lock:
            return self._freezes[name]

    def query_changed(
        self, freeze: str, start: int, change_id: str, window: int
    ) -> tuple[int, int, list[tuple[int, int]]]:
        """One QueryChangedDiskAreas answer: at most ``window`` bytes from ``start``.

        Raises :class:`CbtQueryError` like vSphere's FileFault when the change id
        does not belong to this disk's tracking epoch.
        """
        with self._lock:
            fr = self._freezes[freeze]
            if start < 0 or start >= fr.capacity:
                raise CbtQueryError(f"startOffset {start} is outside the disk (capacity {fr.capacity})")
            if fr.cbt_uuid is None:
                raise CbtQueryError("changed block tracking is not active on this disk")
            if change_id == "*":
                since = -1
            else:
                try:
                    uuid_part, since = parse_change_id(change_id)
                except ValueError as exc:
                    raise CbtQueryError(str(exc)) from None
                mine, _ = parse_change_id(format_change_id(fr.cbt_uuid, 0))
                if uuid_part != mine or since > fr.seq:
                    raise CbtQueryError(f"change id {change_id!r} does not match this disk")
            length = min(window, fr.capacity - start)
            areas: list[tuple[int, int]] = []
            for b in self._blocks(start, length):
                hit = fr.allocated[b] if since < 0 else fr.stamps[b] > since
                if hit:
                    lo = max(start, b * BLOCK)
                    hi = min(start + length, (b + 1) * BLOCK)
                    if areas and areas[-1][0] + areas[-1][1] == lo:
                        areas[-1] = (areas[-1][0], hi - areas[-1][0])
                    else:
                        areas.append((lo, hi - lo))
            return start, length, areas
