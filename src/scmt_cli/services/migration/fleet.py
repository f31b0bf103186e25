"""``scmt sync`` on a fleet of migration hosts sharing one state store: the hosts split the VMs.

Fleet mode is on when the store is shared (PostgreSQL), with ``--fleet``, or
when the plan sets ``concurrency_per_esxi_host`` / ``concurrency_per_datastore``.
Every host runs the same command; nothing coordinates them but the store:

* **rounds**: checkpoint ``fleet/<plan>/round`` holds the current round
  (number, start time, its VMs).  A VM is *done* in a round when it synced
  after the round started (``vms.last_sync_at``), failed in it (checkpoint
  ``fleet/<plan>/attempt/<vm>``) or is past syncing (failed over).  The
  first worker that finds the round complete starts the next one, at once
  for a one-shot sync, ``--every`` after the last round started otherwise;
  a one-shot sync joins an unfinished round and ends when it is complete.
  So each VM is synced once per round, whichever host does it;
* **leases**: a worker takes a VM through :func:`scmt_cli.state.leases.claim`
  (free, due, within ``concurrency`` and the per-ESXi-host / per-datastore
  limits counted over all hosts), syncs it under that lease (renewed by the
  heartbeat, re-checked before every checkpoint) and releases it.  A dead
  host's leases expire (``SCMT_LEASE_SECONDS``, default 30 s) and another
  host resumes its VMs from their last checkpoint;
* **database loss**: a claim or release that fails with a state-store error
  starts nothing new; passes in flight stop at their next checkpoint (which
  cannot be written, or whose lease cannot be renewed before it expires);
  the worker retries every few seconds and carries on when the store is
  back.  Leases it could not release are released then (or expire).

Group failover stays all-or-nothing: it takes every member's lock before
it changes anything, and fails (exit 40) while a fleet worker drives one.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from scmt_cli.domain.vmstate import commands_allowed
from scmt_cli.errors import LockedError, ScmtError, StateStoreError
from scmt_cli.services.migration.context import MigrationContext, VmOutcome, lease_seconds
from scmt_cli.state.leases import Limits, Placement, claim, drop_lease, release
from scmt_cli.state.locks import VmLock, host_id

if TYPE_CHECKING:
    from scmt_cli.services.migration.sync import RoundSink, SyncRequest, SyncResult

#: How long a worker waits before it retries an unreachable state store.
STORE_RETRY_SECONDS = 3.0


def round_key(plan: str) -> str:
    return f"fleet/{plan}/round"


def attempt_key(plan: str, vm: str) -> str:
    return f"fleet/{plan}/attempt/{vm}"


def fleet_mode(req: SyncRequest, ctx: MigrationContext) -> bool:
    d = ctx.plan.defaults
    return bool(req.fleet or getattr(ctx.store, "shared", False) or d.concurrency_per_esxi_host
                or d.concurrency_per_datastore)


def plan_limits(ctx: MigrationContext) -> Limits:
    d = ctx.plan.defaults
    return Limits(max(1, d.concurrency), d.concurrency_per_esxi_host, d.concurrency_per_datastore)


def placements(ctx: MigrationContext, names: list[str]) -> dict[str, Placement] | None:
    """Each VM's ESXi host and datastores from one inventory read; ``None`` when vCenter cannot say.

    A VM missing from the inventory has no entry (its pass fails and says why).
    """
    try:
        vc = ctx.vcenter()
        try:
            inventory = vc.inventory()
        finally:
            vc.close()
    except ScmtError as exc:
        ctx.reporter.log("debug", f"cannot read the inventory: {exc.message}")
        return None
    out = {}
    for name in names:
        vm = inventory.vm(name)
        if vm is not None:
            out[name] = Placement(vm.host, tuple(sorted({d.datastore for d in vm.disks if d.datastore})))
    return out


class _Placements:
    """The placements a round claims with; re-read while unknown, and none claimed then if a limit needs them.

    Without a per-ESXi-host or per-datastore limit nothing depends on them.
    Otherwise a VM is never claimed while its placement is unknown (vCenter
    unreadable): the limit protects the ESXi hosts, and a claim without it
    could exceed the budget the other hosts respect.
    """

    RETRY_SECONDS = 10.0

    def __init__(self, ctx: MigrationContext, names: list[str], limits: Limits) -> None:
        self.ctx, self.names = ctx, names
        self.needed = limits.per_esxi_host is not None or limits.per_datastore is not None
        self.known: dict[str, Placement] | None = None
        self._read_at = -1.0  # never read

    def refresh(self) -> None:
        had = self.known is not None or self._read_at < 0
        self.known = placements(self.ctx, self.names) if self.needed else {}
        self._read_at = time.monotonic()
        if self.known is None and had:  # once per outage, not at every retry
            self.ctx.reporter.log("warning", "the per-ESXi-host and per-datastore limits need the VMs' placement "
                                             "and vCenter cannot give it: no VM is started until it can")

    def current(self) -> dict[str, Placement] | None:
        """The placements, or ``None`` while a limit needs them and vCenter cannot give them."""
        if self.known is None and (self._read_at < 0 or time.monotonic() - self._read_at >= self.RETRY_SECONDS):
            self.refresh()
        return self.known


def member_key(plan: str, host: str) -> str:
    return f"fleet/{plan}/host/{host}"


class _Fleet:
    """One worker's view of the plan's rounds and of the other hosts (all through the store)."""

    def __init__(self, ctx: MigrationContext, names: list[str], lease: float) -> None:
        self.ctx, self.names, self.lease = ctx, names, lease
        self.store, self.plan = ctx.store, ctx.plan.name
        self._seen_at = 0.0
        self._hosts = 1

    def share(self, concurrency: int) -> int:
        """How many VMs this host may drive at once: its fair part of ``concurrency`` among the live hosts.

        Every host records itself (``fleet/<plan>/host/<id>``) every third of a lease; a host not seen for
        two leases (killed, cut off) no longer counts, so the others take its share.
        """
        now = self.store.clock()
        if now - self._seen_at >= self.lease / 3:
            self.store.put_checkpoint(member_key(self.plan, host_id()), {"seen": now})
            self._seen_at = now
            live = 0
            for key in self.store.checkpoint_keys(member_key(self.plan, "")):
                seen = (self.store.get_checkpoint(key) or {}).get("seen", 0.0)
                live += now - float(seen) < 2 * self.lease
            self._hosts = max(1, live)
        return max(1, -(-concurrency // self._hosts))

    def leave(self) -> None:
        self.store.delete_checkpoint(member_key(self.plan, host_id()))

    def done(self, vm: str, rnd: dict[str, Any]) -> bool:
        status, _ = self.ctx.status(vm)
        if "sync" not in commands_allowed(status.state, failed_from=status.failed_from):
            return True  # failed over, committed...: nothing for sync to do
        rec = self.store.get_vm(self.plan, vm)
        if rec is not None and rec.last_sync_at is not None and rec.last_sync_at >= rnd["started_at"]:
            return True
        att = self.store.get_checkpoint(attempt_key(self.plan, vm)) or {}
        return bool(att.get("round") == rnd["round"])

    def due(self, rnd: dict[str, Any], busy: set[str]) -> list[str]:
        return [vm for vm in self.names if vm in rnd["vms"] and vm not in busy and not self.done(vm, rnd)]

    def complete(self, rnd: dict[str, Any]) -> bool:
        return all(self.done(vm, rnd) for vm in rnd["vms"])

    def join(self, *, new_after: float | None) -> dict[str, Any]:
        """The current round, or a new one when it is complete and ``new_after`` seconds passed since it began."""
        key = round_key(self.plan)
        with self.store.atomic():
            rnd = self.store.get_checkpoint(key)
            if rnd is not None and (new_after is None or not self.complete(rnd)
                                    or self.store.clock() < rnd["started_at"] + new_after):
                return rnd
            number = 1 if rnd is None else int(rnd["round"]) + 1
            rnd = {"round": number, "started_at": self.store.clock(), "by": host_id(), "vms": list(self.names)}
            self.store.put_checkpoint(key, rnd)
            self.store.append_event("fleet_round", plan=self.plan, round=number, host=host_id(), vms=self.names)
            return rnd

    def record_failure(self, vm: str, rnd: dict[str, Any], out: VmOutcome) -> None:
        self.store.put_checkpoint(attempt_key(self.plan, vm), {"round": rnd["round"], "ok": False,
                                                              "host": host_id(), "error_code": out.error_code})


def run_fleet(req: SyncRequest, ctx: MigrationContext, names: list[str], *,
              sleep: Callable[[float], None] = time.sleep,
              now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
              on_round: RoundSink | None = None) -> SyncResult:
    """This host's share of ``scmt sync`` over the selected ``names`` (see the module doc)."""
    from scmt_cli.services.migration.sync import SyncResult

    lease = lease_seconds()
    fleet = _Fleet(ctx, names, lease)
    result = SyncResult(ctx.plan.name, host=host_id(), until=req.until)
    limits = plan_limits(ctx)
    poll = max(0.2, min(2.0, lease / 6))
    pool = ThreadPoolExecutor(max_workers=limits.concurrency, thread_name_prefix="scmt-fleet")
    orphans: list[tuple[str, str]] = []  # leases whose release failed: (vm, owner)
    # a one-shot sync starts a new round only when it finds none unfinished; --every keeps the fleet's cadence
    new_after = req.every or 0.0
    try:
        while True:
            rnd = _retry(ctx, lambda: fleet.join(new_after=new_after), sleep)
            ctx.reporter.event("sync_round", round=rnd["round"], vms=rnd["vms"], host=host_id())
            where = _Placements(ctx, fleet.names, limits)
            where.refresh()
            outcomes = _drive_round(ctx, fleet, rnd, limits, where, lease, poll, pool, orphans, sleep)
            result.rounds.append(list(outcomes.values()))
            result.finished_at.append(time.time())
            if on_round is not None:
                on_round(result.of_round(int(rnd["round"])))
            records = [ctx.store.get_vm(ctx.plan.name, vm) for vm in fleet.names]
            ready = all(r is not None and r.state == "syncing" for r in records)
            if req.until_ready and ready:
                result.stopped = "every VM is ready for cutover"
                break
            if req.every is None and not req.until_ready:
                break
            if req.until is not None and now() >= req.until:
                result.stopped = "--until reached"
                break
            if req.every is None:  # --until-ready alone: the next round right away, at most 3
                if len(result.rounds) >= 3:
                    result.stopped = "gave up after 3 rounds with failures"
                    break
                continue
            wait_s = max(0.0, rnd["started_at"] + req.every - ctx.store.clock())
            if req.until is not None:
                wait_s = min(wait_s, max(0.0, (req.until - now()).total_seconds()))
            ctx.reporter.log("info", f"next sync round in {wait_s:.0f} s")
            _sleep(ctx, wait_s, sleep)
    except BaseException:
        ctx.cancel.event.set()  # passes in flight stop at their next block, checkpointed, and release their leases
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        try:
            _drop_orphans(ctx, orphans)
            fleet.leave()
        except ScmtError:
            pass
    return result


