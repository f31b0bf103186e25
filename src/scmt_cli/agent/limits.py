"""Resource limits of the agent (the seed's promise to the source machine) and its resource figures.

Both governors keep a measured *busy* time at or under ``share`` of the
wall-clock time over a sliding window of :data:`WINDOW` seconds by making the
caller sleep (:meth:`DutyCycle.pace`):

* :class:`CpuShare` (``--cpu-limit``): busy is the agent process's CPU time
  (all threads: hashing, zstd, TLS, the tracer);
* :class:`StorageShare` (``--storage-share``): busy is the time during which
  at least one of the agent's reads is in flight on its disks - iostat's
  %util, counted for the agent's reads only, so concurrent reads count once.

The read queue depth and the network bandwidth are enforced by the server
(its worker pool and token bucket).  :func:`usage` is the core of the
``STATS`` reply; :func:`usage_since` turns two replies into the figures of
what happened between them.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable
from typing import Any

#: Seconds over which busy time is compared with elapsed time (idle time earlier than that is no credit).
WINDOW = 2.0
#: Longest single pause (a pause is re-evaluated after it).
MAX_PAUSE = 5.0
#: Defaults of ``scmt agent serve``, in percent: the seed's storage load (30%), and the CPU share that
#: sending 300 Mbit/s (the default bandwidth) with TLS and zstd needs, measured (see the CLI's help).
DEFAULT_STORAGE_SHARE = 30.0
DEFAULT_CPU_LIMIT = 25.0


class DutyCycle:
    """Sleep so that busy time stays <= ``share`` (0 < share <= 1) of the elapsed time.

    ``now`` and ``sleep`` are the wall clock and the pause (tests give fake ones).
    """

    def __init__(self, share: float, *, now: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self._now, self._sleep = now, sleep
        self._lock = threading.Lock()
        self._t0 = now()
        self.slept = 0.0

    def busy(self) -> float:
        """Busy seconds since the current window started."""
        raise NotImplementedError

    def _new_window(self) -> None:
        raise NotImplementedError

    def pace(self) -> None:
        """Pause the caller until the busy time is within its share of the window again."""
        if self.share >= 1:
            return
        with self._lock:
            elapsed = self._now() - self._t0
            wait = self.busy() / self.share - elapsed
            if elapsed > WINDOW and wait <= 0:
                self._t0 = self._now()
                self._new_window()
        if wait > 0:
            pause = min(wait, MAX_PAUSE)
            self._sleep(pause)
            with self._lock:
                self.slept += pause


class CpuShare(DutyCycle):
    """Busy = this process's CPU time (``cpu`` clock: ``time.process_time`` unless a test gives one)."""

    def __init__(self, share: float, *, cpu: Callable[[], float] = time.process_time, **kw: Any) -> None:
        self._cpu = cpu
        self._cpu0 = cpu()
        super().__init__(share, **kw)

    def busy(self) -> float:
        return self._cpu() - self._cpu0

    def _new_window(self) -> None:
        self._cpu0 = self._cpu()


class StorageShare(DutyCycle):
    """Busy = time with at least one read in flight; readers call :meth:`begin`, then :meth:`end` (which paces)."""

    def __init__(self, share: float, **kw: Any) -> None:
        super().__init__(share, **kw)
        self._done = 0.0
        self._inflight = 0
        self._since = 0.0
        #: Seconds with at least one read in flight since the start (the agent's storage load, all windows).
        self.total_busy = 0.0

    def begin(self) -> None:
        with self._lock:
            if self._inflight == 0:
                self._since = self._now()
            self._inflight += 1

    def end(self) -> None:
        with self._lock:
            self._inflight -= 1
            if self._inflight == 0:
                spent = self._now() - self._since
                self._done += spent
                self.total_busy += spent
        self.pace()

    def busy(self) -> float:
        return self._done + (self._now() - self._since if self._inflight else 0.0)

    def _new_window(self) -> None:
        self._done = 0.0
        if self._inflight:
            self._since = self._now()


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started its program (``VmHWM``).

    Not ``ru_maxrss``: Linux keeps that across ``execve``, so an agent started
    by a large process (a service manager, a test runner) would report its
    parent's memory as its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def usage() -> dict[str, float | int]:
    """This process's peak RSS (bytes) and CPU seconds (user + system)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_bytes": peak_rss_bytes(), "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 3)}


def usage_since(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the agent used between two ``STATS`` replies: CPU seconds, disk bytes read and pauses per limit;
    its peak RSS (since it started) and limits as of ``after``."""
    def delta(key: str) -> float:
        a, b = after.get(key), before.get(key)
        return float(a) - float(b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else 0.0

    paused_a, paused_b = after.get("throttled_seconds") or {}, before.get("throttled_seconds") or {}
    return {
        "peak_rss_bytes": after.get("peak_rss_bytes"),
        "cpu_seconds": round(delta("cpu_seconds"), 3),
        "disk_bytes_read": int(delta("disk_bytes_read")),
        "disk_busy_seconds": round(delta("disk_busy_seconds"), 3),
        "throttled_seconds": {k: round(float(paused_a.get(k, 0)) - float(paused_b.get(k, 0)), 3)
                              for k in paused_a if isinstance(paused_a.get(k), (int, float))},
        "limits": after.get("limits", {}),
    }
