"""``scmt rollback``: stop and isolate the target, give the source back its network or power.

For each VM in ``cutting-over``/``cut-over`` (or failed during a cutover),
under its lock, the persisted steps of
:data:`~scmt_cli.domain.vmstate.ROLLBACK_STEPS` run in order:

``target-stopped``
    the target is powered off (hard: seconds matter), then its NICs are
    isolated (a warning if the platform cannot); nothing to do when it was
    never defined;
``source-restored``
    the source gets back what failover recorded before quiescing it: power
    (``poweredOn``) and connected NICs.

The VM becomes ``rolled-back``; the next ``sync`` seeds again (the target ran).
The time taken is measured per VM and stored (the promise: under a minute).
A VM with nothing to roll back is refused with exit 42 when it was named (or
when no selected VM can be rolled back); a VM already rolled back is a no-op.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scmt_cli.domain.vmstate import ROLLBACK_STEPS, VmStatus, next_rollback_step, plan_command
from scmt_cli.errors import InvalidStateError, ScmtError
from scmt_cli.services.hooks import HookContext, commands_for, run_hooks
from scmt_cli.services.migration.context import MigrationContext, VmOutcome
from scmt_cli.services.migration.units import MigrationResult, units_for


@dataclass(frozen=True)
class RollbackRequest:
    plan: Path
    vms: tuple[str, ...] = ()
    group: str | None = None


def _hook_ctx(ctx: MigrationContext, vm: str, group: str | None, members: list[str], stage: str) -> HookContext:
    eff = ctx.effective(vm)
    return HookContext(plan=ctx.plan.name, phase="rollback", vm=vm, step=stage, method=eff.method,
                       group=group or eff.group, target_name=eff.target_name, vms=tuple(members),
                       cwd=str(Path(ctx.plan.file).parent))


def _rollback_vm(ctx: MigrationContext, vm: str, status: VmStatus, data: dict[str, Any], group: str | None,
                 members: list[str]) -> VmOutcome:
    t0 = time.monotonic()
    out = VmOutcome(vm, action="rollback")
    eff = ctx.effective(vm)
    run_hooks(commands_for(eff.hooks, "rollback"), "pre", _hook_ctx(ctx, vm, group, members, "pre"), ctx.reporter)
    vc = None
    try:
        while True:
            step = next_rollback_step(status.steps_done, vm=vm)
            if step is None:
                break
            ctx.cancel.check()
            if step == "target-stopped":
                target = ctx.platform.state(eff.target_name)
                if target.defined:
                    ctx.platform.stop(eff.target_name, graceful=False)
                    try:  # so that starting it by hand later does not put a second copy on the network
                        ctx.platform.set_network(eff.target_name, False)
                    except ScmtError as exc:
                        out.warnings.append(f"{vm}: the target is off but its NICs could not be isolated: "
                                            f"{exc.message}")
            else:
                vc = vc or ctx.vcenter()
                before = data.get("source_before") or {}
                if before.get("power") == "poweredOn" and vc.power_state(vm) != "poweredOn":
                    vc.power_on(vm)
                if before.get("nics_connected", True):
                    vc.set_nics_connected(vm, True)
            status = status.step_done(step)
            ctx.save_status(status)
            ctx.reporter.event("rollback_step", vm=vm, step=step)
    finally:
        if vc is not None:
            vc.close()
    status = status.move("rolled-back")
    seconds = round(time.monotonic() - t0, 3)
    ctx.save_status(status, {**data, "rollback_seconds": seconds, "rolled_back_at": time.time()})
    post = run_hooks(commands_for(eff.hooks, "rollback"), "post", _hook_ctx(ctx, vm, group, members, "post"),
                     ctx.reporter)
    out.warnings.extend(post.warnings)
    out.state = status.state
    out.data.update({"rollback_seconds": seconds, "steps_done": list(ROLLBACK_STEPS),
                     "source_restored_to": data.get("source_before")})
    ctx.reporter.event("rollback_done", vm=vm, seconds=seconds)
    ctx.reporter.log("info", f"{vm}: rolled back in {seconds:.2f} s", vm=vm)
    return out


def _rollback_unit(ctx: MigrationContext, group: str | None, members: list[str]) -> list[VmOutcome]:
    outcomes: list[VmOutcome] = []
    try:
        with ctx.locks(members):
            for vm in members:
                status, data = ctx.status(vm)
                try:
                    decision = plan_command("rollback", status.state, vm=vm, failed_from=status.failed_from)
                    if decision.noop:
                        outcomes.append(VmOutcome(vm, state=status.state, action="already rolled back",
                                                  data={"rollback_seconds": data.get("rollback_seconds")}))
                        continue
                    outcomes.append(_rollback_vm(ctx, vm, status, data, group, members))
                except ScmtError as exc:
                    if not isinstance(exc, InvalidStateError):
                        ctx.fail(ctx.status(vm)[0], exc)
                    outcomes.append(VmOutcome(vm, ok=False, action="rollback", state=ctx.status(vm)[0].state,
                                              error=exc.message, error_code=exc.exit_code))
    except ScmtError as exc:  # a lock held by another run
        done = {o.vm for o in outcomes}
        outcomes += [VmOutcome(vm, ok=False, action="rollback", error=exc.message, error_code=exc.exit_code)
                     for vm in members if vm not in done]
    return outcomes


def run_rollback(req: RollbackRequest, ctx: MigrationContext) -> MigrationResult:
    names = ctx.select(req.vms, req.group)
    explicit = bool(req.vms or req.group)
    candidates = []
    for vm in names:
        status, _ = ctx.status(vm)
        try:
            plan_command("rollback", status.state, vm=vm, failed_from=status.failed_from)
            candidates.append(vm)
        except InvalidStateError as exc:
            if explicit:
                raise
            ctx.reporter.log("info", f"{vm}: skipped ({exc.message})", vm=vm)
    if not candidates:
        raise InvalidStateError(f"nothing to roll back in plan {ctx.plan.name}: no VM is cutting over, cut over "
                                "or failed during a cutover")
    result = MigrationResult("rollback", ctx.plan.name)
    for group, members in units_for(ctx, candidates, req.group):
        result.outcomes.extend(_rollback_unit(ctx, group, members))
    return result


def rollback_service(req: RollbackRequest, store: Any, reporter: Any, **kw: Any) -> MigrationResult:
    from scmt_cli.services.migration.context import open_context

    ctx = open_context(req.plan, store, reporter, **kw)
    try:
        return run_rollback(req, ctx)
    finally:
        ctx.close()
