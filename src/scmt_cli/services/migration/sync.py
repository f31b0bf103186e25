"""``scmt sync``: seed each VM's disks, then copy only what CBT says changed.

One *pass* over one VM (:func:`sync_pass`), under the VM's leased lock:

1. decide from the persisted state (``planned``/``rolled-back`` -> seed,
   ``seeding`` -> resume the seed, ``syncing`` -> incremental);
2. remove the tool's snapshots an interrupted run of this state store left
   behind (reported); another store's are named and the VM is refused (exit
   40) unless ``--remove-foreign-snapshots`` (:mod:`.snapshots`);
3. turn CBT on when it is off (the stun cycle is the adapter's job; it is
   recorded as started first, so a kill inside it is cleaned up next time);
4. prepare the target disks on the plan's platform;
5. open (or resume) the sync generation, run the ``sync`` pre hooks;
6. create the snapshot ``scmt-sync-<plan>-g<generation>-<run>`` (its
   description carries the owner tag: this store's and this run's ids, see
   :mod:`.snapshots`), read its change ids, copy every included disk
   (:mod:`.diskcopy`), remove the snapshot - also when the copy fails;
7. finish the generation, ``seeding -> syncing``, run the post hooks.

:func:`run_sync` runs passes over the selected VMs, ``concurrency`` at a
time, once or every ``--every`` until ``--until`` / ``--until-ready``.
VMs of method ``agent``/``hot-backup`` skip steps 2, 3 and 6: their disks are
read through the scmt agent (:mod:`.agentsync`; no snapshot, no CBT).  A
failing VM does not stop the others; the result's exit code is 60 then.
"""

from __future__ import annotations

import datetime as dt
import errno
import shlex
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.domain.vmstate import SUSPENDED, plan_command
from scmt_cli.errors import (
    InvalidStateError,
    NoSpaceError,
    ScmtError,
    SourceOperationError,
    no_space,
)
from scmt_cli.events import Reporter
from scmt_cli.services.hooks import HookContext, commands_for, run_hooks
from scmt_cli.services.migration.context import MigrationContext, VmOutcome, exit_code_of_vms
from scmt_cli.services.migration.diskcopy import (
    DiskResult,
    copy_disk,
    progress_key,
    reset_progress,
    with_stable_indexes,
)
from scmt_cli.services.migration.gate import check_assessment
from scmt_cli.services.migration.snapshots import (
    cleanup_tool_snapshots,
    refuse_foreign,
    stun_finished,
    stun_started,
    sync_snapshot_description,
    sync_snapshot_name,
)
from scmt_cli.services.migration.source import included_disks, require_wired_method, source_vm
from scmt_cli.services.migration.when import describe_when
from scmt_cli.state.locks import VmLock
from scmt_cli.targets import DiskRequest
from scmt_cli.transports.base import BlockSource
from scmt_cli.transports.wrappers import SourceProxy, ThrottledSource
from scmt_cli.vsphere.api import VCenter


class _CancellableSource(SourceProxy):
    """Checks the command's cancel flag before every read, readinto and readinto_many (so Ctrl-C stops
    worker threads); each is forwarded to the inner source's own, keeping its zero-copy and pipelining."""

    def __init__(self, inner: BlockSource, check: Callable[[], None]) -> None:
        super().__init__(inner)
        self._check = check

    def read(self, offset: int, length: int) -> bytes:
        self._check()
        return self.inner.read(offset, length)

    def readinto(self, offset: int, buf: memoryview) -> None:
        self._check()
        self.inner.readinto(offset, buf)

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
        self._check()
        self.inner.readinto_many(ranges)  # the inner's own, so NBD keeps the ranges in flight together


def hook_context(ctx: MigrationContext, vm: str, phase: Any, step: str) -> HookContext:
    eff = ctx.effective(vm)
    return HookContext(plan=ctx.plan.name, phase=phase, vm=vm, step=step, method=eff.method, group=eff.group,
                       target_name=eff.target_name, cwd=str(Path(ctx.plan.file).parent))


