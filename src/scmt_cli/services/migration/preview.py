"""``--dry-run`` of ``sync``, ``failover`` and ``migrate``: each step the command would take, changing nothing.

A preview reads the plan, the state store and (read-only) the source: vCenter's
inventory and the VM's snapshots, never a snapshot created, a state recorded, a
lock taken or a source action applied.  The plan is not recorded in the store
either (``open_context`` does that for a real run).  Per VM it says whether the
command would act on it and, when not, the error and exit code the real run
would give (blocked 20, locked 40, wrong state 42, ...); then the steps in order
with their estimates:

* size: a seed copies the disks' allocated bytes (their capacity when vCenter does
  not say); an incremental or final pass about as much as the last incremental read
  (what changed since is only known from a snapshot's CBT, which a preview does
  not take);
* time: size at the fastest rate the VM's earlier passes read at, never above this
  run's limit (``--bandwidth``, else the plan's); unknown without either.

The exit code is the real run's as far as the preview can tell: 0 when every VM
would proceed, else the shared code of the refusals, or 60.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.domain.plan import load_plan
from scmt_cli.domain.units import format_duration, format_size
from scmt_cli.domain.vmstate import CUTOVER_STEPS, SUSPENDED, plan_command
from scmt_cli.errors import ScmtError
from scmt_cli.events import Reporter
from scmt_cli.services.migration.context import MigrationContext, exit_code_of_vms, platform_spec
from scmt_cli.state import StateStore, vm_resource

_OVERHEAD = "quiesce, define and start"


@dataclass
class Step:
    """One step the command would take for a VM: ``step`` names it, ``action`` says what it would do."""

    step: str
    action: str
    bytes: int | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "action": self.action, "bytes": self.bytes, "seconds": self.seconds}


@dataclass
class VmPreview:
    vm: str
    state: str
    method: str
    proceeds: bool = True
    reason: str | None = None  # why the real run would not act on this VM
    error_code: int | None = None
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def refuse(self, exc: ScmtError) -> VmPreview:
        self.proceeds, self.reason, self.error_code = False, exc.message, exc.exit_code
        return self

    def to_dict(self) -> dict[str, Any]:
        known = [s.seconds for s in self.steps if s.seconds is not None]
        return {"vm": self.vm, "state": self.state, "method": self.method, "proceeds": self.proceeds,
                "reason": self.reason, "error_code": self.error_code, "steps": [s.to_dict() for s in self.steps],
                "bytes": sum(s.bytes or 0 for s in self.steps),
                "seconds": round(sum(known), 1) if known else None, "warnings": list(self.warnings)}


@dataclass
class PreviewResult:
    """What ``COMMAND --dry-run`` would do (the ``preview`` document)."""

    command: str
    plan: str
    vms: list[VmPreview] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        refused = [v.error_code for v in self.vms if not v.proceeds and v.error_code is not None]
        return exit_code_of_vms(refused, len(self.vms), bool(self.all_warnings()))

    def all_warnings(self) -> list[str]:
        return list(dict.fromkeys([*self.warnings, *(w for v in self.vms for w in v.warnings)]))

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": True, "command": self.command, "plan": self.plan, "notes": list(self.notes),
                "vms": [v.to_dict() for v in self.vms], "warnings": self.all_warnings()}


class _Preview:
    """The plan, the store and one read-only vCenter session, shared by the VMs of one preview.

    ``state`` is the ``--state`` option: a store that does not exist yet is not created (an empty one in
    a temporary folder stands in: every VM is ``planned``).
    """

    def __init__(self, plan_path: Path, state: str | None, reporter: Reporter, command: str) -> None:
        from scmt_cli.services.migration.status import open_existing

        loaded = load_plan(plan_path)
        for w in loaded.warnings:
            reporter.log("warning", w.format())
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        store = open_existing(state)
        if store is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="scmt-preview-")
            store = StateStore.open(Path(self._tmp.name) / "state.db")
        self.store = store
        self.ctx = MigrationContext(loaded.plan, store, reporter)  # not open_context: nothing is recorded
        self.result = PreviewResult(command, loaded.plan.name)
        self._vc: Any = None
        self._inventory: Any = None
        self._failed: ScmtError | None = None

    def close(self) -> None:
        if self._vc is not None:
            self._vc.close()
        self.ctx.close()
        self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def inventory(self) -> Any:
        """vCenter's inventory, read once (ScmtError when vCenter cannot be read: the same error for every
        VM, without trying again for each)."""
        if self._failed is not None:
            raise self._failed
        if self._inventory is None:
            try:
                if self._vc is None:
                    self._vc = self.ctx.vcenter()
                self._inventory = self._vc.inventory()
            except ScmtError as exc:
                self._failed = exc
                raise
        return self._inventory

    def vm(self, name: str) -> VmPreview:
        status, _ = self.ctx.status(name)
        shown = status.state if not status.failed_from else f"{status.state} ({status.failed_from})"
        return VmPreview(name, shown, self.ctx.effective(name).method)

    # -- estimates ---------------------------------------------------------------------------------------
    def rate(self, vm: str) -> float | None:
        """Bytes/s the VM's next pass may read at: the fastest earlier pass, capped by this run's limit."""
        gens = [g for g in self.ctx.store.generations(self.ctx.plan.name, vm) if g.ok]
        measured = [g.bytes_read / float(g.stats["seconds"]) for g in gens
                    if g.bytes_read > 1024 * 1024 and float(g.stats.get("seconds") or 0) > 0]
        limit = self.ctx.rate(vm)
        best = max(measured) if measured else None
        if best is None:
            return limit
        return min(best, limit) if limit is not None else best

    def last_incremental(self, vm: str) -> int | None:
        gens = [g for g in self.ctx.store.generations(self.ctx.plan.name, vm)
                if g.ok and g.kind in ("incremental", "final")]
        return gens[-1].bytes_read if gens else None

    def copy_step(self, vm: str, step: str, kind: str, size: int | None) -> Step:
        rate = self.rate(vm)
        seconds = round(size / rate, 1) if size is not None and rate else None
        what = {"seed": "full copy", "incremental": "changed blocks", "final": "final delta"}[kind]
        if size is None:
            return Step(step, f"{what}: size unknown until an incremental pass has run")
        how = "about " + format_size(size)
        when = f", about {format_duration(seconds)}" if seconds is not None else ""
        basis = "" if kind == "seed" else " (as much as the last incremental read)"
        return Step(step, f"{what}: {how}{basis}{when}", size, seconds)

    # -- locks, sources ------------------------------------------------------------------------------------
    def locked(self, vm: str) -> ScmtError | None:
        from scmt_cli.errors import LockedError
        from scmt_cli.state.locks import takeover_reason

        holder = self.ctx.store.lock_holder(vm_resource(self.ctx.plan.name, vm))
        # live as the real run's acquire sees it: not only a lease not yet expired, also a holder still alive
        if holder is not None and takeover_reason(holder, self.ctx.store.clock()) is None:
            return LockedError(f"{vm}: locked by pid {holder.pid} on {holder.hostname} (another run drives it)")
        return None


def _sync_steps(p: _Preview, out: VmPreview, *, remove_foreign: bool) -> list[Step]:
    """The steps of one sync pass of ``out.vm`` (raises ScmtError when the real pass would refuse)."""
    from scmt_cli.services.migration.gate import check_assessment
    from scmt_cli.services.migration.snapshots import tool_snapshots
    from scmt_cli.services.migration.source import included_disks, require_wired_method, source_vm

    ctx, vm = p.ctx, out.vm
    eff = ctx.effective(vm)
    require_wired_method(eff, "sync")
    status, _ = ctx.status(vm)
    decision = plan_command("sync", status.state, vm=vm, failed_from=status.failed_from)
    kind = "seed" if decision.enter == "seeding" else "incremental"
    steps: list[Step] = []
    if status.state == "rolled-back" or status.failed_from == "rolled-back":
        steps.append(Step("reset", "the target ran after the last failover: seed again from scratch"))
    if eff.method in ("agent", "hot-backup"):
        agent = eff.agent.address if eff.agent is not None else "its agent"
        size = sum(d.capacity_bytes or 0 for d in ctx.store.list_disks(ctx.plan.name, vm)) or None
        steps.append(p.copy_step(vm, kind, kind, size if kind == "seed" else p.last_incremental(vm)))
        steps[-1].action += f", read through the scmt agent at {agent} (no snapshot)"
        return steps
    inventory = p.inventory()
    inv_vm = source_vm(p._vc, vm, inventory=inventory)
    check_assessment(ctx.plan, eff, inv_vm, inventory)  # a blocked VM is refused, as the real pass refuses it
    disks, skipped = included_disks(eff, inv_vm)
    out.warnings.extend(skipped)
    for snap, ours in tool_snapshots(p._vc, ctx.store, ctx.plan.name, vm, ctx.store.store_id):
        if ours:  # the real pass's cleanup decides with the same function
            steps.append(Step("cleanup", f"remove snapshot {snap.name}, left by an interrupted run of this store"))
        elif remove_foreign:
            steps.append(Step("cleanup", f"remove snapshot {snap.name} of another state store "
                                         "(--remove-foreign-snapshots)"))
        else:
            from scmt_cli.errors import LockedError

            raise LockedError(f"{vm}: snapshot {snap.name} was made by another scmt state store or has no owner "
                              "tag: the pass would be refused (--remove-foreign-snapshots removes it)")
    running = ctx.store.last_generation(ctx.plan.name, vm)
    if running is not None and running.status == "running" and running.kind == kind:
        steps.append(Step("resume", f"resume the interrupted {kind} pass (generation {running.id}) from its "
                                    "checkpoints"))
    if not inv_vm.cbt_enabled:
        if ctx.plan.source.enable_cbt:
            steps.append(Step("cbt", "turn changed block tracking on (a stun cycle: snapshot taken and removed)"))
        else:
            steps.append(Step("cbt", "changed block tracking is off and source.enable_cbt is false"))
    steps.append(Step("snapshot", f"create snapshot scmt-sync-{ctx.plan.name}-g<N>-<run>, read its change ids"))
    if kind == "seed":
        used = {d.key: d.used_bytes for d in inv_vm.disks}
        size = sum(used.get(d.key) or d.capacity for d in disks)
    else:
        size = p.last_incremental(vm)
    steps.append(p.copy_step(vm, kind, kind, size))
    steps[-1].action += f" of {len(disks)} disk(s)"
    steps.append(Step("snapshot", "remove the snapshot"))
    return steps


def _failover_steps(p: _Preview, out: VmPreview, req: Any, *, group: str | None,
                    after_syncs: bool = False) -> list[Step]:
    """The cutover steps not done yet for ``out.vm`` (raises ScmtError when failover would refuse).

    ``after_syncs``: the steps of a migrate, which fails over once its syncs made the VM 'syncing'.
    """
    from scmt_cli.domain.vmstate import next_cutover_step
    from scmt_cli.services.hooks import commands_for
    from scmt_cli.services.migration.failover import _Cutover

    ctx, vm = p.ctx, out.vm
    eff = ctx.effective(vm)
    status, _ = ctx.status(vm)
    done: tuple[str, ...] = ()
    if not after_syncs:
        if plan_command("failover", status.state, vm=vm, failed_from=status.failed_from).noop:
            return [Step("none", "already cut over: nothing to do")]
        done = tuple(status.steps_done)
    cut = _Cutover(ctx, req, vm, lock=None)  # type: ignore[arg-type]  # reads only: no step is run
    try:
        first = next_cutover_step(done, vm=vm)
        if first == "source-quiesced":
            cut.precheck()  # the plan's maps resolve against the source (read-only); no test copy exists
    finally:
        cut.close()
    todo = CUTOVER_STEPS[CUTOVER_STEPS.index(first):] if first is not None else ()
    hooks = commands_for(eff.hooks, "failover")
    steps: list[Step] = []
    for step in todo:
        if step == "source-quiesced":
            if hooks is not None and hooks.pre:
                steps.append(Step("hooks", "run the failover pre hooks: " + "; ".join(" ".join(c) for c in hooks.pre)))
            action = {"disconnect-network": "disconnect the source's NICs (it keeps running)",
                      "shutdown": "shut the source's guest down", "none": "leave the source as it is (no action)"}
            steps.append(Step(step, f"source action {cut.source_action}: {action[cut.source_action]}"))
        elif step == "final-sync-done":
            steps.append(p.copy_step(vm, step, "final", p.last_incremental(vm)))
        elif step == "converted":
            steps.append(Step(step, _conversion(p, vm, cut.direct)))
        elif step == "target-defined":
            steps.append(Step(step, f"define the target VM {eff.target_name} on the {ctx.plan.target.type} target"))
        elif step == "target-started":
            steps.append(Step(step, f"start {eff.target_name} (downtime ends)" if cut.target_state == "on"
                              else f"leave {eff.target_name} off (target state off)"))
    if hooks is not None and hooks.post:
        steps.append(Step("hooks", "run the failover post hooks: " + "; ".join(" ".join(c) for c in hooks.post)))
    if group is not None:
        steps.append(Step("group", f"every step runs for all members of group {group} before the next one"))
    return steps


def _conversion(p: _Preview, vm: str, direct: bool) -> str:
    """Whether guest conversion would run, and why not."""
    from scmt_cli.targets.base import TargetDisk
    from scmt_cli.targets.convert import looks_like_guest

    ctx = p.ctx
    fmt = ctx.plan.target.disk_format
    prefix = f"make the {fmt} disks, then " if fmt != "raw" else ""
    if direct:
        return prefix + "guest conversion skipped: direct failover (--direct or direct: true)"
    spec = platform_spec(ctx.plan)
    if shutil.which(spec.v2v_command) is None:
        return prefix + f"guest conversion skipped: {spec.v2v_command} is not installed (a warning)"
    root = getattr(ctx.platform, "root", None)
    if root is not None:
        from scmt_cli.targets.storage import load_prepared

        try:
            disks = [TargetDisk(d.copy_path) for d in load_prepared(Path(root), ctx.effective(vm).target_name)]
        except ScmtError:
            disks = []
        if disks:  # the synced copies as they are now (the final delta rarely changes a disk's first 128 KiB)
            guest, why = looks_like_guest(disks)
            if not guest:
                return prefix + f"guest conversion skipped: {why}"
    return (prefix + f"convert the guest with {spec.v2v_command} (at most {format_duration(spec.v2v_timeout_s)}, "
            f"stopped after {format_duration(spec.v2v_stall_timeout_s)} without output)")


def _guarded(p: _Preview, out: VmPreview, make: Any) -> VmPreview:
    refused = p.locked(out.vm)
    if refused is not None:
        return out.refuse(refused)
    try:
        out.steps.extend(make())
    except ScmtError as exc:
        out.refuse(exc)
    return out


def preview_sync(req: Any, state: str | None, reporter: Reporter) -> PreviewResult:
    """``scmt sync --dry-run``: per VM the pass it would run (seed or incremental) and its estimate."""
    p = _Preview(req.plan, state, reporter, "sync")
    try:
        p.ctx.bandwidth_override = req.bandwidth
        for vm in p.ctx.select(req.vms, req.group):
            out = p.vm(vm)
            p.result.vms.append(_guarded(p, out, lambda o=out: _sync_steps(
                p, o, remove_foreign=req.remove_foreign_snapshots)))
        if req.every is not None:
            p.result.notes.append(f"then a round every {format_duration(req.every)}")
        if req.until is not None:
            from scmt_cli.services.migration.when import describe_when

            p.result.notes.append(f"until {describe_when(req.until)}")
        return p.result
    finally:
        p.close()


def preview_failover(req: Any, state: str | None, reporter: Reporter) -> PreviewResult:
    """``scmt failover --dry-run``: per VM the source action, the final sync's estimate, conversion, target state."""
    from scmt_cli.errors import InvalidStateError
    from scmt_cli.services.migration.failover import check_window
    from scmt_cli.services.migration.units import units_for
    from scmt_cli.services.migration.when import describe_when

    p = _Preview(req.plan, state, reporter, "failover")
    try:
        names = p.ctx.select(req.vms, req.group)
        when = req.at or dt.datetime.now(dt.UTC)
        if req.at is not None:
            p.result.notes.append(f"would wait until {describe_when(req.at)}")
        window: ScmtError | None = None
        try:
            check_window(p.ctx, names, when)
        except ScmtError as exc:
            window = exc
        for group, members in units_for(p.ctx, names, req.group):
            outs = [p.vm(vm) for vm in members]
            for out in outs:
                if window is not None:
                    out.refuse(window)
                else:
                    _guarded(p, out, lambda o=out, g=group: _failover_steps(p, o, req, group=g))
            if group is not None:
                not_ready = [o.vm for o in outs if not _ready_for_group(p, o.vm)]
                if not_ready:
                    unready = InvalidStateError(f"group {group}: {', '.join(not_ready)} not in sync; a group fails "
                                                "over only when every member is 'syncing'", hint="run scmt sync first")
                    for o in outs:
                        o.refuse(unready)
            for out in outs:
                _downtime(p, out)
            p.result.vms.extend(outs)
        return p.result
    finally:
        p.close()


