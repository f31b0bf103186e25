"""``scmt finalize``: after the business check, make a cutover final (``cut-over -> committed``).

Per VM, under its lock: remove the snapshots this state store left on the source
(another store's are reported, see :mod:`.snapshots`),
optionally turn CBT off (``VCenter.disable_cbt``; an implementation without
it says so and CBT stays on, which is harmless), and make sure the source stays
powered off (a guest shutdown when the cutover only disconnected its
network), with its NICs disconnected.  ``committed`` is terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scmt_cli.domain.vmstate import plan_command
from scmt_cli.errors import InvalidStateError, ScmtError
from scmt_cli.services.migration.context import MigrationContext, VmOutcome
from scmt_cli.services.migration.snapshots import cleanup_tool_snapshots, stun_finished, stun_started
from scmt_cli.services.migration.units import MigrationResult

SHUTDOWN_TIMEOUT = 300.0


@dataclass(frozen=True)
class FinalizeRequest:
    plan: Path
    vms: tuple[str, ...] = ()
    disable_cbt: bool = False
    group: str | None = None


def _finalize_vm(ctx: MigrationContext, req: FinalizeRequest, vm: str) -> VmOutcome:
    out = VmOutcome(vm, action="finalize")
    with ctx.lock(vm):
        status, data = ctx.status(vm)
        decision = plan_command("finalize", status.state, vm=vm, failed_from=status.failed_from)
        if decision.noop:
            out.state, out.action = status.state, "already committed"
            return out
        vc = ctx.vcenter()
        try:
            cleanup = cleanup_tool_snapshots(vc, ctx.store, ctx.plan.name, vm, ctx.snapshot_owner, ctx.reporter)
            out.data["snapshots_removed"] = cleanup.removed
            if cleanup.foreign:
                out.data["foreign_snapshots"] = cleanup.foreign
            out.warnings.extend(cleanup.warnings)
            if req.disable_cbt:
                disable = getattr(vc, "disable_cbt", None)
                if disable is None:
                    out.warnings.append(f"{vm}: this vCenter adapter cannot turn changed block tracking off; "
                                        "it stays on (harmless; turn it off in vSphere if you wish)")
                else:
                    stun_started(ctx.store, ctx.plan.name, vm, ctx.snapshot_owner)
                    disable(vm)
                    stun_finished(ctx.store, ctx.plan.name, vm)
                    out.data["cbt_disabled"] = True
            if vc.power_state(vm) == "poweredOn":
                out.data["source_shutdown"] = vc.shutdown_guest(vm, SHUTDOWN_TIMEOUT)
            vc.set_nics_connected(vm, False)
            out.data["source_power"] = vc.power_state(vm)
        finally:
            vc.close()
        status = status.move("committed")
        ctx.save_status(status, {**data, "committed": True})
        out.state = status.state
        ctx.reporter.event("finalized", vm=vm)
    return out


def run_finalize(req: FinalizeRequest, ctx: MigrationContext) -> MigrationResult:
    names = ctx.select(req.vms, req.group)
    todo = []
    for vm in names:
        status, _ = ctx.status(vm)
        try:
            plan_command("finalize", status.state, vm=vm, failed_from=status.failed_from)
            todo.append(vm)
        except InvalidStateError as exc:
            if req.vms or req.group is not None:  # named VMs (a group's members) are finalized all, or none
                raise
            ctx.reporter.log("info", f"{vm}: skipped ({exc.message})", vm=vm)
    if not todo:
        raise InvalidStateError(f"nothing to finalize in plan {ctx.plan.name}: no VM is cut over",
                                hint="finalize runs after a failover and the business check")
    result = MigrationResult("finalize", ctx.plan.name)
    for vm in todo:
        try:
            result.outcomes.append(_finalize_vm(ctx, req, vm))
        except ScmtError as exc:
            result.outcomes.append(VmOutcome(vm, ok=False, action="finalize", state=ctx.status(vm)[0].state,
                                             error=exc.message, error_code=exc.exit_code))
    return result


def finalize_service(req: FinalizeRequest, store: Any, reporter: Any, **kw: Any) -> MigrationResult:
    from scmt_cli.services.migration.context import open_context

    ctx = open_context(req.plan, store, reporter, **kw)
    try:
        return run_finalize(req, ctx)
    finally:
        ctx.close()
