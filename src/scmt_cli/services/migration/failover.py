"""``scmt failover``: quiesce the source, copy the final delta, create and start the target.

The cutover of one VM runs the persisted sub-steps of
:data:`~scmt_cli.domain.vmstate.CUTOVER_STEPS` in order, recording each one
as done in the same transaction as its data, so a killed failover resumes
at the first step not done:

``source-quiesced``
    ``failover`` pre hooks, then the source action: ``disconnect-network``
    (default), ``shutdown`` or ``none`` (the operator's hooks stop the
    services).  The source's power and NIC state before it is recorded first,
    for rollback; the quiesce time is recorded (wall clock).
``final-sync-done``
    a last sync pass (generation kind ``final``) from a snapshot taken now.
``converted``
    the platform's final disks (qcow2 when asked), then guest conversion
    unless ``direct`` (a missing converter is a warning; disks without an
    operating system are skipped with the reason).  It is a supervised step
    (:mod:`.conversion`): its start, log path and progress are reported and
    recorded for ``status``; a failure (exit 52) leaves the synced disks
    unchanged and rolls the source back unless ``keep_source_down``.
``target-defined``
    the target VM from the plan and the source inventory.
``target-started``
    powered on unless the target state is ``off``; the downtime (quiesce ->
    started) is stored and reported.

A group (``--group``, or all members selected) runs each step for every
member before the next step, and only when every member is in sync.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scmt_cli.domain.inventory import VM
from scmt_cli.domain.vmstate import CUTOVER_STEPS, VmStatus, next_cutover_step, plan_command
from scmt_cli.errors import ConversionError, InvalidStateError, NotAvailableError, ScmtError, UsageError
from scmt_cli.services.hooks import HookContext, commands_for, run_hooks
from scmt_cli.services.migration.context import MigrationContext, VmOutcome
from scmt_cli.services.migration.conversion import after_failure, conversion_job
from scmt_cli.services.migration.source import require_wired_method, source_vm
from scmt_cli.services.migration.sync import sync_pass
from scmt_cli.services.migration.units import MigrationResult, units_for
from scmt_cli.services.migration.when import wait_until
from scmt_cli.state.locks import VmLock
from scmt_cli.targets.specs import vm_spec_from_plan
from scmt_cli.vsphere.api import VCenter

SHUTDOWN_TIMEOUT = 300.0
SOURCE_ACTIONS = ("disconnect-network", "shutdown", "none")


@dataclass(frozen=True)
class FailoverRequest:
    """``scmt failover``; ``None`` settings come from the plan (VM > group > defaults)."""

    plan: Path
    vms: tuple[str, ...] = ()
    group: str | None = None
    at: dt.datetime | None = None
    source_action: str | None = None
    target_state: str | None = None
    direct: bool = False
    v2v_timeout: float | None = None  # seconds; None: the plan's target.v2v_timeout
    v2v_stall_timeout: float | None = None  # seconds; None: the plan's target.v2v_stall_timeout
    keep_source_down: bool = False  # a failed conversion leaves the source quiesced (no automatic rollback)


def _group_hook_ctx(ctx: MigrationContext, vm: str, group: str | None, members: list[str], phase: Any,
                    step: str) -> HookContext:
    eff = ctx.effective(vm)
    return HookContext(plan=ctx.plan.name, phase=phase, vm=vm, step=step, method=eff.method,
                       group=group or eff.group, target_name=eff.target_name, vms=tuple(members),
                       cwd=str(Path(ctx.plan.file).parent))


class _Cutover:
    """One VM's cutover inside a unit."""

    def __init__(self, ctx: MigrationContext, req: FailoverRequest, vm: str, lock: VmLock) -> None:
        self.ctx, self.req, self.vm, self.lock = ctx, req, vm, lock
        self.eff = ctx.effective(vm)
        require_wired_method(self.eff, "failover")
        if self.eff.uses_agent and not ctx.plan.source.url:
            raise NotAvailableError(
                f"{vm}: failover of an agent VM needs the plan's vCenter (source.url): it disables the source's "
                "network through vCenter and reads the VM's CPU, memory and NICs to define the target",
                hint="add source.url to the plan; without one, disconnect the source's network yourself "
                     "and create the target from the synced disks")
        self.status, self.data = ctx.status(vm)
        self.out = VmOutcome(vm, action="failover")
        self.vc: VCenter | None = None
        self._source: VM | None = None  # the VM's inventory record, read once per failover
        action = req.source_action or self.eff.source_action
        if action not in SOURCE_ACTIONS:
            raise UsageError(f"--source-action {action!r}: expected one of {', '.join(SOURCE_ACTIONS)}")
        state = req.target_state or self.eff.target_state
        if state not in ("on", "off"):
            raise UsageError(f"--target-state {state!r}: expected on or off")
        self.source_action, self.target_state = action, state
        self.direct = req.direct or self.eff.direct

    def vcenter(self) -> VCenter:
        if self.vc is None:
            self.vc = self.ctx.vcenter()
        return self.vc

    def close(self) -> None:
        if self.vc is not None:
            self.vc.close()
            self.vc = None

    def record(self, **values: Any) -> None:
        self.data = self.ctx.update_data(self.vm, **values)

    def done(self, step: str) -> None:
        self.status = self.status.step_done(step)
        self.ctx.save_status(self.status)
        self.ctx.reporter.event("cutover_step", vm=self.vm, step=step)

    # -- steps -------------------------------------------------------------------------
    def run_step(self, step: str, group: str | None, members: list[str]) -> None:
        ctx, vm = self.ctx, self.vm
        self.lock.check()
        ctx.cancel.check()
        if step == "source-quiesced":
            run_hooks(commands_for(self.eff.hooks, "failover"), "pre",
                      _group_hook_ctx(ctx, vm, group, members, "failover", "pre"), ctx.reporter)
            vc = self.vcenter()
            if "source_before" not in self.data:
                inv = source_vm(vc, vm)
                connected = any(bool(n.connected) for n in inv.nics)
                self.record(source_before={"power": vc.power_state(vm), "nics_connected": connected},
                            source_action=self.source_action)
            if self.source_action == "disconnect-network":
                vc.set_nics_connected(vm, False)
            elif self.source_action == "shutdown":
                how = vc.shutdown_guest(vm, SHUTDOWN_TIMEOUT)
                self.record(shutdown=how)
            if "quiesced_at" not in self.data:
                self.record(quiesced_at=time.time())
            ctx.reporter.event("source_quiesced", vm=vm, action=self.source_action)
            ctx.reporter.log("info", f"{vm}: source quiesced ({self.source_action})", vm=vm)
        elif step == "final-sync-done":
            res = sync_pass(ctx, vm, self.lock, final=True, vc=self.vcenter())
            final = {k: res.data.get(k) for k in ("bytes_read", "bytes_written", "seconds", "generation")}
            # An agent VM's pass also says what it froze and what the agent read and used.
            final.update({k: res.data[k] for k in ("freeze", "source_bytes_read", "agent") if k in res.data})
            self.record(final_sync=final)
            self.out.warnings.extend(res.warnings)
        elif step == "converted":
            disks = ctx.platform.finalize_disks(self.eff.target_name)
            spec = self._spec(disks)
            job = conversion_job(ctx, vm, timeout=self.req.v2v_timeout, stall_timeout=self.req.v2v_stall_timeout)
            self.record(converting={"started_at": time.time(), "log": str(job.log_path)})
            try:
                conv = ctx.platform.convert(spec, direct=self.direct, job=job)
            except ConversionError as exc:
                self.record(converting=None, conversion={"ran": True, "ok": False, "error": exc.message,
                                                         **exc.details})
                raise
            finally:
                if self.data.get("converting"):
                    self.record(converting=None)
            self.out.warnings.extend(w if w.startswith(f"{vm}:") else f"{vm}: {w}" for w in conv.warnings)
            outcome = conv.to_dict()
            outcome.pop("argv", None)
            self.record(conversion={"ok": True, **outcome})
        elif step == "target-defined":
            disks = ctx.platform.finalize_disks(self.eff.target_name)
            ctx.platform.define(self._spec(disks))
        elif step == "target-started":
            if self.target_state == "on":
                ctx.platform.start(self.eff.target_name)
                started = time.time()
                downtime = started - float(self.data.get("quiesced_at", started))
                self.record(started_at=started, downtime_seconds=round(downtime, 3))
            else:
                self.record(started_at=None, downtime_seconds=None, target_left_off=True)
        self.done(step)

    def precheck(self) -> None:
        """Build the target VM's spec without its disks: CPU, memory, NIC mapping and MACs must resolve.

        Raises PlanError before anything is done to the source (no downtime for a typo in a map), and
        InvalidStateError while a test failover copy of the VM exists (``failover --test --cleanup``).
        """
        from scmt_cli.services.migration.testfailover import test_copy_exists

        record = test_copy_exists(self.ctx, self.vm)
        if record is not None:
            raise InvalidStateError(f"{self.vm}: a test failover copy exists ({record.parent / 'test-failover'}); "
                                    "a real failover does not start while it does",
                                    hint=f"remove it first: scmt failover PLAN --vm {self.vm} --test --cleanup")
        self._spec(())

    def _spec(self, disks: Any) -> Any:
        # Read once: the later steps run while the source is quiesced, where every round trip is downtime.
        if self._source is None:
            self._source = source_vm(self.vcenter(), self.vm)
        inv = self._source
        return vm_spec_from_plan(self.eff, self.ctx.plan.target, inv, disks, plan_name=self.ctx.plan.name,
                                 compatible_devices=self.direct or None)