def _ready_for_group(p: _Preview, vm: str) -> bool:
    """As failover decides: a member cut over already is left alone; the others must be in sync."""
    status, _ = p.ctx.status(vm)
    try:
        if plan_command("failover", status.state, vm=vm, failed_from=status.failed_from).noop:
            return True
    except ScmtError:
        return False
    return status.state in ("syncing", "cutting-over") or status.failed_from in ("syncing", "cutting-over")


def _downtime(p: _Preview, out: VmPreview) -> None:
    """Add the estimated downtime (final sync + quiesce, define and start) to a failover preview."""
    final = next((s for s in out.steps if s.step == "final-sync-done"), None)
    if out.proceeds and final is not None and final.seconds is not None:
        from scmt_cli.services.migration.status import SWITCH_OVERHEAD_SECONDS

        total = final.seconds + SWITCH_OVERHEAD_SECONDS
        out.steps.append(Step("downtime", f"estimated downtime about {format_duration(total)} (the final delta, "
                                          f"plus {SWITCH_OVERHEAD_SECONDS:.0f} s to {_OVERHEAD}; conversion "
                                          "not counted)"))


def preview_migrate(req: Any, state: str | None, reporter: Reporter) -> PreviewResult:
    """``scmt migrate --dry-run``: per managed VM the syncs it would run, then the cutover steps."""
    from scmt_cli.errors import UsageError
    from scmt_cli.services.migration.failover import FailoverRequest
    from scmt_cli.services.migration.migrate import not_managed

    p = _Preview(req.plan, state, reporter, "migrate")
    try:
        p.ctx.bandwidth_override = req.bandwidth
        names = p.ctx.select(req.vms, req.group)
        refused = {vm: why for vm in names if (why := not_managed(p.ctx, vm))}
        if refused and (req.vms or req.group is not None):
            raise UsageError(next(iter(refused.values())))
        if refused and len(refused) == len(names):
            raise UsageError(f"plan {p.ctx.plan.name} has no VM with method managed: nothing for 'scmt migrate' "
                             "to do", hint="'scmt migrate' is the managed method; use 'scmt sync' and "
                                           "'scmt failover' for the other methods")
        for why in refused.values():
            p.result.warnings.append(f"skipped {why}")
        fo = FailoverRequest(req.plan)
        for vm in (v for v in names if v not in refused):
            out = p.vm(vm)

            def steps(o: VmPreview = out) -> list[Step]:
                status, _ = p.ctx.status(o.vm)
                if plan_command("migrate", status.state, vm=o.vm, failed_from=status.failed_from).noop:
                    return [Step("none", "already cut over: nothing to do")]
                effective = status.failed_from if status.state in SUSPENDED else status.state
                found: list[Step] = []
                if effective != "cutting-over":
                    found = _sync_steps(p, o, remove_foreign=False)
                    found.append(Step("passes", f"incremental passes until one reads at most 8 MiB or 2% of the "
                                                f"disks, {req.max_passes} passes in all at most"))
                return found + _failover_steps(p, o, fo, group=None, after_syncs=bool(found))

            p.result.vms.append(_guarded(p, out, steps))
            _downtime(p, out)
        return p.result
    finally:
        p.close()
