"""Flush and freeze the file systems mounted from the served disks, for a consistent final pass.

:class:`Freezer` finds the mounts whose device is a served disk, one of its
partitions or a device stacked on it (``holders`` in sysfs: LVM, dm-crypt), runs
``sync`` and ``FIFREEZE`` on each, and guarantees the thaw:

* :meth:`Freezer.freeze` takes a hard ``limit`` (seconds); a watchdog thread
  thaws everything at that deadline whatever the migration host does (it may
  have died with the connection half open);
* the server thaws when the connection that froze closes, and when it stops;
* a ``FIFREEZE`` that does not return within the limit is abandoned: when it
  finally returns, its file system is thawed at once.

The root file system is never frozen (the agent itself, its logs and the
system's logger write there); it is reported as refused, like a file system
whose ``FIFREEZE`` fails, and the caller gives the seed's advice: stop the
services writing to it (the plan's hooks) before the final pass.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)
MAX_LIMIT = 600.0
ROOT_REASON = "the root file system is never frozen (the agent itself and the system logger write to it)"
#: What the agent logs beside every file system it leaves unfrozen (the seed's advice).
ADVICE = "stop the services that write to it before the final pass"


def _unescape(path: str) -> str:
    """``/proc/self/mountinfo`` escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[str, str, str]]:
    """``(major:minor, mount point, fs type)`` of each line of a mountinfo file."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        f = left.split()
        if not sep or len(f) < 5:
            continue
        out.append((f[2], _unescape(f[4]), right.split()[0] if right.split() else ""))
    return out


def related_devices(path: Path, sysfs: Path = Path("/sys")) -> set[str]:
    """``major:minor`` of a block device, its partitions and every device stacked on them."""
    try:
        st = os.stat(path)
    except OSError:
        return set()
    if not stat.S_ISBLK(st.st_mode):
        return set()
    first = sysfs / "dev" / "block" / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    seen: set[str] = set()
    todo = [first]
    while todo:
        node = todo.pop()
        try:
            node = node.resolve()
            devno = (node / "dev").read_text().strip()
        except OSError:
            continue
        if devno in seen:
            continue
        seen.add(devno)
        for child in node.iterdir() if node.is_dir() else ():
            if child.name.startswith(node.name) and (child / "partition").exists():
                todo.append(child)  # a partition
        holders = node / "holders"
        if holders.is_dir():
            todo.extend(holders.iterdir())
    return seen


@dataclass
class _Frozen:
    mount: str
    fd: int


@dataclass
class Freezer:
    disks: dict[str, Path]
    mountinfo: Path = Path("/proc/self/mountinfo")
    _frozen: list[_Frozen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _watchdog: threading.Timer | None = None
    owner: object | None = None
    #: Called with the mount points the watchdog thawed at the deadline (the server logs it).
    on_expire: Callable[[list[str]], None] | None = None

    def mounts(self) -> list[tuple[str, str]]:
        """``(mount point, fs type)`` of the file systems on the served disks."""
        devs: set[str] = set()
        for path in self.disks.values():
            devs |= related_devices(path)
        try:
            text = self.mountinfo.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [(mnt, fs) for dev, mnt, fs in parse_mountinfo(text) if dev in devs]

    def freeze(self, limit: float, owner: object = None) -> dict[str, object]:
        """Sync and freeze; thaw at ``limit`` seconds at the latest.  Never raises for one file system."""
        limit = max(0.1, min(limit, MAX_LIMIT))
        self.thaw()
        os.sync()
        frozen: list[str] = []
        refused: list[dict[str, str]] = []
        deadline = time.monotonic() + limit
        with self._lock:  # the watchdog runs before the first FIFREEZE: no moment is frozen without one
            self.owner = owner
            self._watchdog = threading.Timer(limit, self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()
        try:
            for mnt, _fs in self.mounts():
                if mnt == "/":
                    refused.append({"mount": mnt, "reason": ROOT_REASON})
                    continue
                why = self._freeze_one(mnt, deadline)
                if why:
                    refused.append({"mount": mnt, "reason": why})
                else:
                    frozen.append(mnt)
        except BaseException:
            self.thaw()
            raise
        if time.monotonic() >= deadline:  # a freeze that landed as the watchdog fired: release it now
            self._expire()
        return {"frozen": frozen, "refused": refused, "limit": limit}

    def _freeze_one(self, mnt: str, deadline: float) -> str:
        try:
            fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            return f"cannot open: {exc.strerror}"
        result: dict[str, object] = {}
        decided = threading.Lock()  # the worker's outcome and the caller's giving up are decided under it

        def work() -> None:
            try:
                fcntl.ioctl(fd, FIFREEZE, 0)
                ok, error = True, ""
            except OSError as exc:
                ok, error = False, exc.strerror or str(exc)
            with decided:
                result.update(ok=ok, error=error)
                late = bool(result.get("abandoned"))
            if late:  # the caller gave up: thaw at once, never leave it frozen
                if ok:
                    try:
                        fcntl.ioctl(fd, FITHAW, 0)
                    except OSError:
                        pass
                os.close(fd)

        t = threading.Thread(target=work, name="scmt-agent-freeze", daemon=True)
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
        with decided:
            if "ok" not in result:
                result["abandoned"] = True
                return "FIFREEZE did not return within the time limit (thawed as soon as it does)"
        if not result["ok"]:
            os.close(fd)
            return f"FIFREEZE failed: {result.get('error')}"
        with self._lock:
            self._frozen.append(_Frozen(mnt, fd))
        return ""

    def _expire(self) -> None:
        thawed = self.thaw()
        if thawed and self.on_expire is not None:
            self.on_expire(thawed)

    def thaw(self, owner: object = None) -> list[str]:
        """Thaw everything this freezer froze (only if ``owner`` froze it, when given)."""
        with self._lock:
            if owner is not None and owner is not self.owner:
                return []
            frozen, self._frozen = self._frozen, []
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
            self.owner = None
        out = []
        for f in frozen:
            try:
                fcntl.ioctl(f.fd, FITHAW, 0)
            except OSError:
                pass
            os.close(f.fd)
            out.append(f.mount)
        return out

    @property
    def frozen(self) -> list[str]:
        with self._lock:
            return [f.mount for f in self._frozen]
