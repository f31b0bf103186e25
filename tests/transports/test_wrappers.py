"""Retry (transient errors only, with reopen), token bucket, fault injection."""

from __future__ import annotations

import os

import pytest

from scmt_cli.blocks.api import full_copy
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.errors import SizeMismatchError, TransportError
from scmt_cli.events import RecordingReporter
from scmt_cli.transports.base import (
    SOURCE_OPTIONAL,
    TARGET_OPTIONAL,
    BlockSource,
    BlockTarget,
    Extent,
    Identity,
    SourceDefaults,
    TargetDefaults,
    open_source,
    open_target,
)
from scmt_cli.transports.wrappers import (
    Fault,
    FaultPlan,
    FaultySource,
    FaultyTarget,
    RetryingSource,
    RetryingTarget,
    RetryPolicy,
    SourceProxy,
    TargetProxy,
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


class _StubSource(SourceDefaults):
    """A source whose optional parts answer distinctive values (to see that wrappers forward them)."""

    size = 4096
    thread_safe = True

    def describe(self):
        return "stub://source"

    def extents(self, offset=0, length=None):
        yield Extent(offset, (length if length is not None else self.size - offset), "data")

    def read(self, offset, length):
        return b"s" * length

    def identity(self):
        return Identity({"stub": 1, "size": self.size})

    def changed_extents(self, since):
        return ([Extent(0, 512, "data")], f"after-{since}")

    def remote_digests(self, chunk_size):
        return [f"d{chunk_size}"]

    def stats(self):
        return {"bytes_on_wire": 7, "bytes_of_data": 14}

    def close(self):
        pass


class _StubTarget(TargetDefaults):
    size = 4096
    thread_safe = True
    fresh = False

    def describe(self):
        return "stub://target"

    def write(self, offset, data):
        pass

    def write_zeroes(self, offset, length):
        pass

    def read(self, offset, length):
        return bytes(length)

    def flush(self):
        pass

    def identity(self):
        return Identity({"stub": 2})

    def preallocate(self, offset, length):
        return True

    @property
    def punches_holes(self):
        return True

    def stats(self):
        return {"writes": 3}

    def close(self):
        pass


def _source_wrappers():
    from scmt_cli.services.migration.sync import _CancellableSource

    return {
        "SourceProxy": lambda s: SourceProxy(s),
        "RetryingSource": lambda s: RetryingSource(s, FAST),
        "ThrottledSource": lambda s: ThrottledSource(s, TokenBucket(1e12)),
        "FaultySource": lambda s: FaultySource(s, FaultPlan()),
        "_CancellableSource": lambda s: _CancellableSource(s, lambda: None),
    }


@pytest.mark.parametrize("name", sorted(_source_wrappers()))
def test_source_wrappers_forward_the_optional_parts(name):
    wrapped = _source_wrappers()[name](_StubSource())
    assert isinstance(wrapped, BlockSource)
    assert wrapped.identity() == Identity({"stub": 1, "size": 4096})
    assert wrapped.changed_extents("t1") == ([Extent(0, 512, "data")], "after-t1")
    assert wrapped.remote_digests(MiB) == [f"d{MiB}"]
    assert wrapped.stats() == {"bytes_on_wire": 7, "bytes_of_data": 14}
    buf = bytearray(10)
    wrapped.readinto(0, memoryview(buf))
    assert bytes(buf) == b"s" * 10


@pytest.mark.parametrize("name", ["TargetProxy", "RetryingTarget", "FaultyTarget"])
def test_target_wrappers_forward_the_optional_parts(name):
    make = {"TargetProxy": TargetProxy, "RetryingTarget": lambda t: RetryingTarget(t, FAST),
            "FaultyTarget": lambda t: FaultyTarget(t, FaultPlan())}[name]
    wrapped = make(_StubTarget())
    assert isinstance(wrapped, BlockTarget)
    assert wrapped.identity() == Identity({"stub": 2})
    assert wrapped.preallocate(0, 10) is True
    assert wrapped.punches_holes is True
    assert wrapped.stats() == {"writes": 3}


def test_proxies_define_every_part_themselves():
    """By construction: the proxies every wrapper derives from forward each part explicitly (no defaults)."""
    for cls, names in ((SourceProxy, SOURCE_OPTIONAL), (TargetProxy, TARGET_OPTIONAL)):
        for name in names:
            assert name in vars(cls), f"{cls.__name__} does not forward {name}"