def _failover_unit(ctx: MigrationContext, req: FailoverRequest, group: str | None, members: list[str]) -> list[
        VmOutcome]:
    outcomes: dict[str, VmOutcome] = {}
    try:
        with ctx.locks(members) as locks:
            cut = {vm: _Cutover(ctx, req, vm, locks[vm]) for vm in members}
            active: list[_Cutover] = []
            for c in cut.values():
                decision = plan_command("failover", c.status.state, vm=c.vm, failed_from=c.status.failed_from)
                if decision.noop:
                    c.out.state, c.out.action = c.status.state, "already cut over"
                    c.out.data.update(_public(c.data))
                    outcomes[c.vm] = c.out
                else:
                    active.append(c)
            if group is not None:
                not_ready = [c.vm for c in active if c.status.state not in ("syncing", "cutting-over")
                             and c.status.failed_from not in ("syncing", "cutting-over")]
                if not_ready:
                    raise InvalidStateError(f"group {group}: {', '.join(not_ready)} not in sync; a group fails over "
                                            "only when every member is 'syncing'", hint="run scmt sync first")
            for c in active:
                if "source-quiesced" not in c.status.steps_done:
                    c.precheck()  # a plan problem must stop us before the source goes quiet, not after
            for c in active:
                if c.status.state != "cutting-over":
                    c.status = c.status.move("cutting-over")
                    ctx.save_status(c.status)
            try:
                for step in CUTOVER_STEPS:
                    for c in active:
                        if next_cutover_step(c.status.steps_done, vm=c.vm) == step:
                            c.run_step(step, group, members)
                for c in active:
                    c.status = c.status.move("cut-over")
                    ctx.save_status(c.status)
                    post = run_hooks(commands_for(c.eff.hooks, "failover"), "post",
                                     _group_hook_ctx(ctx, c.vm, group, members, "failover", "post"), ctx.reporter)
                    c.out.warnings.extend(post.warnings)
                    c.out.state = c.status.state
                    c.out.data.update(_public(c.data))
                    c.out.data["steps_done"] = list(CUTOVER_STEPS)
                    outcomes[c.vm] = c.out
                    ctx.reporter.event("failover_done", vm=c.vm, downtime_seconds=c.data.get("downtime_seconds"))
            except BaseException as exc:
                pending = [c for c in active if c.vm not in outcomes]
                for c in pending:
                    failed = ctx.fail(c.status, exc) if isinstance(exc, Exception) else c.status
                    c.out.ok = False
                    c.out.state = failed.state
                    c.out.error = _msg(exc)
                    c.out.error_code = exc.exit_code if isinstance(exc, ScmtError) else 70
                    c.out.data["steps_done"] = list(failed.steps_done)
                    outcomes[c.vm] = c.out
                if isinstance(exc, ConversionError):
                    notes = after_failure(ctx, pending, exc, keep_source_down=req.keep_source_down, group=group,
                                          members=members)
                    for c in pending:
                        status, data = ctx.status(c.vm)
                        c.out.state = status.state
                        c.out.data["steps_done"] = list(status.steps_done)
                        c.out.data.update(_public(data))
                        c.out.data["source_restored"] = status.state == "rolled-back"
                        c.out.error = f"{c.out.error}; {notes[c.vm]}"
                if not isinstance(exc, Exception):
                    raise
            finally:
                for c in cut.values():
                    c.close()
    except ScmtError as exc:
        for vm in members:
            if vm not in outcomes:
                outcomes[vm] = VmOutcome(vm, ok=False, action="failover", state=ctx.status(vm)[0].state,
                                         error=exc.message, error_code=exc.exit_code)
    for o in outcomes.values():
        if not o.ok:
            ctx.reporter.log("error", f"{o.vm}: failover failed: {o.error}", vm=o.vm)
    return [outcomes[vm] for vm in members]