def sync_pass(ctx: MigrationContext, vm: str, lock: VmLock, *, final: bool = False,
              vc: VCenter | None = None) -> VmOutcome:
    """One pass over ``vm`` (see the module doc); ``final`` is failover's last pass (state untouched).

    Raises ScmtError on failure; the caller records it.
    """
    store, plan = ctx.store, ctx.plan.name
    eff = ctx.effective(vm)
    require_wired_method(eff, "sync")
    status, _ = ctx.status(vm)
    out = VmOutcome(vm)
    enter: Any = None
    if final:
        kind = "final"
    else:
        decision = plan_command("sync", status.state, vm=vm, failed_from=status.failed_from)
        assert decision.enter is not None
        enter = decision.enter
        if status.state == "rolled-back" or status.failed_from == "rolled-back":
            for key in store.checkpoint_keys(f"sync/{plan}/{vm}/disk"):
                tail = key.rsplit("/", 1)[-1]
                if key.count("/") == 3 and tail.startswith("disk"):
                    reset_progress(store, plan, vm, int(tail[4:]))
            for key in store.checkpoint_keys(f"agent/{plan}/{vm}/"):  # agent manifests describe the old target
                store.delete_checkpoint(key)
            out.warnings.append(f"{vm}: the target ran after the last failover; seeding again from scratch")
        kind = "seed" if enter == "seeding" else "incremental"
    out.action = kind

    def begin() -> None:
        """Enter the pass's state, once nothing can refuse the pass (a refused VM keeps its state)."""
        nonlocal status
        if enter is not None and (enter != status.state or status.state in SUSPENDED):
            status = status.move(enter)
            ctx.save_status(status)

    if eff.method in ("agent", "hot-backup"):
        begin()
        return _agent_sync(ctx, vm, lock, kind=kind, final=final, status=status, out=out)
    own_vc = vc is None
    vcenter = vc or ctx.vcenter()
    gen: int | None = None
    snap: str | None = None
    t0 = time.monotonic()
    try:
        inventory = vcenter.inventory()  # one read per pass: the VM, its host and datastores for the gate
        inv_vm = source_vm(vcenter, vm, inventory=inventory)
        check_assessment(ctx.plan, eff, inv_vm, inventory)
        disks, skipped = included_disks(eff, inv_vm)
        out.warnings.extend(skipped)
        if not disks:
            raise InvalidStateError(f"{vm}: no disk of this VM is copied (all excluded or unsupported)")
        disks = with_stable_indexes(store, plan, vm, disks)  # excluding a disk must not move the others
        owner = ctx.snapshot_owner
        cleanup = cleanup_tool_snapshots(vcenter, store, plan, vm, owner, ctx.reporter,
                                         remove_foreign=ctx.remove_foreign_snapshots)
        if cleanup.removed:
            out.data["leftover_snapshots_removed"] = cleanup.removed
        out.warnings.extend(cleanup.warnings)
        refuse_foreign(vm, shlex.quote(str(ctx.plan.file)), cleanup)
        begin()  # nothing refuses the pass after this point
        if ctx.plan.source.enable_cbt:
            stun_started(store, plan, vm, owner)  # a kill inside the stun cycle leaves a snapshot we must own
            if vcenter.enable_cbt(vm):  # a change the plan allowed: said in the result, not a warning
                change = ("changed block tracking turned on (it was off; source.enable_cbt: true; the VM was "
                          "stunned while a snapshot was taken and removed)")
                out.data["cbt_enabled"] = True
                out.data.setdefault("source_changes", []).append(change)
                ctx.reporter.event("source_changed", vm=vm, change="cbt_enabled")
            stun_finished(store, plan, vm)
        target_name = eff.target_name
        fresh = {d.index: not _copy_file_exists(ctx, target_name, d.index) for d in disks}
        prepared = ctx.platform.prepare_disks(target_name, [DiskRequest(d.index, d.capacity) for d in disks])
        by_index = {p.index: p for p in prepared}
        running = store.last_generation(plan, vm)
        if running is not None and running.status == "running":
            if running.kind == kind:
                gen = running.id
                ctx.reporter.log("info", f"{vm}: resuming interrupted {kind} pass (generation {gen})", vm=vm)
                out.data["resumed"] = True
            else:
                store.finish_generation(running.id, ok=False, stats={}, error="interrupted")
        if gen is None:
            starts = {}
            for d in disks:
                prog = store.get_checkpoint(progress_key(plan, vm, d.key)) or {}
                starts[d.key] = prog.get("change_id") or "*"
            gen = store.begin_generation(plan, vm, kind, starts)
        if not final:
            run_hooks(commands_for(eff.hooks, "sync"), "pre", hook_context(ctx, vm, "sync", kind), ctx.reporter)
        ctx.cancel.check()
        snap = vcenter.create_snapshot(vm, sync_snapshot_name(plan, gen, owner),
                                       description=sync_snapshot_description(plan, kind, gen, owner))
        change_ids = vcenter.disk_change_ids(vm, snap)
        capacities = vcenter.disk_capacities(vm, snap)
        bucket = ctx.bucket(vm)

        def wrap(src: BlockSource) -> BlockSource:
            wrapped: BlockSource = _CancellableSource(src, ctx.cancel.check)
            return ThrottledSource(wrapped, bucket) if bucket is not None else wrapped

        results: list[DiskResult] = []
        for d in disks:
            size = capacities.get(d.key, d.capacity)
            if size > by_index[d.index].size_bytes:
                ctx.platform.prepare_disks(target_name, [DiskRequest(x.index, capacities.get(x.key, x.capacity))
                                                         for x in disks])
            results.append(copy_disk(
                store=store, vc=vcenter, plan=plan, vm=vm, snapshot=snap, disk_key=d.key, label=d.label,
                index=d.index, size=size, change_id=change_ids.get(d.key), target_url=by_index[d.index].copy_url,
                generation=gen, fresh_target=fresh[d.index], lock=lock, reporter=ctx.reporter, wrap_source=wrap,
            ))  # fmt: skip
        removed, snap = snap, None
        vcenter.remove_snapshot(vm, removed)
        seconds = time.monotonic() - t0
        stats = _stats(results, seconds)
        store.finish_generation(gen, ok=True, stats=stats)
        for r in results:
            if r.reason:
                out.warnings.append(f"{vm}: {r.label}: {r.reason}; the whole disk was copied again")
        if not final and status.state == "seeding":
            status = status.move("syncing")
            ctx.save_status(status)
        out.state = status.state
        out.data.update(stats)
        out.data["generation"] = gen
        out.data["kind"] = kind
        if not final:
            post = run_hooks(commands_for(eff.hooks, "sync"), "post", hook_context(ctx, vm, "sync", kind),
                             ctx.reporter)
            out.warnings.extend(post.warnings)
        ctx.reporter.event("sync_done", vm=vm, pass_kind=kind, generation=gen, bytes_read=stats["bytes_read"],
                           bytes_written=stats["bytes_written"], seconds=stats["seconds"])
        return out
    except BaseException as exc:
        if gen is not None:
            try:
                store.finish_generation(gen, ok=False, stats={}, error=_message(exc))
            except ScmtError:
                pass
        raise
    finally:
        if snap is not None:
            try:
                vcenter.remove_snapshot(vm, snap)
            except ScmtError as exc:
                ctx.reporter.log("warning", f"{vm}: could not remove snapshot {snap}: {exc.message}; "
                                 "the next run removes it", vm=vm)
        if own_vc:
            vcenter.close()


