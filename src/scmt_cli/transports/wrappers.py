"""Wrappers with the BlockSource/BlockTarget interface: retry, bandwidth limit, fault injection.

They stack like restic's backend wrappers::

    src = RetryingSource(ThrottledSource(open_source(url), TokenBucket(rate)), reopen=...)

Every wrapper forwards the whole interface of ``transports.base`` explicitly,
the optional parts included (``readinto``, ``readinto_many``, ``identity``,
``changed_extents``, ``remote_digests``, ``stats``; for targets ``identity``,
``preallocate``, ``punches_holes``, ``stats``), so an operation never bypasses
a wrapper and a caller never has to look under one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from scmt_cli.errors import ScmtError, SourceUnreachableError, TransportError
from scmt_cli.events import NullReporter, Reporter
from scmt_cli.transports.base import BlockSource, BlockTarget, ChangedExtents, Extent, Identity

T = TypeVar("T")


class SourceProxy:
    """A BlockSource that forwards everything to ``inner``; wrappers override what they change.

    A subclass that overrides ``read`` but not ``readinto`` gets a ``readinto``
    that goes through its ``read``, so it is never bypassed by the engine's
    zero-copy path.
    """

    def __init__(self, inner: BlockSource) -> None:
        self.inner = inner

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def thread_safe(self) -> bool:
        return self.inner.thread_safe

    def describe(self) -> str:
        return self.inner.describe()

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        return self.inner.extents(offset, length)

    def read(self, offset: int, length: int) -> bytes:
        return self.inner.read(offset, length)

    def readinto(self, offset: int, buf: memoryview) -> None:
        if type(self).read is not SourceProxy.read:  # a subclass that changes read() only: honour it
            buf[:] = self.read(offset, len(buf))
        else:
            self.inner.readinto(offset, buf)

    def identity(self) -> Identity | None:
        return self.inner.identity()

    def changed_extents(self, since: str | None) -> ChangedExtents | None:
        return self.inner.changed_extents(since)

    def remote_digests(self, chunk_size: int) -> list[str] | None:
        return self.inner.remote_digests(chunk_size)

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
        """The inner's ``readinto_many``; range by range through ``self.readinto`` when a subclass
        changes ``read`` or ``readinto`` only (so what it adds is never bypassed)."""
        cls = type(self)
        if cls.read is not SourceProxy.read or cls.readinto is not SourceProxy.readinto:
            for offset, buf in ranges:
                self.readinto(offset, buf)
        else:
            self.inner.readinto_many(ranges)

    def close(self) -> None:
        self.inner.close()


class TargetProxy:
    """A BlockTarget that forwards everything (optional capabilities included) to ``inner``."""

    def __init__(self, inner: BlockTarget) -> None:
        self.inner = inner

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def thread_safe(self) -> bool:
        return self.inner.thread_safe

    @property
    def fresh(self) -> bool:
        return self.inner.fresh

    def describe(self) -> str:
        return self.inner.describe()

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.inner.write(offset, data)

    def write_zeroes(self, offset: int, length: int) -> None:
        self.inner.write_zeroes(offset, length)

    def preallocate(self, offset: int, length: int) -> bool:
        return self.inner.preallocate(offset, length)

    @property
    def punches_holes(self) -> bool:
        return self.inner.punches_holes

    def identity(self) -> Identity | None:
        return self.inner.identity()

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()

    def read(self, offset: int, length: int) -> bytes:
        return self.inner.read(offset, length)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


class GuardedTarget(TargetProxy):
    """A target that calls ``guard()`` before every write; the guard raises to refuse it.

    Sync passes guard their targets with their VM lease (``VmLock.fence``), so
    a host that may have lost the VM to another host never writes its disks.
    """

    def __init__(self, inner: BlockTarget, guard: Callable[[], None]) -> None:
        super().__init__(inner)
        self.guard = guard

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.guard()
        self.inner.write(offset, data)

    def write_zeroes(self, offset: int, length: int) -> None:
        self.guard()
        self.inner.write_zeroes(offset, length)

    def preallocate(self, offset: int, length: int) -> bool:
        self.guard()
        return self.inner.preallocate(offset, length)


# --------------------------------------------------------------------------- retry


def is_transient(exc: BaseException) -> bool:
    """Only TransportError(transient=True) is retried; everything else fails at once."""
    return isinstance(exc, TransportError) and exc.transient


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_wait: float = 0.2
    max_wait: float = 5.0


class _Retrier:
    """Runs operations with tenacity; on a transient error optionally reopens the inner object."""

    def __init__(self, policy: RetryPolicy, reporter: Reporter | None,
                 reopen: Callable[[], Any] | None, what: str) -> None:
        self.policy = policy
        self.reporter = reporter or NullReporter()
        self.reopen = reopen
        self.what = what
        self.retries = 0
        self.retired: list[Any] = []
        self._lock = threading.Lock()
        self._generation = 0

    def close_retired(self) -> None:
        for old in self.retired:
            try:
                old.close()
            except ScmtError:
                pass
        self.retired.clear()

    def call(self, proxy: Any, fn: Callable[[Any], T]) -> T:
        gen = [self._generation]

        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            with self._lock:
                self.retries += 1
                if self.reopen is not None and gen[0] == self._generation:
                    try:
                        fresh = self.reopen()
                    except (SourceUnreachableError, TransportError) as again:
                        if isinstance(again, TransportError) and not again.transient:
                            raise
                        # server not back yet: the old object keeps failing transiently, the next attempt reopens
                        self.reporter.log("warning", f"{self.what}: reopen failed: {again.message}")
                    else:
                        # Other threads may still be inside a call on the old object: retire it and close it
                        # when the wrapper closes (closing it now turned their calls into EBADF).
                        self.retired.append(proxy.inner)
                        proxy.inner = fresh
                        self._generation += 1
                gen[0] = self._generation
            msg = exc.message if isinstance(exc, ScmtError) else str(exc)
            self.reporter.log("warning", f"{self.what}: transient error, retrying "
                              f"(attempt {state.attempt_number + 1}/{self.policy.attempts}): {msg}")

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(self.policy.attempts),
            wait=wait_exponential(multiplier=self.policy.initial_wait, max=self.policy.max_wait),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(lambda: fn(proxy.inner))


class RetryingSource(SourceProxy):
    """Retries transient TransportErrors of every read/extents call; ``reopen`` reconnects."""

    def __init__(self, inner: BlockSource, policy: RetryPolicy | None = None, *,
                 reopen: Callable[[], BlockSource] | None = None, reporter: Reporter | None = None) -> None:
        super().__init__(inner)
        self.retrier = _Retrier(policy or RetryPolicy(), reporter, reopen, inner.describe())

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        """The inner's extents, streamed as they arrive (a remote map is not collected first).

        A transient error part-way is retried like any call (logged, the
        transport reopened, the policy's waits and attempts) by asking the
        map again from the end of the last extent yielded; the extents that
        follow may then start with one of the same kind (the planners merge them).
        """
        end = self.size if length is None else offset + length
        return self._extents(offset, end)

    def _extents(self, pos: int, end: int) -> Iterator[Extent]:
        failed: BaseException | None = None

        def restart(s: BlockSource) -> tuple[Extent | None, Iterator[Extent]]:
            nonlocal failed
            if failed is not None:  # the error of the stream that broke is this call's first attempt
                exc, failed = failed, None
                raise exc
            it = iter(s.extents(pos, end - pos))
            return next(it, None), it

        ext, it = self.retrier.call(self, restart)
        while ext is not None:
            yield ext
            pos = max(pos, ext.end)
            if pos >= end:
                return
            try:
                ext = next(it, None)
            except TransportError as exc:
                if not exc.transient:
                    raise
                failed = exc
                ext, it = self.retrier.call(self, restart)

    def read(self, offset: int, length: int) -> bytes:
        data: bytes = self.retrier.call(self, lambda s: s.read(offset, length))
        return data

    def readinto(self, offset: int, buf: memoryview) -> None:
        self.retrier.call(self, lambda s: s.readinto(offset, buf))

    def identity(self) -> Identity | None:
        ident: Identity | None = self.retrier.call(self, lambda s: s.identity())
        return ident

    def changed_extents(self, since: str | None) -> ChangedExtents | None:
        changed: ChangedExtents | None = self.retrier.call(self, lambda s: s.changed_extents(since))
        return changed

    def remote_digests(self, chunk_size: int) -> list[str] | None:
        digests: list[str] | None = self.retrier.call(self, lambda s: s.remote_digests(chunk_size))
        return digests

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
        self.retrier.call(self, lambda s: s.readinto_many(ranges))

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.retrier.close_retired()


class RetryingTarget(TargetProxy):
    """Retries transient TransportErrors of writes, zeroes, reads and flushes (all idempotent)."""

    def __init__(self, inner: BlockTarget, policy: RetryPolicy | None = None, *,
                 reopen: Callable[[], BlockTarget] | None = None, reporter: Reporter | None = None) -> None:
        super().__init__(inner)
        self.retrier = _Retrier(policy or RetryPolicy(), reporter, reopen, inner.describe())

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.retrier.call(self, lambda t: t.write(offset, data))

    def write_zeroes(self, offset: int, length: int) -> None:
        self.retrier.call(self, lambda t: t.write_zeroes(offset, length))

    def read(self, offset: int, length: int) -> bytes:
        data: bytes = self.retrier.call(self, lambda t: t.read(offset, length))
        return data

    def flush(self) -> None:
        self.retrier.call(self, lambda t: t.flush())

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.retrier.close_retired()


# --------------------------------------------------------------------------- bandwidth


class TokenBucket:
    """A thread-safe token bucket of ``rate`` bytes/s with ``burst`` bytes of credit.

    ``consume(n)`` takes ``n`` tokens, sleeping until the balance is no longer
    negative; requests larger than the burst are allowed (they go into debt),
    so the long-run rate is exactly ``rate``.
    """

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate / 4)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def consume(self, n: int) -> float:
        """Take ``n`` tokens; return the seconds slept."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class ThrottledSource(SourceProxy):
    """Limits the bytes read per second (the plan's bandwidth) with a shared TokenBucket."""

    def __init__(self, inner: BlockSource, bucket: TokenBucket) -> None:
        super().__init__(inner)
        self.bucket = bucket

    def read(self, offset: int, length: int) -> bytes:
        self.bucket.consume(length)
        return self.inner.read(offset, length)

    def readinto(self, offset: int, buf: memoryview) -> None:
        self.bucket.consume(len(buf))
        self.inner.readinto(offset, buf)

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
        self.bucket.consume(sum(len(buf) for _, buf in ranges))
        self.inner.readinto_many(ranges)


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """Fail ``times`` calls of ``op`` that touch ``[start, end)`` after skipping ``after`` of them.

    ``op`` is ``read`` (read/readinto), ``write``, ``write_zeroes``, ``flush``
    or ``extents``.  ``transient`` selects a retryable error.  ``times=-1``
    fails forever.
    """

    op: str
    start: int = 0
    end: int = 1 << 62
    times: int = 1
    after: int = 0
    transient: bool = True
    hits: int = field(default=0, init=False)
    seen: int = field(default=0, init=False)


class FaultPlan:
    """A thread-safe list of faults shared by FaultySource/FaultyTarget."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self.faults = list(faults or [])
        self._lock = threading.Lock()

    def check(self, op: str, offset: int = 0, length: int = 0) -> None:
        with self._lock:
            for f in self.faults:
                if f.op != op or offset >= f.end or offset + max(length, 1) <= f.start:
                    continue
                f.seen += 1
                if f.seen <= f.after or (f.times >= 0 and f.hits >= f.times):
                    continue
                f.hits += 1
                kind = "transient" if f.transient else "permanent"
                raise TransportError(f"injected {kind} {op} error at offset {offset}", transient=f.transient)


class FaultySource(SourceProxy):
    """Raises the errors of a FaultPlan before delegating (tests only)."""

    def __init__(self, inner: BlockSource, plan: FaultPlan) -> None:
        super().__init__(inner)
        self.plan = plan

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        self.plan.check("extents", offset, length or 0)
        return self.inner.extents(offset, length)

    def read(self, offset: int, length: int) -> bytes:
        self.plan.check("read", offset, length)
        return self.inner.read(offset, length)

    def readinto(self, offset: int, buf: memoryview) -> None:
        self.plan.check("read", offset, len(buf))
        self.inner.readinto(offset, buf)

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
        for offset, buf in ranges:
            self.plan.check("read", offset, len(buf))
        self.inner.readinto_many(ranges)


class FaultyTarget(TargetProxy):
    """Raises the errors of a FaultPlan before delegating (tests only)."""

    def __init__(self, inner: BlockTarget, plan: FaultPlan) -> None:
        super().__init__(inner)
        self.plan = plan

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.plan.check("write", offset, len(data))
        self.inner.write(offset, data)

    def write_zeroes(self, offset: int, length: int) -> None:
        self.plan.check("write_zeroes", offset, length)
        self.inner.write_zeroes(offset, length)

    def flush(self) -> None:
        self.plan.check("flush")
        self.inner.flush()
