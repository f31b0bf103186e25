"""Leases for a fleet of migration hosts: claim one free VM of a plan within global limits.

:func:`claim` runs in ONE store transaction (writers are serialised on both
stores: ``BEGIN IMMEDIATE`` / the PostgreSQL writer advisory lock), so the
check "is this VM free and is there a slot left" and the taking of the lease
cannot race between hosts:

1. every expired lease of the plan (its holder stopped renewing: killed, cut
   off from the database) is dropped and logged as ``lease_expired``;
2. the live leases are counted: against ``concurrency`` (all of the plan),
   per ESXi host and per datastore (from the claims their holders recorded:
   checkpoint ``fleet/<plan>/claim/<vm>``);
3. the first candidate VM that is not leased and fits every limit gets a
   :class:`~scmt_cli.state.locks.VmLock` (heartbeat renews it) and a
   ``lease_acquired`` event naming the host.

:func:`release` ends a lease with ``lease_released``.  The event log alone
therefore tells who drove which VM when: a lease starts at
``lease_acquired`` and ends at ``lease_released``, ``lease_expired`` or a
``lock_takeover`` (tests check from it that no two hosts ever held one VM and
that the limits held).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scmt_cli.errors import StateStoreError
from scmt_cli.state.locks import VmLock, host_id, takeover_reason, vm_resource
from scmt_cli.state.records import LockInfo

if TYPE_CHECKING:
    from scmt_cli.state.core import StoreCore

_LOCK_COLUMNS = "resource, owner, pid, hostname, acquired_at, lease_expires_at"


@dataclass(frozen=True)
class Limits:
    """Global limits of one plan: VMs driven at once, in all, per ESXi host, per datastore (None: no limit)."""

    concurrency: int
    per_esxi_host: int | None = None
    per_datastore: int | None = None


@dataclass(frozen=True)
class Placement:
    """Where a VM's disks are read from (what the per-host and per-datastore limits count)."""

    esxi_host: str | None = None
    datastores: tuple[str, ...] = ()


def claim_key(plan: str, vm: str) -> str:
    return f"fleet/{plan}/claim/{vm}"


def _prefix(plan: str) -> str:
    return vm_resource(plan, "")


def live_leases(store: StoreCore, plan: str) -> dict[str, LockInfo]:
    """The plan's VM leases that have not expired, by VM name (a read; may be stale a moment later)."""
    prefix = _prefix(plan)
    rows = store._query(
        f"SELECT {_LOCK_COLUMNS} FROM locks WHERE substr(resource, 1, ?) = ?",  # noqa: S608
        (len(prefix), prefix),
    )
    now = store.clock()
    out = {}
    for row in rows:
        info = LockInfo(*row)
        if takeover_reason(info, now) is None:
            out[info.resource[len(prefix):]] = info
    return out


def claim(
    store: StoreCore,
    plan: str,
    candidates: Sequence[str],
    *,
    limits: Limits,
    placement: Mapping[str, Placement] | None = None,
    lease_seconds: float = 30.0,
    heartbeat: bool = True,
) -> tuple[VmLock | None, str]:
    """Lease the first of ``candidates`` that is free and fits ``limits``.

    Returns ``(lock, "")``, or ``(None, why)`` when nothing can be claimed now.
    """
    placement = placement or {}
    prefix = _prefix(plan)
    me = host_id()
    with store._tx() as conn:
        now = store.clock()
        rows = conn.execute(
            f"SELECT {_LOCK_COLUMNS} FROM locks WHERE substr(resource, 1, ?) = ?",  # noqa: S608
            (len(prefix), prefix),
        ).fetchall()
        held: dict[str, LockInfo] = {}
        for row in rows:
            info = LockInfo(*row)
            vm = info.resource[len(prefix):]
            reason = takeover_reason(info, now)
            if reason is None:
                held[vm] = info
                continue
            conn.execute("DELETE FROM locks WHERE resource = ? AND owner = ?", (info.resource, info.owner))
            store.append_event("lease_expired", plan=plan, vm=vm, reason=reason, previous=info.to_dict(), by=me)
        if len(held) >= limits.concurrency:
            return None, f"all {limits.concurrency} slots of plan {plan} are in use"
        hosts: Counter[str] = Counter()
        stores: Counter[str] = Counter()
        for vm, info in held.items():
            rec = store.get_checkpoint(claim_key(plan, vm)) or {}
            if rec.get("owner") != info.owner:
                continue
            if rec.get("esxi_host"):
                hosts[rec["esxi_host"]] += 1
            stores.update(set(rec.get("datastores") or ()))
        why = "every due VM is leased by a host"
        for vm in candidates:
            if vm in held:
                continue
            where = placement.get(vm, Placement())
            if limits.per_esxi_host and where.esxi_host and hosts[where.esxi_host] >= limits.per_esxi_host:
                why = f"ESXi host {where.esxi_host} is at its limit of {limits.per_esxi_host}"
                continue
            full = [d for d in where.datastores if limits.per_datastore and stores[d] >= limits.per_datastore]
            if full:
                why = f"datastore {full[0]} is at its limit of {limits.per_datastore}"
                continue
            lock = VmLock(store, vm_resource(plan, vm), lease_seconds=lease_seconds, heartbeat=heartbeat)
            try:
                lock.acquire()  # joins this transaction
                store.put_checkpoint(claim_key(plan, vm), {
                    "owner": lock.owner, "host": me, "esxi_host": where.esxi_host,
                    "datastores": list(where.datastores), "at": now,
                })
                store.append_event(
                    "lease_acquired", plan=plan, vm=vm, host=me, owner=lock.owner, held=len(held) + 1,
                    concurrency=limits.concurrency, esxi_host=where.esxi_host, datastores=list(where.datastores),
                    lease_seconds=lease_seconds,
                )
            except BaseException:
                _forget(lock)
                raise
            return lock, ""
        return None, why


def _forget(lock: VmLock) -> None:
    """Drop a lock object whose row was never committed (stop its heartbeat, no database access)."""
    lock._stop.set()
    lock._held = False
    lock._store._unregister_lock(lock)


def release(store: StoreCore, plan: str, vm: str, lock: VmLock, *, outcome: str) -> None:
    """End a lease taken by :func:`claim`, logging ``lease_released`` in the same transaction.

    A lost lease (taken over after it expired) is only forgotten: its end is
    already in the log.  Raises :class:`StateStoreError` when the database is
    unreachable; then retry with :func:`drop_lease` (the row stays until then,
    or until its lease expires).
    """
    if not lock.held:
        lock.release()
        return
    try:
        with store.atomic():
            store.append_event("lease_released", plan=plan, vm=vm, host=host_id(), owner=lock.owner,
                               outcome=outcome)
            lock.release()
    except StateStoreError:
        _forget(lock)  # stop renewing; the row goes with drop_lease() or when its lease expires
        raise


def drop_lease(store: StoreCore, plan: str, vm: str, owner: str) -> bool:
    """Delete the lease row of ``vm`` if ``owner`` still holds it; True when it did."""
    with store._tx() as conn:
        cur = conn.execute("DELETE FROM locks WHERE resource = ? AND owner = ?", (vm_resource(plan, vm), owner))
        if cur.rowcount:
            store.append_event("lease_released", plan=plan, vm=vm, host=host_id(), owner=owner, outcome="late")
            return True
        return False
