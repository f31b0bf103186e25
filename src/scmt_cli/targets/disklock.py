"""One writer per target disk: an exclusive ``flock`` on a sidecar ``<disk>.lock`` file.

Every step that writes a target disk file takes its lock first: the sync copy
(:func:`scmt_cli.services.migration.diskcopy.copy_disk`), ``qemu-img convert``
(finalize) and the guest converter.  The lock is per disk file, not per VM
or per state store, so it also holds between two state stores, two hosts
sharing a file system (where ``flock`` is honoured) and a child process that
outlived its scmt: the converter inherits the lock's descriptor
(``pass_fds``), so as long as it runs, the disk stays locked even if scmt was
killed with SIGKILL.

A second writer never waits: :meth:`DiskLock.acquire` raises
:class:`~scmt_cli.errors.LockedError` (exit 40) naming the holder, which the
lock file records as JSON (``pid``, ``host``, ``what``, ``since``) while held.
The kernel drops the lock when the last descriptor closes; a stale lock file
left behind is harmless (it is locked again, not trusted).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from scmt_cli.errors import LockedError


def lock_path(disk: str | Path) -> Path:
    """The sidecar lock file of ``disk`` (``disk0.raw`` -> ``disk0.raw.lock``)."""
    p = Path(disk)
    return p.with_name(p.name + ".lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(path: Path) -> str:
    """Who holds the lock file ``path``, from what it records (best effort)."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    pid = int(info.get("pid", 0))
    who = f"{info.get('what', 'a writer')} (pid {pid} on {info.get('host', '?')}, since {info.get('since', '?')})"
    if info.get("host") == socket.gethostname() and not _alive(pid):
        who += "; that process has ended, so a child it started (e.g. the guest converter) still holds the lock"
    return who


class DiskLock:
    """An exclusive lock on one disk file; see the module docstring.  Not reentrant."""

    def __init__(self, disk: str | Path, *, what: str) -> None:
        self.disk = Path(disk)
        self.path = lock_path(self.disk)
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> DiskLock:
        """Take the lock or raise :class:`LockedError` naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"target disk {self.disk} is being written by {describe_holder(self.path)}",
                hint="wait for it to finish, or stop that process (by its pid), then run the command again",
            ) from None
        except OSError:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # closing drops the flock (children that inherited it keep it until they exit)

    def __enter__(self) -> DiskLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def disk_locks(disks: Iterable[str | Path], *, what: str) -> Iterator[list[DiskLock]]:
    """Hold the locks of every disk in ``disks`` (sorted, so two holders never deadlock)."""
    held: list[DiskLock] = []
    try:
        for d in sorted({str(Path(d).absolute()) for d in disks}):
            held.append(DiskLock(d, what=what).acquire())
        yield held
    finally:
        for lk in reversed(held):
            lk.release()


def file_url_path(url: str) -> str | None:
    """The local path of a ``file://`` URL (query dropped), ``None`` for any other URL."""
    if not url.startswith("file://"):
        return None
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).path) or None


def lock_target_url(url: str, *, what: str) -> DiskLock | None:
    """The acquired lock of a ``file://`` target (``None`` for other URLs: their server serialises writers)."""
    path = file_url_path(url)
    return DiskLock(path, what=what).acquire() if path else None
