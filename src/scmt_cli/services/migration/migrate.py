"""``scmt migrate``: the managed method in one unattended command.

For each ``method: managed`` VM, at most :data:`MAX_CONCURRENT` at a time (the
seed: "a maximum of two virtual machines are migrated concurrently"): seed,
incremental syncs until the delta is small (:func:`delta_is_small`) or
:data:`MAX_PASSES` passes ran, then a failover with the managed method's fixed
choices (the plan's effective ones: shut the source down, start the target).
Every step is the same resumable step ``sync`` and ``failover`` use, so a
killed ``migrate`` continues where it stopped; VMs already cut over are left
alone.

``--group`` selects the group's members, as ``--vm`` would: each is migrated
on its own (a managed VM cuts over by itself, which is why ``plan validate``
warns about a group of managed VMs; groups that fail over together use the
other methods, ``failover --group``).

VMs of the other methods cut over when the operator says, with the plan's
source action: ``migrate`` never does that for them.  Named with ``--vm`` they
are refused (exit 2, with the commands to use); without ``--vm`` they are
skipped with a warning, and a plan with no managed VM is refused.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scmt_cli.domain.vmstate import SUSPENDED, plan_command
from scmt_cli.errors import InvalidStateError, UsageError
from scmt_cli.services.migration.context import MigrationContext, VmOutcome
from scmt_cli.services.migration.failover import FailoverRequest, _failover_unit
from scmt_cli.services.migration.sync import guarded_pass
from scmt_cli.services.migration.units import MigrationResult

MAX_CONCURRENT = 2
MAX_PASSES = 5
SMALL_DELTA_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class MigrateRequest:
    plan: Path
    vms: tuple[str, ...] = ()
    max_passes: int = MAX_PASSES
    v2v_timeout: float | None = None
    v2v_stall_timeout: float | None = None
    group: str | None = None  # select this group's members (each still migrates on its own)
    bandwidth: float | None = None  # bytes/s over the plan's limit for this run (math.inf: unlimited)


def delta_is_small(bytes_read: int, disk_bytes: int) -> bool:
    """Stop syncing when the last incremental read at most 8 MiB or 2 % of the VM's disks."""
    return bytes_read <= max(SMALL_DELTA_BYTES, disk_bytes // 50)


def _sync_phase(ctx: MigrationContext, req: MigrateRequest, vm: str) -> tuple[VmOutcome | None, list[dict[str, Any]]]:
    """The syncs before the cutover: ``(outcome, passes)``; the outcome is set when the VM stops here
    (cut over already, a state migrate cannot take, a failed pass), ``None`` when it is ready to fail over."""
    status, _ = ctx.status(vm)
    try:
        decision = plan_command("migrate", status.state, vm=vm, failed_from=status.failed_from)
    except InvalidStateError as exc:
        return VmOutcome(vm, ok=False, action="migrate", state=status.state, error=exc.message,
                         error_code=exc.exit_code), []
    if decision.noop:
        return VmOutcome(vm, state=status.state, action="already cut over"), []
    passes: list[dict[str, Any]] = []
    effective = status.failed_from if status.state in SUSPENDED else status.state
    if effective != "cutting-over":
        for _ in range(max(1, req.max_passes)):
            ctx.cancel.check()
            out = guarded_pass(ctx, vm)
            if not out.ok:
                out.action = "migrate (sync)"
                out.data["passes"] = passes
                return out, passes
            passes.append({"kind": out.data.get("kind"), "bytes_read": out.data.get("bytes_read", 0),
                           "seconds": out.data.get("seconds")})
            size = sum(int(d.get("size", 0)) for d in out.data.get("disks", []))
            if out.data.get("kind") == "incremental" and delta_is_small(int(out.data.get("bytes_read", 0)), size):
                break
    return None, passes


def _failover_request(ctx: MigrationContext, req: MigrateRequest) -> FailoverRequest:
    """The managed method's fixed choices: each VM's effective source action and target state (the plan's)."""
    return FailoverRequest(ctx.plan.file, v2v_timeout=req.v2v_timeout, v2v_stall_timeout=req.v2v_stall_timeout)


def _migrate_vm(ctx: MigrationContext, req: MigrateRequest, vm: str) -> VmOutcome:
    stopped, passes = _sync_phase(ctx, req, vm)
    if stopped is not None:
        return stopped
    final = _failover_unit(ctx, _failover_request(ctx, req), None, [vm])[0]
    final.action = "migrated" if final.ok else "migrate (failover)"
    final.data["passes"] = passes
    return final


def not_managed(ctx: MigrationContext, vm: str) -> str:
    """Why ``migrate`` leaves ``vm`` alone ('' for a managed VM)."""
    eff = ctx.effective(vm)
    if eff.method == "managed":
        return ""
    plan = shlex.quote(str(ctx.plan.file))
    return (f"{vm}: method {eff.method} cuts over when you say, with the plan's source action "
            f"({eff.source_action}); 'scmt migrate' runs the managed method only: use 'scmt sync {plan} --vm {vm}' "
            f"then 'scmt failover {plan} --vm {vm}'")


def run_migrate(req: MigrateRequest, ctx: MigrationContext) -> MigrationResult:
    names = ctx.select(req.vms, req.group)
    ctx.bandwidth_override = req.bandwidth
    result = MigrationResult("migrate", ctx.plan.name)
    refused = {vm: why for vm in names if (why := not_managed(ctx, vm))}
    if refused and (req.vms or req.group is not None):
        first = next(iter(refused.values()))
        raise UsageError(first if len(refused) == 1 else f"{first} (and {len(refused) - 1} more VM(s) not managed)")
    if refused and len(refused) == len(names):
        raise UsageError(f"plan {ctx.plan.name} has no VM with method managed: nothing for 'scmt migrate' to do",
                         hint="'scmt migrate' is the managed method; use 'scmt sync' and 'scmt failover' for the "
                              "other methods")
    for vm, why in refused.items():
        result.warnings.append(f"skipped {why}")
        ctx.reporter.log("warning", f"skipped {why}", vm=vm)
    names = [vm for vm in names if vm not in refused]
    workers = min(MAX_CONCURRENT, max(1, ctx.plan.defaults.concurrency))
    result.outcomes.extend(ctx.run_pool(names, lambda v: _migrate_vm(ctx, req, v), workers=workers))
    return result


def migrate_service(req: MigrateRequest, store: Any, reporter: Any, **kw: Any) -> MigrationResult:
    from scmt_cli.services.migration.context import open_context

    ctx = open_context(req.plan, store, reporter, **kw)
    try:
        return run_migrate(req, ctx)
    finally:
        ctx.close()