def _agent_sync(ctx: MigrationContext, vm: str, lock: VmLock, *, kind: str, final: bool, status: Any,
                out: VmOutcome) -> VmOutcome:
    """:func:`sync_pass` for ``method: agent``: through the VM's agent (:mod:`.agentsync`), no vCenter."""
    from scmt_cli.services.migration.agentsync import agent_pass

    eff = ctx.effective(vm)
    bucket = ctx.bucket(vm)

    def wrap(src: BlockSource) -> BlockSource:
        wrapped: BlockSource = _CancellableSource(src, ctx.cancel.check)
        return ThrottledSource(wrapped, bucket) if bucket is not None else wrapped

    def hooks(stage: Any) -> list[str]:
        report = run_hooks(commands_for(eff.hooks, "sync"), stage, hook_context(ctx, vm, "sync", kind), ctx.reporter)
        return list(report.warnings)

    stats = agent_pass(ctx, vm, lock, kind=kind, final=final, out=out, wrap=wrap, hooks=hooks,
                       copy_file_exists=lambda name, index: _copy_file_exists(ctx, name, index))
    if not final and status.state == "seeding":
        status = status.move("syncing")
        ctx.save_status(status)
    out.state = status.state
    out.data.update(stats)
    out.data["kind"] = kind
    if not final:
        out.warnings.extend(hooks("post"))
    ctx.reporter.event("sync_done", vm=vm, pass_kind=kind, generation=out.data.get("generation"),
                       bytes_read=stats["bytes_read"], bytes_written=stats["bytes_written"],
                       seconds=stats["seconds"])
    return out


