"""Resource limits of the agent (the seed's promise to the source machine) and its resource figures.

* :class:`DutyCycle` keeps a measured busy time at or under ``share`` of the
  wall-clock time over a sliding window by making the caller sleep: the CPU
  governor measures the process's CPU time (``--cpu-limit``), the storage
  governor the time spent in disk reads (``--storage-share``, the agent's
  share of the device's busy time, like ``iostat``'s %util);
* the read queue depth and the network bandwidth are enforced by the server
  (its worker pool and token bucket);
* :func:`usage` is the ``STATS`` reply: peak RSS, CPU seconds, bytes read.
"""

from __future__ import annotations

import resource
import threading
import time

WINDOW = 2.0


class DutyCycle:
    """Sleep so that busy time stays <= ``share`` (0 < share <= 1) of the elapsed time."""

    def __init__(self, share: float, clock: str = "cpu") -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share, self.clock = share, clock
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._busy0 = time.process_time()
        self._busy = 0.0
        self.slept = 0.0

    def _busy_now(self) -> float:
        return time.process_time() - self._busy0 if self.clock == "cpu" else self._busy

    def add(self, seconds: float) -> None:
        """Report ``seconds`` of busy time (``io`` clock), then pace."""
        with self._lock:
            self._busy += seconds
        self.pace()

    def pace(self) -> None:
        if self.share >= 1:
            return
        with self._lock:
            elapsed = time.monotonic() - self._t0
            busy = self._busy_now()
            wait = busy / self.share - elapsed
            if elapsed > WINDOW and wait <= 0:  # start a new window
                self._t0, self._busy0, self._busy = time.monotonic(), time.process_time(), 0.0
        if wait > 0:
            time.sleep(min(wait, 5.0))
            with self._lock:
                self.slept += min(wait, 5.0)


def usage() -> dict[str, float | int]:
    """This process's peak RSS (bytes) and CPU seconds (user + system)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_bytes": int(ru.ru_maxrss) * 1024, "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 3)}
