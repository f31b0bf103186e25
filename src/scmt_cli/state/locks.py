"""Leased locks kept in the state store, so two runs never drive the same VM.

A lock is a row in ``locks`` (resource, owner, pid, host, lease expiry).
Acquiring takes the row when it is free, when its lease has expired (the
holder crashed or was ``kill -9``-ed and stopped renewing), or when the holder
ran on this host and its process is gone.  Every takeover is written to the
event log in the same transaction.  The holder renews its lease from a daemon
heartbeat thread every ``lease_seconds / 3``; when a renewal finds the row
owned by someone else the lock is *lost*: :meth:`VmLock.check` (call it at
every checkpoint) and :meth:`VmLock.renew` then raise
:class:`~scmt_cli.errors.LockedError`, so the old holder stops before it
writes again.

Lease times use the store's clock (wall clock, shared by processes on one
host; hosts sharing a state file need synchronised clocks).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from types import TracebackType
from typing import TYPE_CHECKING

from scmt_cli.errors import LockedError, StateStoreError
from scmt_cli.state.records import LockInfo, iso

if TYPE_CHECKING:
    from scmt_cli.state.core import StoreCore

_LOCK_COLUMNS = "resource, owner, pid, hostname, acquired_at, lease_expires_at"


def host_id() -> str:
    """This migration host's name in lock rows: ``$SCMT_HOST_ID``, else the host name.

    Hosts sharing one state store must have distinct ids.
    """
    return os.environ.get("SCMT_HOST_ID", "").strip() or socket.gethostname()


def vm_resource(plan: str, vm: str) -> str:
    """The lock resource name of one VM of one plan: ``vm:<plan>/<vm>``."""
    return f"vm:{plan}/{vm}"


def _plan_vm(resource: str) -> tuple[str | None, str | None]:
    if resource.startswith("vm:") and "/" in resource:
        plan, _, vm = resource[3:].partition("/")
        return plan, vm
    return None, None


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this host (zombies count)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def takeover_reason(holder: LockInfo, now: float) -> str | None:
    """Why ``holder``'s lock may be taken over, or ``None`` when it is live."""
    if now >= holder.lease_expires_at:
        return "lease expired"
    if holder.hostname == host_id() and holder.pid != os.getpid() and not pid_alive(holder.pid):
        return "holder process is gone"
    return None


def read_holder(store: StoreCore, resource: str) -> LockInfo | None:
    rows = store._query(f"SELECT {_LOCK_COLUMNS} FROM locks WHERE resource = ?", (resource,))  # noqa: S608
    return LockInfo(*rows[0]) if rows else None


