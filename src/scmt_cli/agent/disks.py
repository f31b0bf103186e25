"""Read-only access to the disks the agent serves (block devices or image files).

:class:`ServedDisk` opens its path ``O_RDONLY`` and never writes.  A block device
is read with ``O_DIRECT``: a file system mounted from it writes its file data
around the device's page cache, so a buffered read of a block read before could
return the old bytes (measured: ext4 on a loop device, a chunk rewritten by a
file write still read as before).  Direct reads also keep the agent's reads out
of the source's page cache.  Where the device refuses ``O_DIRECT``, the cached
pages of the range are dropped before each read instead.  Allocation
comes from ``SEEK_DATA``/``SEEK_HOLE`` (a block device or a file system without
them reports one data extent).  :meth:`ServedDisk.chunk_digests` hashes chunks
on the grid of :mod:`scmt_cli.blocks.plan` with :func:`scmt_cli.blocks.digest.digest`
(``"0"`` for an all-zero chunk), so its answers compare equal to the engine's
manifests of the same bytes.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import threading
from pathlib import Path

from scmt_cli.agent.limits import StorageShare
from scmt_cli.blocks.digest import ZERO, digest, is_zero
from scmt_cli.errors import UsageError

#: Alignment of direct reads (offset, length and buffer): a multiple of every logical block size in use.
DIRECT_ALIGN = 4096


class ServedDisk:
    """One disk, named ``name``, read from ``path`` (thread-safe: ``pread`` only)."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise UsageError(f"--disk {name}={path}: cannot open: {exc.strerror}") from None
        st = os.fstat(self.fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            os.close(self.fd)
            raise UsageError(f"--disk {name}={path}: not a regular file or block device")
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        #: A second descriptor with O_DIRECT for a block device (-1: buffered reads).
        self.direct_fd = -1
        self.block_device = stat.S_ISBLK(st.st_mode)
        if self.block_device:
            try:
                self.direct_fd = os.open(path, os.O_RDONLY | os.O_DIRECT | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                self.direct_fd = -1
        self._closed = False
        self._lock = threading.Lock()
        #: Bytes read from the device so far (what finding and sending changes cost the source).
        self.bytes_read = 0
        #: The server's storage-share governor (told when each read starts and ends), or None.
        self.governor: StorageShare | None = None

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)
                if self.direct_fd >= 0:
                    os.close(self.direct_fd)

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` as the device holds them now (the caller checked the range)."""
        if self.governor is not None:
            self.governor.begin()
        try:
            data = self._read(offset, length)
        finally:
            if self.governor is not None:
                self.governor.end()  # pauses here when the agent's reads took more than their share
        with self._lock:
            self.bytes_read += length
        return data

    def _read(self, offset: int, length: int) -> bytes:
        data = None
        fd = self.direct_fd
        if fd >= 0:
            try:
                data = self._read_direct(fd, offset, length)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EBADF):
                    raise
                if exc.errno == errno.EINVAL:  # a logical block larger than DIRECT_ALIGN: read through the cache
                    self._no_direct(fd)
        if data is None:
            if self.block_device:  # no O_DIRECT here: drop the range's cached pages, which may be stale
                first = offset - offset % mmap.PAGESIZE  # only whole pages are dropped: round outwards
                last = -(-(offset + length) // mmap.PAGESIZE) * mmap.PAGESIZE
                os.posix_fadvise(self.fd, first, last - first, os.POSIX_FADV_DONTNEED)
            data = self._read_buffered(offset, length)
        return data

    def _no_direct(self, fd: int) -> None:
        with self._lock:
            if self.direct_fd != fd or self._closed:
                return
            self.direct_fd = -1
        os.close(fd)

    def _read_buffered(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        view = memoryview(out)
        done = 0
        while done < length:
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n <= 0:
                raise OSError(errno.EIO, "the disk ended before the requested range (did it shrink?)")
            done += n
        return bytes(out)

    def identity(self) -> dict[str, int]:
        """Which device or file this is (a block device's number; a file's device and inode), for a
        client that resumes a copy: it proves the agent still serves the disk the copy started on."""
        st = os.fstat(self.fd)
        return {"rdev": st.st_rdev} if stat.S_ISBLK(st.st_mode) else {"dev": st.st_dev, "ino": st.st_ino}

    def _read_direct(self, fd: int, offset: int, length: int) -> bytes:
        """``O_DIRECT`` read of the aligned range around ``[offset, offset+length)`` (page-aligned buffer)."""
        start = offset - offset % DIRECT_ALIGN
        end = -(-(offset + length) // DIRECT_ALIGN) * DIRECT_ALIGN
        buf = mmap.mmap(-1, end - start)
        try:
            view = memoryview(buf)
            done, need = 0, offset + length - start
            while done < need:
                n = os.preadv(fd, [view[done:]], start + done)
                if n <= 0:
                    raise OSError(errno.EIO, "the disk ended before the requested range (did it shrink?)")
                done += n
            data = bytes(view[offset - start:offset - start + length])
            view.release()
            return data
        finally:
            buf.close()

    def current_size(self) -> int:
        """The size of the device now (a resize shows here, not in :attr:`size`)."""
        return os.lseek(self.fd, 0, os.SEEK_END)

    def data_ranges(self, offset: int, length: int) -> list[tuple[int, int]]:
        """``(start, end)`` ranges in ``[offset, offset+length)`` that may hold data."""
        end = offset + length
        out: list[tuple[int, int]] = []
        pos = offset
        while pos < end:
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    break
                return [(offset, end)]  # no SEEK_DATA here: everything may be data
            if data >= end:
                break
            try:
                hole = os.lseek(self.fd, data, os.SEEK_HOLE)
            except OSError:
                hole = end
            out.append((data, min(hole, end)))
            pos = hole
        return out

    def extents(self, offset: int, length: int) -> list[tuple[int, int, str]]:
        """``[offset, length, kind]`` covering the range exactly; kind is ``data`` or ``hole``."""
        out: list[tuple[int, int, str]] = []
        pos = offset
        for start, stop in self.data_ranges(offset, length):
            if start > pos:
                out.append((pos, start - pos, "hole"))
            out.append((start, stop - start, "data"))
            pos = stop
        if pos < offset + length:
            out.append((pos, offset + length - pos, "hole"))
        return out

    def chunk_digest(self, offset: int, length: int) -> str:
        """The engine's digest of the chunk ``[offset, offset+length)``: ``"0"`` when it reads as zeroes."""
        return self.chunk_digest_counted(offset, length)[0]

    def chunk_digest_counted(self, offset: int, length: int) -> tuple[str, int]:
        """:meth:`chunk_digest` and the bytes read from the device to compute it (holes are not read)."""
        ranges = self.data_ranges(offset, length)
        if not ranges:
            return ZERO, 0
        buf = bytearray(length)
        for start, stop in ranges:
            buf[start - offset:stop - offset] = self.read(start, stop - start)
        nread = sum(stop - start for start, stop in ranges)
        if is_zero(buf):
            return ZERO, nread
        return digest(buf), nread


def parse_disk_arg(arg: str) -> tuple[str, Path]:
    """``NAME=PATH`` of ``--disk``; a bad value is a UsageError naming it."""
    name, sep, path = arg.partition("=")
    if not sep or not name or not path:
        raise UsageError(f"--disk {arg!r}: expected NAME=PATH (e.g. --disk sda=/dev/sda)")
    if not all(c.isalnum() or c in "-_." for c in name) or len(name) > 64:
        raise UsageError(f"--disk {arg!r}: NAME may hold letters, digits, '-', '_' and '.' only (64 at most)")
    return name, Path(path)
