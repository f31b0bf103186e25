"""--bandwidth stays exact with 16 chunks in flight over NBD: one shared token bucket, no read around it.

Timed on a virtual clock, never on the wall: sleeping advances the clock
instead of waiting, so the test is as fast as the copy and cannot flake on a
loaded machine.  Each thread's time is its last wake-up; every read at the
wire is recorded at its thread's time, and the bytes read by any time ``t``
must stay within ``burst + rate * t``.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import pytest

from scmt_cli.events import NullReporter
from scmt_cli.services import copy as copy_service
from scmt_cli.services.copy import CopyRequest, run_copy
from scmt_cli.transports.base import BlockSource
from scmt_cli.transports.wrappers import SourceProxy, TokenBucket
from tests.nbd.servers import Launcher, needs_nbdkit

pytestmark = [pytest.mark.nbd, needs_nbdkit]
MiB = 1 << 20


class VirtualClock:
    """A clock that only sleeps move: ``sleep(d)`` wakes the thread at the time it last read plus ``d``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = 0.0
        self._local = threading.local()

    def clock(self) -> float:
        with self._lock:
            self._local.t = self._now
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            wake = getattr(self._local, "t", 0.0) + seconds
            self._local.t = wake
            self._now = max(self._now, wake)

    def thread_time(self) -> float:
        return float(getattr(self._local, "t", 0.0))


class WireLog(SourceProxy):
    """Records ``(thread time, bytes)`` of every read that reaches the transport."""

    def __init__(self, inner: BlockSource, vclock: VirtualClock, log: list[tuple[float, int]]) -> None:
        super().__init__(inner)
        self.vclock = vclock
        self.log = log
        self.lock = threading.Lock()

    def _note(self, n: int) -> None:
        with self.lock:
            self.log.append((self.vclock.thread_time(), n))

    def readinto(self, offset: int, buf: memoryview) -> None:
        self._note(len(buf))
        self.inner.readinto(offset, buf)

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
        self._note(sum(len(b) for _, b in ranges))
        self.inner.readinto_many(ranges)


def test_the_bandwidth_cap_holds_at_16_in_flight(servers: Launcher, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    size, rate = 128 * MiB, 4 * MiB
    srv = servers.nbdkit("pattern", f"{size // MiB}M", tcp=True, readonly=True)
    vclock = VirtualClock()
    buckets: list[TokenBucket] = []

    def bucket(*args: object, **kw: object) -> TokenBucket:
        b = TokenBucket(*args, clock=vclock.clock, sleep=vclock.sleep, **kw)  # type: ignore[arg-type]
        buckets.append(b)
        return b

    monkeypatch.setattr(copy_service, "TokenBucket", bucket)
    log: list[tuple[float, int]] = []
    req = CopyRequest(srv.url, f"file://{tmp_path / 'out.img'}", bandwidth=float(rate), in_flight=16)
    res = run_copy(req, NullReporter(), None, wrap_source=functools.partial(WireLog, vclock=vclock, log=log))
    assert res.stats.bytes_read == size and sum(n for _, n in log) == size
    assert len(buckets) == 1, "every reader must share one bucket"
    burst = buckets[0].burst
    moved = 0
    for t, n in sorted(log):
        moved += n
        assert moved <= burst + rate * t + 1, f"{moved} bytes read by t={t:.3f}s: over the cap"
    t_end = max(t for t, _ in log)
    assert 0.97 <= (size - burst) / (rate * t_end) <= 1.0 + 1e-9  # the cap, and not far under it
    assert (tmp_path / "out.img").stat().st_size == size