def _public(data: dict[str, Any]) -> dict[str, Any]:
    keys = ("source_action", "source_before", "quiesced_at", "started_at", "downtime_seconds", "final_sync",
            "conversion", "target_left_off", "shutdown")
    return {k: data[k] for k in keys if k in data}


def _msg(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ScmtError) else f"{type(exc).__name__}: {exc}"


def check_window(ctx: MigrationContext, names: list[str], now: dt.datetime) -> None:
    """Refuse when ``now`` is outside a selected VM's cutover window."""
    for vm in names:
        win = ctx.effective(vm).cutover_window
        if win is not None and not win.contains(now):
            raise InvalidStateError(
                f"{vm}: {now.isoformat(timespec='seconds')} is outside its cutover window "
                f"{win.start.isoformat()} - {win.end.isoformat()}",
                hint=f"use --at {win.start.isoformat()} to wait for the window",
            )


def run_failover(req: FailoverRequest, ctx: MigrationContext) -> MigrationResult:
    names = ctx.select(req.vms, req.group)
    if req.at is not None:
        wait_until(req.at, check=ctx.cancel.check, log=lambda m: ctx.reporter.log("info", m))
    check_window(ctx, names, dt.datetime.now(dt.UTC))
    result = MigrationResult("failover", ctx.plan.name)
    units = units_for(ctx, names, req.group)
    workers = max(1, ctx.plan.defaults.concurrency)
    for outs in ctx.run_pool([str(i) for i in range(len(units))],
                             lambda i: _failover_unit(ctx, req, *units[int(i)]), workers=workers):
        result.outcomes.extend(outs)
    return result


def failover_service(req: FailoverRequest, store: Any, reporter: Any, **kw: Any) -> MigrationResult:
    from scmt_cli.services.migration.context import open_context

    ctx = open_context(req.plan, store, reporter, **kw)
    try:
        return run_failover(req, ctx)
    finally:
        ctx.close()


__all__ = ["FailoverRequest", "VmStatus", "failover_service", "run_failover"]
