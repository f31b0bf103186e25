"""Point-in-time clones of disk files (the disks a test failover boots).

:func:`clone_files` copies each ``(src, dst)`` pair:

* as a reflink (``FICLONE``: the clone shares the source's blocks until either
  is written, so it is instant and takes no space) where the file system can
  (XFS, btrfs, ...);
* else as a sparse copy: only the source's data extents (``SEEK_DATA`` /
  ``SEEK_HOLE``) are copied (``copy_file_range``), holes stay holes.  Before a
  sparse copy the free space of the destination's file system is checked
  against the data to copy, and too little is
  :class:`~scmt_cli.errors.NoSpaceError` (exit 30, ``no space left on device:
  PATH (needs N more, F free)``) before anything is written; a file system
  that fills up meanwhile gives the same error.

Each clone is written to a temporary name and renamed, so a ``dst`` that
exists is always complete.  The sources are only read.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

from scmt_cli.errors import TargetPlatformError, free_bytes, no_space

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM}
_STEP = 64 * 1024 * 1024


def _reflink(src_fd: int, dst_fd: int) -> bool:
    """Clone ``src_fd`` into ``dst_fd`` with ``FICLONE``; False when the file system cannot."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        if exc.errno in _NO_REFLINK:
            return False
        raise
    return True


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of every data extent of ``fd`` (the whole file where holes cannot be seen)."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole after pos
                break
            return [(0, size)]
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        out.append((start, end - start))
        pos = end
    return out


def allocated(path: Path) -> int:
    """Bytes of data a sparse copy of ``path`` writes (its allocated blocks, at most its size)."""
    st = path.stat()
    return min(st.st_blocks * 512, st.st_size)


def _copy_range(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    end = offset + length
    pos = offset
    while pos < end:
        n = min(_STEP, end - pos)
        try:
            done = os.copy_file_range(src_fd, dst_fd, n, pos, pos)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            data = os.pread(src_fd, n, pos)
            done = os.pwrite(dst_fd, data, pos)
        if done <= 0:
            raise TargetPlatformError(f"clone: short copy at offset {pos}")
        pos += done


def _sparse_copy(src_fd: int, dst_fd: int, size: int) -> None:
    for offset, length in data_extents(src_fd, size):
        _copy_range(src_fd, dst_fd, offset, length)
    os.ftruncate(dst_fd, size)


def clone_files(pairs: Sequence[tuple[Path, Path]]) -> str:
    """Clone every ``(src, dst)``; return ``reflink``, ``sparse copy`` or ``reflink and sparse copy``."""
    if not pairs:
        return "nothing to clone"
    used: set[str] = set()
    checked = False
    for i, (src, dst) in enumerate(pairs):
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.partial")
        tmp.unlink(missing_ok=True)
        try:
            with open(src, "rb") as s, open(tmp, "wb") as d:
                size = os.fstat(s.fileno()).st_size
                if _reflink(s.fileno(), d.fileno()):
                    used.add("reflink")
                else:
                    if not checked:  # before the first byte is copied: room for every disk still to copy
                        _check_room(dst.parent, [p for p, _ in pairs[i:]])
                        checked = True
                    _sparse_copy(s.fileno(), d.fileno(), size)
                    used.add("sparse copy")
            os.replace(tmp, dst)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise no_space(str(dst), allocated(src), hint=_HINT) from None
            raise TargetPlatformError(f"cannot clone {src} to {dst}: {exc.strerror or exc}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return " and ".join(sorted(used))


_HINT = ("free space on the target's file system (a test copy needs room for the synced disks' data where the file "
         "system cannot share blocks), then run the test failover again")


def _check_room(folder: Path, sources: Sequence[Path]) -> None:
    needs = sum(allocated(p) for p in sources)
    free = free_bytes(str(folder))
    if free is not None and needs > free:
        raise no_space(str(folder), needs, hint=_HINT)