def _drive_round(ctx: MigrationContext, fleet: _Fleet, rnd: dict[str, Any], limits: Limits,
                 where: _Placements, lease: float, poll: float, pool: ThreadPoolExecutor,
                 orphans: list[tuple[str, str]], sleep: Callable[[float], None]) -> dict[str, VmOutcome]:
    """Claim and sync due VMs until the round is complete (other hosts' VMs included)."""
    running: dict[Future[VmOutcome], str] = {}
    outcomes: dict[str, VmOutcome] = {}
    waiting_said = ""
    while True:
        ctx.cancel.check()
        for fut in [f for f in running if f.done()]:
            vm = running.pop(fut)
            outcomes[vm] = fut.result()
        try:
            _drop_orphans(ctx, orphans)
            lock: VmLock | None = None
            why = ""
            if len(running) < fleet.share(limits.concurrency):
                due = fleet.due(rnd, set(running.values()))
                if not due and not running and fleet.complete(rnd):
                    return outcomes
                known = where.current() if due else {}
                if due and known is None:
                    why = "the per-ESXi-host and per-datastore limits need the inventory, which vCenter does not give"
                elif due:
                    lock, why = claim(ctx.store, fleet.plan, due, limits=limits, placement=known, lease_seconds=lease)
        except StateStoreError as exc:
            ctx.reporter.log("warning", f"state store unreachable, starting no new work: {exc.message}")
            _sleep(ctx, STORE_RETRY_SECONDS, sleep)
            continue
        if lock is not None:
            vm = lock.resource.rpartition("/")[2]
            ctx.reporter.log("info", f"{vm}: leased by host {host_id()}", vm=vm)
            running[pool.submit(_one, ctx, fleet, rnd, vm, lock, orphans)] = vm
            continue
        if why and why != waiting_said:
            ctx.reporter.log("debug", f"waiting: {why}")
            waiting_said = why
        if running:
            wait(list(running), timeout=poll, return_when=FIRST_COMPLETED)
        else:
            _sleep(ctx, poll, sleep)