class VmLock:
    """One leased lock; a context manager (``with store.lock(res):``).

    Not re-entrant across objects: a second :class:`VmLock` for the same
    resource (even in the same process) gets :class:`LockedError`, unless it
    passes the same ``owner``.  Thread-safe: the heartbeat thread and the
    worker calling :meth:`check` may run concurrently.
    """

    def __init__(
        self,
        store: StoreCore,
        resource: str,
        *,
        lease_seconds: float = 60.0,
        owner: str | None = None,
        heartbeat: bool = True,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._store = store
        self.resource = resource
        self.lease_seconds = float(lease_seconds)
        self.owner = owner or f"{host_id()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._heartbeat_enabled = heartbeat
        self._held = False
        self._lost: str | None = None
        self._expires = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()
        self.last_renew_error: StateStoreError | None = None

    # -- state -------------------------------------------------------------
    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release`, unless lost."""
        return self._held and self._lost is None

    @property
    def lost(self) -> bool:
        return self._lost is not None

    @property
    def lease_expires_at(self) -> float:
        return self._expires

    # -- operations ----------------------------------------------------------
    def acquire(self) -> VmLock:
        """Take the lock or raise :class:`LockedError` naming the holder."""
        if self.held:
            raise RuntimeError(f"lock {self.resource} is already held by this object")
        store = self._store
        plan, vm = _plan_vm(self.resource)
        with store._tx() as conn:
            now = store.clock()
            expires = now + self.lease_seconds
            mine = (self.owner, os.getpid(), host_id(), now, expires, self.resource)
            row = conn.execute(f"SELECT {_LOCK_COLUMNS} FROM locks WHERE resource = ?", (self.resource,)).fetchone()  # noqa: S608
            if row is None:
                conn.execute(
                    "INSERT INTO locks (owner, pid, hostname, acquired_at, lease_expires_at, resource)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    mine,
                )
            else:
                holder = LockInfo(*row)
                if holder.owner != self.owner:
                    reason = takeover_reason(holder, now)
                    if reason is None:
                        raise LockedError(
                            f"{self.resource} is locked by another run: {holder.describe(now)}",
                            hint="wait for that run to finish; if it crashed, retry after the lease expires",
                        )
                    store.append_event(
                        "lock_takeover",
                        plan=plan,
                        vm=vm,
                        resource=self.resource,
                        reason=reason,
                        previous=holder.to_dict(),
                        new_owner=self.owner,
                    )
                conn.execute(
                    "UPDATE locks SET owner = ?, pid = ?, hostname = ?, acquired_at = ?, lease_expires_at = ?"
                    " WHERE resource = ?",
                    mine,
                )
        with self._mutex:
            self._held, self._lost, self._expires = True, None, expires
        store._register_lock(self)
        if self._heartbeat_enabled:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name=f"scmt-lease:{self.resource}", daemon=True)
            self._thread.start()
        return self

    def renew(self) -> float:
        """Extend the lease; return the new expiry.

        Raises :class:`LockedError` when the lock was taken over (then
        :attr:`lost` is true and every later :meth:`check` raises too).
        """
        if self._lost is not None:
            raise LockedError(self._lost)
        if not self._held:
            raise RuntimeError(f"lock {self.resource} is not held")
        store = self._store
        with store._tx() as conn:
            now = store.clock()
            row = conn.execute(f"SELECT {_LOCK_COLUMNS} FROM locks WHERE resource = ?", (self.resource,)).fetchone()  # noqa: S608
            if row is None or row[1] != self.owner:
                who = LockInfo(*row).describe(now) if row else "nobody (released by another run)"
                message = f"lost the lock on {self.resource}; it is now held by {who}"
            else:
                message = ""
                expires = now + self.lease_seconds
                conn.execute(
                    "UPDATE locks SET lease_expires_at = ? WHERE resource = ? AND owner = ?",
                    (expires, self.resource, self.owner),
                )
        if message:
            with self._mutex:
                self._lost = message
            self._stop.set()
            raise LockedError(message, hint="another run took over after this run's lease expired; stop and rerun")
        with self._mutex:
            self._expires = expires
        return expires

    def check(self) -> None:
        """Raise :class:`LockedError` if the lock is lost; call before every checkpoint.

        Cheap while the heartbeat keeps the lease fresh (no database access);
        when the lease is older than two heartbeats it renews synchronously,
        which also detects a takeover.
        """
        if self._lost is not None:
            raise LockedError(self._lost)
        if not self._held:
            raise RuntimeError(f"lock {self.resource} is not held")
        if self._store.clock() >= self._expires - self.lease_seconds / 3:
            self.renew()

    def fence(self) -> None:
        """Raise :class:`LockedError` unless the lease is certainly still this run's; no database access.

        Call before every write to what the lock guards.  :meth:`check` runs at
        checkpoints only, and a host cut off from the store (or a read that
        stalled for longer than the lease) could otherwise write after another
        host took the VM over.  The fence closes a sixth of the lease before
        the lease ends by this host's clock: a healthy heartbeat renews every
        third of it, and the margin covers clock skew between hosts and a
        write already under way.
        """
        if self._lost is not None:
            raise LockedError(self._lost)
        if not self._held:
            raise RuntimeError(f"lock {self.resource} is not held")
        left = self._expires - self._store.clock()
        if left <= self.lease_seconds / 6:
            raise LockedError(
                f"the lease on {self.resource} could not be renewed in time ({max(left, 0):.1f} s left of "
                f"{self.lease_seconds:g} s): no more writes, another host may take it over",
                hint="the state store was unreachable or this host stalled; rerun when the store answers",
            )

    def release(self) -> None:
        """Stop the heartbeat and delete the row if this lock still owns it.  Idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if not self._held:
            return
        self._held = False
        self._store._unregister_lock(self)
        if self._lost is None:
            with self._store._tx() as conn:
                conn.execute("DELETE FROM locks WHERE resource = ? AND owner = ?", (self.resource, self.owner))

    def _beat(self) -> None:
        interval = self.lease_seconds / 3
        mutex = self._store._mutex
        while not self._stop.wait(interval):
            # Never block indefinitely on the store: a thread that holds it (inside
            # atomic()) may be the one releasing this lock and joining this thread.
            if not mutex.acquire(timeout=min(interval / 2, 1.0)):
                continue  # skip this beat; the next one (or check()) renews
            try:
                self.renew()
                self.last_renew_error = None
            except LockedError:
                return
            except StateStoreError as exc:  # busy or I/O trouble: try again next beat; check() will see it
                self.last_renew_error = exc
            except RuntimeError:  # released concurrently
                return
            finally:
                mutex.release()

    # -- context manager -----------------------------------------------------------
    def __enter__(self) -> VmLock:
        if not self._held:
            self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.release()
        except StateStoreError:
            if exc_type is None:
                raise

    def __repr__(self) -> str:
        status = "lost" if self.lost else "held" if self._held else "free"
        return f"<VmLock {self.resource} {status} lease until {iso(self._expires)}>"
