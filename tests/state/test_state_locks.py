"""Leased per-VM locks: exclusion, holder details, expiry takeover, renewal, loss detection."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.errors import LockedError
from scmt_cli.state import StateStore, vm_resource

from .conftest import FakeClock, wait_line

RES = vm_resource("plan", "web01")

#: The contract: every test here runs against both stores.
STORE_BACKENDS = ("sqlite", "postgresql")


def test_vm_resource_name() -> None:
    assert RES == "vm:plan/web01"


def test_second_lock_is_refused_with_holder_details(cstore: StateStore, clock: FakeClock) -> None:
    with cstore.lock(RES, lease_seconds=60, heartbeat=False) as held:
        assert held.held
        holder = cstore.lock_holder(RES)
        assert holder is not None and holder.owner == held.owner and holder.pid == os.getpid()
        assert holder.lease_expires_at == clock.now + 60
        with pytest.raises(LockedError) as info:
            cstore.lock(RES).acquire()
        assert info.value.exit_code == 40
        message = info.value.message
        assert RES in message and f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert "since 2027-01-15T08:00:00.000Z" in message and "lease expires 2027-01-15T08:01:00.000Z" in message
        # another resource is independent
        with cstore.lock(vm_resource("plan", "db01"), heartbeat=False):
            pass
    assert cstore.lock_holder(RES) is None
    with cstore.lock(RES, heartbeat=False):  # free again after release
        pass


def test_same_owner_may_reacquire(store: StateStore) -> None:
    first = store.lock(RES, owner="job-7", heartbeat=False).acquire()
    second = store.lock(RES, owner="job-7", heartbeat=False).acquire()
    assert first.held and second.held
    second.release()
    assert store.lock_holder(RES) is None


def test_release_on_exception_and_on_close(db: Path) -> None:
    store = StateStore.open(db)
    with pytest.raises(RuntimeError):
        with store.lock(RES, heartbeat=False):
            raise RuntimeError("failed step")
    assert store.lock_holder(RES) is None
    held = store.lock(RES).acquire()
    store.close()
    assert not held.held
    with StateStore.open(db) as again:
        assert again.lock_holder(RES) is None


def test_expired_lease_is_taken_over_and_recorded(db: Path, clock: FakeClock) -> None:
    with StateStore.open(db, clock=clock) as a, StateStore.open(db, clock=clock) as b:
        old = a.lock(RES, lease_seconds=10, heartbeat=False).acquire()
        with pytest.raises(LockedError):
            b.lock(RES, heartbeat=False).acquire()
        clock.advance(10.5)  # the holder stopped renewing (crashed, paused)
        new = b.lock(RES, lease_seconds=10, heartbeat=False).acquire()
        holder = b.lock_holder(RES)
        assert holder is not None and holder.owner == new.owner
        events = b.events(kinds=["lock_takeover"])
        assert len(events) == 1
        data = events[0].data
        assert data["reason"] == "lease expired" and data["resource"] == RES
        assert data["previous"]["owner"] == old.owner and data["previous"]["pid"] == os.getpid()
        assert (events[0].plan, events[0].vm) == ("plan", "web01")
        # the old holder notices at its next renew / check and stops
        with pytest.raises(LockedError, match="lost the lock"):
            old.renew()
        assert old.lost and not old.held
        with pytest.raises(LockedError, match="lost the lock"):
            old.check()
        old.release()  # must not delete the new holder's row
        holder = b.lock_holder(RES)
        assert holder is not None and holder.owner == new.owner
        new.release()


def test_renew_extends_the_lease(cstore: StateStore, clock: FakeClock) -> None:
    held = cstore.lock(RES, lease_seconds=30, heartbeat=False).acquire()
    clock.advance(20)
    assert held.renew() == clock.now + 30
    holder = cstore.lock_holder(RES)
    assert holder is not None and holder.lease_expires_at == clock.now + 30
    clock.advance(25)  # past the first lease, within the renewed one
    with pytest.raises(LockedError):
        cstore.lock(RES, heartbeat=False).acquire()
    held.release()


def test_check_renews_a_stale_lease(cstore: StateStore, clock: FakeClock) -> None:
    held = cstore.lock(RES, lease_seconds=30, heartbeat=False).acquire()
    first = held.lease_expires_at
    clock.advance(5)
    held.check()  # fresh enough: no renewal
    assert held.lease_expires_at == first
    clock.advance(20)  # heartbeat missed: check() renews synchronously
    held.check()
    assert held.lease_expires_at == clock.now + 30
    held.release()


def test_expired_but_untaken_lease_can_still_be_renewed(cstore: StateStore, clock: FakeClock) -> None:
    held = cstore.lock(RES, lease_seconds=10, heartbeat=False).acquire()
    clock.advance(60)
    held.check()
    assert held.held and held.lease_expires_at == clock.now + 10
    held.release()


def test_heartbeat_thread_renews(store: StateStore) -> None:
    held = store.lock(RES, lease_seconds=0.3).acquire()
    first = held.lease_expires_at
    deadline = time.monotonic() + 10
    while held.lease_expires_at <= first and time.monotonic() < deadline:
        time.sleep(0.05)
    holder = store.lock_holder(RES)
    assert holder is not None and holder.lease_expires_at > first
    held.release()
    assert store.lock_holder(RES) is None


def test_remote_holder_is_respected_until_expiry(cstore: StateStore, clock: FakeClock) -> None:
    with cstore._tx() as conn:  # a holder on another host: its pid means nothing here
        conn.execute(
            "INSERT INTO locks VALUES (?, 'other-owner', 999999, 'another-host', ?, ?)",
            (RES, clock.now, clock.now + 60),
        )
    with pytest.raises(LockedError, match="another-host"):
        cstore.lock(RES, heartbeat=False).acquire()
    clock.advance(61)
    cstore.lock(RES, heartbeat=False).acquire().release()


def test_lock_between_processes(db: Path, spawn: Callable[..., Any]) -> None:
    StateStore.open(db).close()
    holder = spawn("hold", str(db), RES, "60")
    pid = int(wait_line(holder, "held").split()[1])
    # a second process is refused, and is told who holds the lock
    other = spawn("try", str(db), RES)
    line = wait_line(other, "locked")
    assert f"pid {pid}" in line and socket.gethostname() in line and "lease expires" in line
    with StateStore.open(db) as store:
        with pytest.raises(LockedError, match=f"pid {pid}"):
            store.lock(RES).acquire()
        holder.stdin.close()  # the holder finishes and releases
        assert holder.wait(timeout=30) == 0
        with store.lock(RES):
            assert store.lock_holder(RES) is not None
        third = spawn("try", str(db), RES)
        wait_line(third, "acquired")


def test_killed_local_holder_is_taken_over(db: Path, spawn: Callable[..., Any]) -> None:
    StateStore.open(db).close()
    holder = spawn("hold", str(db), RES, "3600")
    pid = int(wait_line(holder, "held").split()[1])
    os.kill(pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with StateStore.open(db) as store:
        with store.lock(RES) as held:  # no need to wait an hour: the holder is gone
            assert held.held
        (event,) = store.events(kinds=["lock_takeover"])
        assert event.data["reason"] == "holder process is gone" and event.data["previous"]["pid"] == pid


def test_heartbeat_notices_takeover_and_check_raises(db: Path) -> None:
    future = FakeClock(time.time() + 3600)  # a second run that sees the first lease long expired
    with StateStore.open(db) as a, StateStore.open(db, clock=future) as b:
        old = a.lock(RES, lease_seconds=0.3).acquire()
        new = b.lock(RES, lease_seconds=3600, heartbeat=False).acquire()
        deadline = time.monotonic() + 10
        while not old.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert old.lost  # the heartbeat's renewal found the row taken
        with pytest.raises(LockedError, match="lost the lock"):
            old.check()
        holder = b.lock_holder(RES)
        assert holder is not None and holder.owner == new.owner
        new.release()


@pytest.mark.timeout(30)
def test_release_inside_atomic_does_not_deadlock(store: StateStore) -> None:
    held = store.lock(RES, lease_seconds=0.3).acquire()
    time.sleep(0.15)  # let the heartbeat thread come close to its next beat
    with store.atomic():
        store.put_checkpoint("k", {"v": 1})
        time.sleep(0.2)  # the heartbeat wants the store now
        held.release()  # joins the heartbeat thread while this thread holds the store
    assert store.lock_holder(RES) is None and store.get_checkpoint("k") == {"v": 1}


def test_the_fence_closes_before_another_host_could_take_the_lease_over(cstore: StateStore, clock: FakeClock) -> None:
    """No write after the lease may have lapsed: the fence closes a sixth of the lease before it ends."""
    lock = cstore.lock(RES, lease_seconds=30, heartbeat=False).acquire()
    try:
        lock.fence()  # fresh lease: open
        clock.advance(24.9)
        lock.fence()  # 5.1 s left of 30: still open
        clock.advance(0.2)
        with pytest.raises(LockedError, match="could not be renewed in time") as info:
            lock.fence()  # 4.9 s left: closed, although the lease itself has not ended
        assert info.value.exit_code == 40
        assert takeover_possible(cstore, clock) is False  # nobody else could have it yet
        lock.renew()  # a successful renewal opens it again
        lock.fence()
        clock.advance(31)
        assert takeover_possible(cstore, clock) is True
        with pytest.raises(LockedError):
            lock.fence()
    finally:
        lock.release()


def takeover_possible(store: StateStore, clock: FakeClock) -> bool:
    holder = store.lock_holder(RES)
    return holder is not None and holder.lease_expires_at <= clock.now


def test_a_guarded_target_refuses_writes_once_the_fence_is_closed(cstore: StateStore, clock: FakeClock,
                                                                    tmp_path: Path) -> None:
    from scmt_cli.transports.base import open_target
    from scmt_cli.transports.wrappers import GuardedTarget

    path = tmp_path / "disk.raw"
    lock = cstore.lock(RES, lease_seconds=30, heartbeat=False).acquire()
    try:
        dst = GuardedTarget(open_target(f"file://{path}", size=1 << 20), lock.fence)
        dst.write(0, b"a" * 4096)
        clock.advance(26)
        with pytest.raises(LockedError):
            dst.write(4096, b"b" * 4096)
        with pytest.raises(LockedError):
            dst.write_zeroes(0, 4096)
        dst.close()
    finally:
        lock.release()
    data = path.read_bytes()
    assert data[:4096] == b"a" * 4096 and data[4096:8192] == bytes(4096)
