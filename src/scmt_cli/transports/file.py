"""``file://`` transport: raw disk images and block devices.

URL forms: ``file:///abs/path.img``, ``file://localhost/abs/path``,
``file:relative/path``; query option ``direct``: unset (default) means
O_DIRECT *writes* on targets and buffered reads; ``direct=1`` adds O_DIRECT
reads; ``direct=0`` disables O_DIRECT.  Requests that are not 4 KiB-aligned
(offset, length, buffer address) and filesystems without O_DIRECT (tmpfs)
fall back to buffered I/O on the same file.

Why direct writes by default: a copy writes each byte once, so the page cache
only costs (measured here for 1 GiB of fresh writes: buffered 0.17-1.4 s of
CPU in page allocation plus 0.25 s of fdatasync; O_DIRECT 0.35 s wall, 0.04 s
CPU) and it evicts the cache the rest of the host is using.

* Allocation comes from ``SEEK_DATA``/``SEEK_HOLE``; a filesystem without them
  reports the whole file as one ``data`` extent.
* A target that does not exist is created with the size the caller asks for
  and reports ``fresh=True`` (it reads as zeroes: the engine skips zero
  chunks and writes data sparsely).  An existing target is opened in place
  and must be at least that size.
* ``write_zeroes``/``trim`` use ``fallocate(PUNCH_HOLE|KEEP_SIZE)`` on regular
  files and ``fallocate(ZERO_RANGE)`` on block devices, falling back to
  writing zeroes.
* Everything uses ``os.pread``/``os.pwrite`` on one descriptor, so objects are
  thread-safe.

Sources are regular files and block devices: a character device
(``/dev/zero``), a FIFO or a socket has no size to copy and is refused with
UsageError (2) instead of being copied as an empty disk.

Errors: a missing or unreadable source is SourceUnreachableError (10); a
target that cannot be opened for writing because of permissions or a
read-only filesystem is ReadOnlyTargetError (33); a target smaller than the
source or a source that shrinks while read is SizeMismatchError (32); other
I/O errors are TransportError (30, ``transient`` for EIO/EAGAIN/EINTR).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from scmt_cli.errors import (
    ReadOnlyTargetError,
    SizeMismatchError,
    SourceUnreachableError,
    TargetMissingError,
    TransportError,
    UsageError,
    no_space,
)
from scmt_cli.transports.base import Extent, Identity, Scheme, SourceDefaults, TargetDefaults, register

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
_ZERO_BUF = bytes(4 * 1024 * 1024)
_TRANSIENT = {errno.EIO, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT}
_ALIGN = 4096

_libc: Any = None
_libc_lock = threading.Lock()


def _fallocate(fd: int, mode: int, offset: int, length: int) -> bool:
    """Call fallocate(2); True on success, False when unsupported (EOPNOTSUPP, ENOSYS, EINVAL)."""
    global _libc
    with _libc_lock:
        if _libc is None:
            lib = ctypes.CDLL(None, use_errno=True)  # the interpreter's C library (find_library forks ldconfig)
            lib.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            lib.fallocate.restype = ctypes.c_int
            _libc = lib
    if _libc.fallocate(fd, mode, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
        return False
    raise OSError(err, os.strerror(err))


def parse_file_url(url: str) -> tuple[str, dict[str, str]]:
    """Return ``(path, options)`` of a ``file:`` URL; UsageError if it is not one we accept."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise UsageError(f"not a file URL: {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise UsageError(f"file URL {url!r} names host {parts.netloc!r}; only local paths are supported",
                         hint="use file:///absolute/path")
    path = unquote(parts.path)
    if not path:
        raise UsageError(f"file URL {url!r} has no path", hint="use file:///absolute/path")
    opts = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(opts) - {"direct"}
    if unknown:
        raise UsageError(f"file URL {url!r}: unknown option(s) {', '.join(sorted(unknown))} (known: direct)")
    return path, opts


def _flag(opts: dict[str, str], name: str) -> bool:
    val = opts.get(name, "0").lower()
    if val in ("1", "true", "yes", "on"):
        return True
    if val in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"file URL option {name}={val!r}: expected 0 or 1")


def _io_error(what: str, path: str, exc: OSError) -> TransportError:
    if exc.errno == errno.ENOSPC:  # also from fdatasync: delayed allocation reports it late
        return no_space(path)
    transient = exc.errno in _TRANSIENT
    return TransportError(f"{what} {path}: {exc.strerror or exc}", transient=transient)