def _copy_file_exists(ctx: MigrationContext, target_name: str, index: int) -> bool:
    """Whether the raw copy file exists already (dir and libvirt keep it at ``<root>/<vm>/disk<N>.raw``)."""
    root = getattr(ctx.platform, "root", None)
    if root is None:
        return True  # unknown platform layout: never assume the target reads as zeroes
    from scmt_cli.targets.storage import vm_dir

    return (vm_dir(Path(root), target_name) / f"disk{index}.raw").exists()


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ScmtError) else f"{type(exc).__name__}: {exc}"


def _stats(results: list[DiskResult], seconds: float) -> dict[str, Any]:
    read = sum(r.bytes_read for r in results)
    return {
        "bytes_read": read,
        "bytes_written": sum(r.bytes_written for r in results),
        "bytes_zero": sum(r.bytes_zero for r in results),
        "planned_bytes": sum(r.planned_bytes for r in results),
        "seconds": round(seconds, 3),
        "throughput_bytes_per_s": int(read / seconds) if seconds > 0 else None,
        "disks": [r.to_dict() for r in results],
    }


def guarded_pass(ctx: MigrationContext, vm: str, lock: VmLock | None = None) -> VmOutcome:
    """:func:`sync_pass` under the VM's lock (``lock`` when the caller holds it already, as a fleet worker does);
    a failure is recorded and returned, not raised."""
    status, _ = ctx.status(vm)
    try:
        require_wired_method(ctx.effective(vm), "sync")
        with ctx.lock(vm) if lock is None else nullcontext(lock) as held:
            status, _ = ctx.status(vm)
            return sync_pass(ctx, vm, held)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - one VM's failure must not stop the others
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # a target-side file we did not wrap
            exc = no_space(exc.filename or str(getattr(ctx.platform, "root", "the target")))
        elif not isinstance(exc, ScmtError):
            exc = SourceOperationError(f"{vm}: {type(exc).__name__}: {exc}")
        message = exc.message
        if isinstance(exc, NoSpaceError):
            command = f"scmt sync {shlex.quote(str(ctx.plan.file))} --vm {shlex.quote(vm)}"
            message = (f"{vm}: {exc.message}; free space on that file system (or point target.path elsewhere), "
                       f"then run '{command}' again: the copy resumes from its last checkpoint")
        out = VmOutcome(vm, ok=False, error=message, error_code=exc.exit_code, action="sync")
        if exc.exit_code not in (4, 40, 42, 130, 143):  # a lock held elsewhere, a refusal or a stop changes nothing
            status, _ = ctx.status(vm)
            out.state = ctx.fail(status, exc).state
        else:
            out.state = status.state
        ctx.reporter.log("error", f"{vm}: sync failed: {message}", vm=vm)
        return out


@dataclass(frozen=True)
class SyncRequest:
    """``scmt sync``.  ``every`` in seconds; ``until`` timezone-aware."""

    plan: Path
    vms: tuple[str, ...] = ()
    every: float | None = None
    until: dt.datetime | None = None
    until_ready: bool = False
    fleet: bool = False  # share the VMs with other hosts through leases (always on with a shared store)
    remove_foreign_snapshots: bool = False  # also remove tool snapshots another state store made
    group: str | None = None  # the members of this plan group (groups fail over, so they sync, together)
    bandwidth: float | None = None  # bytes/s over the plan's limit for this run (math.inf: unlimited)


