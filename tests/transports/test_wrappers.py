"""Retry (transient errors only, with reopen), token bucket, fault injection."""

from __future__ import annotations

import os

import pytest

from scmt_cli.blocks.api import full_copy
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.errors import SizeMismatchError, TransportError
from scmt_cli.events import RecordingReporter
from scmt_cli.transports.base import open_source, open_target
from scmt_cli.transports.wrappers import (
    Fault,
    FaultPlan,
    FaultySource,
    FaultyTarget,
    RetryingSource,
    RetryingTarget,
    RetryPolicy,
    ThrottledSource,
    TokenBucket,
)

MiB = 1024 * 1024
FAST = RetryPolicy(attempts=4, initial_wait=0.001, max_wait=0.002)


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "src.img"
    data = os.urandom(6 * MiB)
    p.write_bytes(data)
    return p, data


def test_transient_read_errors_are_retried_and_bytes_are_right(image, tmp_path):
    path, data = image
    plan = FaultPlan([Fault("read", start=2 * MiB, end=3 * MiB, times=2), Fault("write", times=1, after=3)])
    rep = RecordingReporter()
    src = RetryingSource(FaultySource(open_source(f"file://{path}"), plan), FAST, reporter=rep)
    dst = RetryingTarget(FaultyTarget(open_target(f"file://{tmp_path}/out.img", size=len(data)), plan), FAST)
    full_copy(src, dst, options=CopyOptions(chunk_size=MiB))
    src.close()
    dst.close()
    assert (tmp_path / "out.img").read_bytes() == data
    assert src.retrier.retries == 2 and dst.retrier.retries == 1
    assert sum(f.hits for f in plan.faults) == 3
    assert any("retrying" in r["message"] for r in rep.of_type("log"))


def test_permanent_errors_are_not_retried(image):
    path, _ = image
    plan = FaultPlan([Fault("read", times=1, transient=False)])
    src = RetryingSource(FaultySource(open_source(f"file://{path}"), plan), FAST)
    with pytest.raises(TransportError, match="permanent"):
        src.read(0, 10)
    assert src.retrier.retries == 0
    with pytest.raises(SizeMismatchError):  # not a TransportError: never retried
        src.read(6 * MiB - 1, 10)
    src.close()


def test_retries_give_up_after_the_policy(image):
    path, _ = image
    plan = FaultPlan([Fault("read", times=-1)])
    src = RetryingSource(FaultySource(open_source(f"file://{path}"), plan), FAST)
    with pytest.raises(TransportError, match="transient"):
        src.read(0, 10)
    assert plan.faults[0].hits == FAST.attempts


def test_retry_reopens_the_transport(image):
    path, data = image
    plan = FaultPlan([Fault("read", times=1)])
    opened = []

    def reopen():
        s = open_source(f"file://{path}")
        opened.append(s)
        return s

    src = RetryingSource(FaultySource(open_source(f"file://{path}"), plan), FAST, reopen=reopen)
    assert src.read(MiB, 100) == data[MiB : MiB + 100]
    assert len(opened) == 1 and src.inner is opened[0]
    old = src.retrier.retired[0]
    assert old.inner._fd >= 0, "the old object must stay usable for calls still running on it"
    src.close()
    assert old.inner._fd == -1 and opened[0]._fd == -1


def test_reopen_under_concurrency_never_breaks_other_threads(image):
    """Many threads read while transient errors force reopens: every read returns the right bytes."""
    import threading

    path, data = image
    plan = FaultPlan([Fault("read", times=6)])

    def reopen():
        return FaultySource(open_source(f"file://{path}"), plan)

    src = RetryingSource(reopen(), FAST, reopen=reopen)
    errors = []

    def worker(k):
        try:
            for j in range(30):
                off = ((k * 31 + j * 7) % 5) * MiB
                assert src.read(off, MiB) == data[off : off + MiB]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    src.close()
    assert not errors and plan.faults[0].hits == 6


def test_token_bucket_rate_with_fake_clock():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(1000.0, burst=100.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        bucket.consume(500)
    # 5000 bytes at 1000 B/s with 100 bytes of initial credit: 4.9 s.
    assert now[0] == pytest.approx(4.9)
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)


def test_throttled_source_consumes_tokens(image):
    path, data = image
    taken = []

    class Bucket:
        def consume(self, n):
            taken.append(n)
            return 0.0

    src = ThrottledSource(open_source(f"file://{path}"), Bucket())  # type: ignore[arg-type]
    buf = bytearray(4096)
    src.readinto(0, memoryview(buf))
    assert src.read(10, 20) == data[10:30] and bytes(buf) == data[:4096]
    assert taken == [4096, 20]
    src.close()


def test_fault_after_and_range():
    plan = FaultPlan([Fault("write", start=100, end=200, after=1, times=1)])
    plan.check("write", 0, 50)  # outside the range
    plan.check("write", 150, 10)  # first match is skipped (after=1)
    with pytest.raises(TransportError):
        plan.check("write", 150, 10)
    plan.check("write", 150, 10)  # times exhausted