class _FileBase:
    """Shared size/read logic of sources and targets (one descriptor, pread/pwrite)."""

    def __init__(self, path: str, fd: int, direct_fd: int | None, direct_reads: bool = True) -> None:
        self.path = os.path.abspath(path)  # describe() keys checkpoints: independent of the cwd
        self._fd = fd
        self._direct_fd = direct_fd
        self._direct_reads = direct_reads
        st = os.fstat(fd)
        self.is_block = stat.S_ISBLK(st.st_mode)
        self._size = os.lseek(fd, 0, os.SEEK_END) if self.is_block else st.st_size

    @property
    def size(self) -> int:
        return self._size

    @property
    def thread_safe(self) -> bool:
        return True

    def describe(self) -> str:
        return f"file://{self.path}" if self.path.startswith("/") else f"file:{self.path}"

    def readinto(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` from ``offset`` (exactly ``len(buf)`` bytes, or SizeMismatchError)."""
        length = len(buf)
        fd = self._fd
        if (self._direct_fd is not None and self._direct_reads and offset % _ALIGN == 0
                and length % _ALIGN == 0 and _aligned(buf)):
            fd = self._direct_fd
        got = 0
        try:
            while got < length:
                n = os.preadv(fd, [buf[got:]], offset + got)
                if n == 0:
                    break
                got += n
        except OSError as exc:
            raise _io_error("cannot read", self.path, exc) from None
        if got != length:
            raise SizeMismatchError(
                f"{self.describe()} ended at {offset + got} while reading {length} bytes at {offset} "
                f"(expected size {self._size}: did it shrink during the copy?)")

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise SizeMismatchError(
                f"read of {length} bytes at {offset} is past the end of {self.describe()} ({self._size} bytes)")
        buf = bytearray(length)
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def close(self) -> None:
        for fd in (self._fd, self._direct_fd):
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = -1
        self._direct_fd = None

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _aligned(buf: memoryview) -> bool:
    try:
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    except (TypeError, ValueError):
        return False
    return addr % _ALIGN == 0


def _open_direct(path: str, flags: int) -> int | None:
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return None
    try:
        return os.open(path, flags | direct)
    except OSError:
        return None


class FileSource(_FileBase, SourceDefaults):
    """A raw image or block device read with pread; allocation from SEEK_DATA/SEEK_HOLE."""

    def __init__(self, path: str, *, direct: bool = False) -> None:
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below); cleared after.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        except FileNotFoundError:
            raise SourceUnreachableError(f"source {path} does not exist") from None
        except PermissionError:
            raise SourceUnreachableError(f"source {path}: permission denied") from None
        except IsADirectoryError:
            raise SourceUnreachableError(f"source {path} is a directory, not a disk image") from None
        except OSError as exc:
            raise SourceUnreachableError(f"cannot open source {path}: {exc.strerror or exc}") from None
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            os.close(fd)
            raise SourceUnreachableError(f"source {path} is a directory, not a disk image")
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            os.close(fd)
            kind = "a character device" if stat.S_ISCHR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
            raise UsageError(f"source {path} is {kind}: its size cannot be known, so it cannot be copied as a disk",
                             hint="copy a disk image (a regular file) or a block device")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        super().__init__(path, fd, _open_direct(path, os.O_RDONLY | os.O_CLOEXEC) if direct else None)

    def identity(self) -> Identity:
        """Which file this is and its state: device, inode, size and mtime (a block device: its number)."""
        st = os.fstat(self._fd)
        if self.is_block:
            return Identity({"rdev": st.st_rdev, "size": self._size})
        return Identity({"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns})

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        """Data and hole extents covering ``[offset, offset+length)`` exactly."""
        end = self._size if length is None else min(self._size, offset + length)
        pos = offset
        while pos < end:
            try:
                data = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    yield Extent(pos, end - pos, "hole")
                    return
                if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # no SEEK_DATA support
                    yield Extent(pos, end - pos, "data")
                    return
                raise _io_error("cannot map", self.path, exc) from None
            if data > pos:
                stop = min(data, end)
                yield Extent(pos, stop - pos, "hole")
                pos = stop
                if pos >= end:
                    return
            try:
                hole = os.lseek(self._fd, pos, os.SEEK_HOLE)
            except OSError as exc:
                raise _io_error("cannot map", self.path, exc) from None
            stop = min(max(hole, pos + 1), end) if hole > pos else end
            yield Extent(pos, stop - pos, "data")
            pos = stop


class FileTarget(_FileBase, TargetDefaults):
    """A raw image (created sparse when missing) or block device written with pwrite."""

    def __init__(self, path: str, *, size: int | None = None, direct: bool | None = None) -> None:
        self._fresh = False
        flags = os.O_RDWR | os.O_CLOEXEC
        try:
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                if size is None:
                    raise TargetMissingError(f"target {path} does not exist and no size was given to create it"
                                             ) from None
                try:
                    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
                except FileNotFoundError:
                    raise TargetMissingError(f"target directory {os.path.dirname(path) or '.'} does not exist",
                                             hint="create it first (scmt creates the disk file, not its folder)"
                                             ) from None
                self._fresh = True
        except PermissionError:
            raise ReadOnlyTargetError(f"target {path} is not writable: permission denied") from None
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise ReadOnlyTargetError(f"target {path} is on a read-only filesystem") from None
            if exc.errno == errno.EISDIR:
                raise TransportError(f"target {path} is a directory, not a disk image") from None
            raise _io_error("cannot open target", path, exc) from None
        if self._fresh:
            try:
                os.ftruncate(fd, size or 0)
            except OSError as exc:
                os.close(fd)
                os.unlink(path)
                raise _io_error("cannot create target", path, exc) from None
        super().__init__(path, fd, None if direct is False else _open_direct(path, flags),
                         direct_reads=direct is True)
        if size is not None and self._size < size:
            self.close()
            raise SizeMismatchError(f"target {path} is smaller than the source: {self._size} < {size} bytes",
                                    hint="grow the target or remove it so scmt creates it")

    @property
    def fresh(self) -> bool:
        return self._fresh

    @property
    def punches_holes(self) -> bool:
        """True when :meth:`write_zeroes` deallocates (a regular file: PUNCH_HOLE); the copy engine then
        punches zero runs inside data chunks instead of writing them, keeping the image sparse."""
        return not self.is_block

    def identity(self) -> Identity:
        """Which file this is (device and inode; a block device's device number), not where it is.

        A resumed copy compares it with the one its checkpoint recorded: a file replaced at the
        same path holds none of the chunks the checkpoint says were written.
        """
        st = os.fstat(self._fd)
        return Identity({"rdev": st.st_rdev} if self.is_block else {"dev": st.st_dev, "ino": st.st_ino})

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if offset < 0 or offset + len(view) > self._size:
            raise SizeMismatchError(
                f"write of {len(view)} bytes at {offset} is past the end of {self.describe()} ({self._size} bytes)")
        fd = self._fd
        if (self._direct_fd is not None and offset % _ALIGN == 0 and len(view) % _ALIGN == 0
                and _aligned(view)):
            fd = self._direct_fd
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(fd, view[done:], offset + done)
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise ReadOnlyTargetError(f"target {self.path} became read-only") from None
            if exc.errno == errno.ENOSPC:
                raise no_space(self.path) from None
            raise _io_error("cannot write", self.path, exc) from None

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make ``[offset, offset+length)`` read as zeroes (hole punch / zero range / plain zeroes)."""
        if offset < 0 or offset + length > self._size:
            raise SizeMismatchError(f"zeroing {length} bytes at {offset} is past the end of {self.describe()}")
        if length == 0:
            return
        mode = FALLOC_FL_ZERO_RANGE if self.is_block else FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        try:
            if _fallocate(self._fd, mode, offset, length):
                return
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EBADF, errno.ENOTTY):
                raise _io_error("cannot zero", self.path, exc) from None
        pos = offset
        while pos < offset + length:
            n = min(len(_ZERO_BUF), offset + length - pos)
            self.write(pos, memoryview(_ZERO_BUF)[:n])
            pos += n

    def preallocate(self, offset: int, length: int) -> bool:
        """Reserve ``[offset, offset+length)`` of a regular file without changing what it reads as.

        ``fallocate(KEEP_SIZE)`` creates unwritten extents: the range still
        reads as zeroes, but later writes into it are overwrites, which ext4
        and XFS let run in parallel under O_DIRECT (allocating direct writes
        are serialised on the inode lock).  Measured on the bench VM (ext4,
        virtio disk): a 2 GiB half-allocated image copies ~13% faster.  Best
        effort: False when unsupported (block devices, filesystems without
        fallocate) or when it fails (e.g. ENOSPC -- the writes then report the
        error themselves); it never raises.
        """
        if self.is_block or length <= 0 or offset < 0 or offset + length > self._size:
            return False
        try:
            return _fallocate(self._fd, FALLOC_FL_KEEP_SIZE, offset, length)
        except OSError:
            return False

    def trim(self, offset: int, length: int) -> None:
        """Discard a range; here identical to :meth:`write_zeroes` (the range reads as zeroes)."""
        self.write_zeroes(offset, length)

    def flush(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise _io_error("cannot flush", self.path, exc) from None


def open_source(url: str, **options: Any) -> FileSource:
    """Open ``url`` for reading.  Options: ``direct`` (bool)."""
    path, q = parse_file_url(url)
    return FileSource(path, direct=bool(options.get("direct")) or _flag(q, "direct"))


def open_target(url: str, size: int | None = None, **options: Any) -> FileTarget:
    """Open ``url`` for writing, creating it with ``size`` bytes if it does not exist."""
    path, q = parse_file_url(url)
    direct = options.get("direct")
    if direct is None and "direct" in q:
        direct = _flag(q, "direct")
    return FileTarget(path, size=size, direct=direct)


register(Scheme("file", open_source, open_target, help="raw disk image or block device: file:///path"))