@dataclass
class SyncResult:
    """The rounds of one ``scmt sync`` run, or one round of it (``round`` set: what ``--every`` prints as
    each round ends).  ``interrupted``: the exit code (130, 143) of a run stopped by a signal, whose result
    is the summary of the rounds done."""

    plan: str
    rounds: list[list[VmOutcome]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stopped: str = ""
    host: str | None = None  # set in fleet mode: this worker's host id
    round: int | None = None
    until: dt.datetime | None = None
    interrupted: int | None = None
    finished_at: list[float] = field(default_factory=list)  # when each round ended (epoch seconds)

    def of_round(self, number: int) -> SyncResult:
        """The last round alone, numbered ``number`` (a fleet's rounds are numbered by the store)."""
        return SyncResult(self.plan, rounds=[self.rounds[-1]], host=self.host, round=number, until=self.until,
                          finished_at=self.finished_at[-1:])

    @property
    def last(self) -> dict[str, VmOutcome]:
        out: dict[str, VmOutcome] = {}
        for rnd in self.rounds:
            for o in rnd:
                out[o.vm] = o
        return out

    @property
    def failed(self) -> list[str]:
        return [o.vm for o in self.last.values() if not o.ok]

    @property
    def exit_code(self) -> int:
        """0/1; 60 when some VMs failed; when every VM failed with the same error, that error's code;
        130/143 for the summary of a run a signal stopped."""
        if self.interrupted is not None:
            return self.interrupted
        last = self.last
        return exit_code_of_vms([o.error_code for o in last.values() if not o.ok], len(last),
                                bool(self.warnings) or any(o.warnings for o in last.values()))

    def to_dict(self) -> dict[str, Any]:
        last = self.last
        return {
            "plan": self.plan,
            "rounds": len(self.rounds),
            "stopped": self.stopped,
            "vms": [o.to_dict() for o in last.values()],
            "failed": self.failed,
            "totals": {
                "bytes_read": sum(int(o.data.get("bytes_read", 0)) for r in self.rounds for o in r),
                "bytes_written": sum(int(o.data.get("bytes_written", 0)) for r in self.rounds for o in r),
            },
            "history": [[o.to_dict() for o in r] for r in self.rounds] if len(self.rounds) > 1 else [],
            "warnings": list(self.warnings) + [w for o in last.values() for w in o.warnings],
            **({"host": self.host} if self.host is not None else {}),
            **({"round": self.round} if self.round is not None else {}),
            **({"until": self.until.isoformat(timespec="seconds")} if self.until is not None else {}),
        }


#: Called with each round's result (:meth:`SyncResult.of_round`) as it ends (``scmt sync --every`` prints it).
RoundSink = Callable[["SyncResult"], None]


def run_sync(req: SyncRequest, ctx: MigrationContext, *, sleep: Callable[[float], None] = time.sleep,
             now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
             on_round: RoundSink | None = None) -> SyncResult:
    """Run rounds of passes over the selected VMs (see the module doc); in fleet mode see :mod:`.fleet`.

    ``on_round`` is called after each round, before the wait for the next one.
    """
    from scmt_cli.services.migration.fleet import fleet_mode, run_fleet

    ctx.remove_foreign_snapshots = req.remove_foreign_snapshots
    ctx.bandwidth_override = req.bandwidth
    names = ctx.select(req.vms, req.group)
    if req.until is not None:
        ctx.reporter.log("info", f"sync rounds end at {describe_when(req.until, now())}")
    if fleet_mode(req, ctx):
        return run_fleet(req, ctx, names, sleep=sleep, now=now, on_round=on_round)
    result = SyncResult(ctx.plan.name, until=req.until)
    workers = max(1, ctx.plan.defaults.concurrency)
    while True:
        started = time.monotonic()
        ctx.reporter.event("sync_round", round=len(result.rounds) + 1, vms=names)
        result.rounds.append(ctx.run_pool(names, lambda v: guarded_pass(ctx, v), workers=workers))
        result.finished_at.append(time.time())
        if on_round is not None:
            on_round(result.of_round(len(result.rounds)))
        ready = all(o.ok and o.state == "syncing" for o in result.last.values())
        if req.until_ready and ready:
            result.stopped = "every VM is ready for cutover"
            break
        if req.every is None and not req.until_ready:
            break
        if req.until is not None and now() >= req.until:
            result.stopped = "--until reached"
            break
        wait = max(0.0, (req.every or 0.0) - (time.monotonic() - started))
        if req.until is not None:
            wait = min(wait, max(0.0, (req.until - now()).total_seconds()))
        if req.every is None and not ready and len(result.rounds) >= 3:
            result.stopped = "gave up after 3 rounds with failures"
            break
        ctx.reporter.log("info", f"next sync round in {wait:.0f} s")
        _sleep_cancellable(ctx, wait, sleep)
    return result


def _sleep_cancellable(ctx: MigrationContext, seconds: float, sleep: Callable[[float], None]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctx.cancel.check()
        sleep(min(1.0, max(0.0, end - time.monotonic())))


def sync_service(req: SyncRequest, store: Any, reporter: Reporter, *, on_round: RoundSink | None = None,
                 **kw: Any) -> SyncResult:
    """Open the plan's context on ``store`` and run :func:`run_sync`."""
    from scmt_cli.services.migration.context import open_context

    ctx = open_context(req.plan, store, reporter, **kw)
    try:
        return run_sync(req, ctx, on_round=on_round)
    finally:
        ctx.close()