def _one(ctx: MigrationContext, fleet: _Fleet, rnd: dict[str, Any], vm: str, lock: VmLock,
         orphans: list[tuple[str, str]]) -> VmOutcome:
    from scmt_cli.services.migration.sync import guarded_pass

    try:
        out = guarded_pass(ctx, vm, lock)
    except StateStoreError as exc:  # the store went away while the failure itself was being recorded
        ctx.reporter.log("error", f"{vm}: sync stopped: {exc.message}", vm=vm)
        out = VmOutcome(vm, ok=False, action="sync", error=exc.message, error_code=exc.exit_code)
    outcome = "ok" if out.ok else f"failed ({out.error_code})"
    try:
        # the store down, a stop, or a lease that is no longer certainly ours: not done in this round (the lock
        # says so, not the exit code: exit 40 is also a refusal, e.g. another store's snapshot on the VM, which
        # is a failure of this round like any other)
        not_done = out.error_code in (41, 130, 143) or _lease_gone(lock)
        if not out.ok and not not_done:
            fleet.record_failure(vm, rnd, out)
        release(ctx.store, fleet.plan, vm, lock, outcome=outcome)
    except StateStoreError as exc:
        ctx.reporter.log("warning", f"{vm}: cannot release its lease yet: {exc.message}", vm=vm)
        orphans.append((vm, lock.owner))
    return out


def _lease_gone(lock: VmLock) -> bool:
    """True when ``lock`` is lost or may have lapsed (what :meth:`VmLock.fence` refuses); no database access."""
    try:
        lock.fence()
    except (LockedError, RuntimeError):
        return True
    return False


def _drop_orphans(ctx: MigrationContext, orphans: list[tuple[str, str]]) -> None:
    while orphans:
        vm, owner = orphans[0]
        try:
            drop_lease(ctx.store, ctx.plan.name, vm, owner)
        except StateStoreError:
            return
        orphans.pop(0)


def _retry(ctx: MigrationContext, fn: Callable[[], dict[str, Any]], sleep: Callable[[float], None]) -> dict[str, Any]:
    while True:
        try:
            return fn()
        except StateStoreError as exc:
            ctx.reporter.log("warning", f"state store unreachable, starting no new work: {exc.message}")
            _sleep(ctx, STORE_RETRY_SECONDS, sleep)


def _sleep(ctx: MigrationContext, seconds: float, sleep: Callable[[float], None]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctx.cancel.check()
        sleep(min(1.0, max(0.0, end - time.monotonic())))
