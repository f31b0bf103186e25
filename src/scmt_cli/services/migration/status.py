"""``scmt status``: where every VM of a plan stands, from the state store alone.

Per VM: state (and the state a failed VM failed in), the long step running
now with its elapsed time (``converting`` while the guest converter runs), the cutover steps done,
the last successful sync (time, kind, bytes, throughput), the lag since it,
the estimated cutover downtime and the commands that may run next.

Estimated downtime = the last incremental's bytes at the measured throughput
(what the final sync will move, roughly) + :data:`SWITCH_OVERHEAD_SECONDS`
(quiesce, define, start).  When the plan's bandwidth is known the seed-table
estimate (:func:`scmt_cli.domain.estimate.estimate_vm`) is shown next to it,
and a seed's measured pace is compared with the plan estimate.  After a
failover the measured downtime is shown instead; when it exceeds the estimate
(the plan estimate, else this status estimate) ``downtime_over_estimate`` is
true and the VM has a warning.  Nothing here contacts vCenter, so status is
instant and safe to ``--watch``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.domain.estimate import EstimateInput, compare_measured, estimate_vm
from scmt_cli.domain.plan import load_plan
from scmt_cli.domain.vmstate import commands_allowed
from scmt_cli.events import Reporter
from scmt_cli.services.migration.context import MigrationContext
from scmt_cli.state import StateStore, iso, vm_resource

SWITCH_OVERHEAD_SECONDS = 30.0
#: The link rate assumed for the plan estimate when the plan sets no bandwidth (1 Gbit/s).
DEFAULT_LINK_BPS = 125_000_000.0


@dataclass(frozen=True)
class StatusRequest:
    plan: Path
    vms: tuple[str, ...] = ()
    group: str | None = None


@dataclass
class VmStatusView:
    vm: str
    state: str
    failed_from: str | None = None
    error: str | None = None
    steps_done: list[str] = field(default_factory=list)
    last_sync_at: float | None = None
    last_sync_kind: str | None = None
    last_sync_bytes: int | None = None
    throughput_bytes_per_s: float | None = None
    lag_seconds: float | None = None
    est_downtime_seconds: float | None = None
    plan_downtime_minutes: int | None = None
    measured_downtime_seconds: float | None = None
    downtime_over_estimate: bool | None = None  # None: nothing measured, or no estimate to compare with
    rollback_seconds: float | None = None
    boot_seconds: float | None = None  # seconds to the guest's ready line at the last `scmt boot`
    boot_data_verified: bool | None = None
    seed_vs_estimate: dict[str, Any] | None = None
    locked_by: str | None = None
    step: str | None = None  # the long step running now ("converting"), from the state store
    step_seconds: float | None = None
    step_log: str | None = None
    conversion: dict[str, Any] | None = None
    host: str | None = None  # the migration host driving the VM now (its lease is live)
    next_commands: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["last_sync_at"] = iso(self.last_sync_at)
        return d


@dataclass
class StatusResult:
    plan: str
    vms: list[VmStatusView]
    generated_at: float

    @property
    def warnings(self) -> list[str]:
        return [w for v in self.vms for w in v.warnings]

    @property
    def exit_code(self) -> int:
        return 1 if self.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "generated_at": iso(self.generated_at), "vms": [v.to_dict() for v in self.vms],
                "warnings": self.warnings}


def _view(ctx: MigrationContext, vm: str, now: float) -> VmStatusView:
    store, plan = ctx.store, ctx.plan.name
    eff = ctx.effective(vm)
    status, data = ctx.status(vm)
    rec = store.get_vm(plan, vm)
    v = VmStatusView(vm, status.state, status.failed_from, status.error, list(status.steps_done))
    gens = store.generations(plan, vm)
    ok = [g for g in gens if g.ok]
    if ok:
        last = ok[-1]
        v.last_sync_at, v.last_sync_kind, v.last_sync_bytes = last.finished_at, last.kind, last.bytes_written
        secs = float(last.stats.get("seconds") or 0.0)
        rates = [g.bytes_read / float(g.stats.get("seconds") or 0) for g in ok
                 if g.bytes_read > 1024 * 1024 and float(g.stats.get("seconds") or 0) > 0]
        v.throughput_bytes_per_s = max(rates) if rates else (last.bytes_read / secs if secs > 0 else None)
        if status.state in ("seeding", "syncing") and last.finished_at is not None:
            v.lag_seconds = round(now - last.finished_at, 1)
    incs = [g for g in ok if g.kind in ("incremental", "final")]
    delta = incs[-1].bytes_read if incs else None
    if delta is not None and v.throughput_bytes_per_s:
        v.est_downtime_seconds = round(delta / v.throughput_bytes_per_s + SWITCH_OVERHEAD_SECONDS, 1)
    disks = store.list_disks(plan, vm)
    size = sum(d.capacity_bytes or 0 for d in disks)
    if size:
        inp = EstimateInput(vm, data_bytes=size, source_bps=eff.bandwidth or DEFAULT_LINK_BPS,
                            pre_switch_bytes=delta or 0)
        est = estimate_vm(inp)
        v.plan_downtime_minutes = est.downtime_minutes
        seeds = [g for g in ok if g.kind == "seed" and g.bytes_read > 0]
        if seeds and float(seeds[-1].stats.get("seconds") or 0) > 0:
            v.seed_vs_estimate = compare_measured(est, seeds[-1].bytes_read,
                                                  float(seeds[-1].stats["seconds"])).to_dict()
    v.measured_downtime_seconds = data.get("downtime_seconds")
    estimate = (v.plan_downtime_minutes * 60.0 if v.plan_downtime_minutes is not None
                else v.est_downtime_seconds)
    if v.measured_downtime_seconds is not None and estimate is not None:
        v.downtime_over_estimate = float(v.measured_downtime_seconds) > estimate
    v.rollback_seconds = data.get("rollback_seconds")
    boot = data.get("boot")
    if isinstance(boot, dict):
        v.boot_seconds, v.boot_data_verified = boot.get("seconds"), boot.get("data_verified")
    holder = store.lock_holder(vm_resource(plan, vm))
    if holder is not None and holder.lease_expires_at > now:
        v.locked_by = f"pid {holder.pid} on {holder.hostname}"
        v.host = holder.hostname
    v.next_commands = [c for c in commands_allowed(status.state, failed_from=status.failed_from)
                       if c != "migrate" or eff.method == "managed"]  # migrate is the managed method only
    converting = data.get("converting")
    if isinstance(converting, dict) and converting.get("started_at"):
        elapsed = round(now - float(converting["started_at"]), 1)
        if v.locked_by is not None:
            v.step, v.step_seconds, v.step_log = "converting", elapsed, converting.get("log")
        else:
            v.warnings.append(f"{vm}: guest conversion stopped without finishing (started {elapsed:.0f} s ago); "
                              "the synced disks are unchanged: run failover again, or rollback")
    if isinstance(data.get("conversion"), dict):
        v.conversion = data["conversion"]
    # -- warnings ---------------------------------------------------------------------
    if status.state == "failed":
        v.warnings.append(f"{vm}: failed while {status.failed_from}: {status.error or 'unknown error'}; "
                          f"run the same command again to resume")
    elif status.state == "blocked":
        v.warnings.append(f"{status.error or vm + ': blocked by assessment'}; fix it ('scmt assess PLAN --details' "
                          "says how), then sync again")
    if gens and gens[-1].status == "running" and v.locked_by is None:
        v.warnings.append(f"{vm}: a {gens[-1].kind} pass was interrupted; the next sync resumes it")
    if v.lag_seconds is not None and status.state == "syncing" and v.lag_seconds > 2 * eff.sync_interval:
        v.warnings.append(f"{vm}: last sync {v.lag_seconds:.0f} s ago, more than twice the sync interval")
    if v.downtime_over_estimate and estimate is not None:
        from scmt_cli.domain.units import format_duration

        v.warnings.append(f"{vm}: measured downtime {format_duration(float(v.measured_downtime_seconds or 0))} "
                          f"exceeded the estimate of {format_duration(estimate)}")
    tolerance = eff.downtime_tolerance
    if tolerance is not None and v.est_downtime_seconds is not None and v.est_downtime_seconds > tolerance:
        v.warnings.append(f"{vm}: estimated downtime {v.est_downtime_seconds:.0f} s exceeds the plan's "
                          f"tolerance of {tolerance:.0f} s; sync more often before the cutover")
    if rec is not None and rec.state == "cutting-over" and v.locked_by is None:
        v.warnings.append(f"{vm}: a failover stopped after {', '.join(status.steps_done) or 'no step'}; "
                          "run failover again to finish it, or rollback")
    return v


def status_service(req: StatusRequest, store: StateStore, reporter: Reporter) -> StatusResult:
    """Read-only: the plan file and the state store (nothing is recorded)."""
    plan = load_plan(req.plan).plan
    ctx = MigrationContext(plan, store, reporter)
    names = ctx.select(req.vms, req.group)
    now = time.time()
    return StatusResult(plan.name, [_view(ctx, vm, now) for vm in names], now)


# -- every plan the store knows (``scmt status`` without a plan) ----------------------------------------


@dataclass
class VmOverview:
    plan: str
    vm: str
    state: str
    method: str | None
    failed_from: str | None
    error: str | None
    last_sync_at: float | None
    last_sync_bytes: int | None
    updated_at: float
    locked_by: str | None
    next_commands: list[str]

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["last_sync_at"], d["updated_at"] = iso(self.last_sync_at), iso(self.updated_at)
        return d


@dataclass
class PlanOverview:
    plan: str
    file: str
    recorded_at: float
    file_state: str  # "same" (as last recorded), "changed" (edited since), "missing"
    vms: list[VmOverview]

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "file": self.file, "recorded_at": iso(self.recorded_at),
                "file_state": self.file_state, "vms": [v.to_dict() for v in self.vms]}


@dataclass
class OverviewResult:
    """Every plan and VM a state store knows, from the store alone (the ``status overview`` document)."""

    store: str
    plans: list[PlanOverview]
    generated_at: float
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "generated_at": iso(self.generated_at),
                "plans": [p.to_dict() for p in self.plans], "warnings": list(self.warnings)}


def _file_state(path: str, digest: str) -> str:
    import hashlib

    try:
        data = Path(path).read_bytes()
    except OSError:
        return "missing"
    return "same" if hashlib.sha256(data).hexdigest() == digest else "changed"


def overview_service(store: StateStore | None, where: str, vms: tuple[str, ...] = ()) -> OverviewResult:
    """Every plan recorded in ``store`` with its file, and each VM's state, last sync and lock holder.

    ``store`` None: there is no store at ``where`` yet (nothing ran with it), an empty overview.
    ``vms`` keeps only those VM names (in any plan).  Read-only, never contacts vCenter.
    """
    now = time.time()
    result = OverviewResult(where, [], now)
    if store is None:
        return result
    for rec in store.list_plans():
        plan = PlanOverview(rec.name, rec.path, rec.recorded_at, _file_state(rec.path, rec.digest), [])
        if plan.file_state == "missing":
            result.warnings.append(f"plan {rec.name}: its file {rec.path} is gone (moved or deleted)")
        for vm in store.list_vms(rec.name):
            if vms and vm.name not in vms:
                continue
            extra = store.get_checkpoint(f"status/{rec.name}/{vm.name}") or {}
            failed_from = extra.get("failed_from")
            holder = store.lock_holder(vm_resource(rec.name, vm.name))
            locked = (f"pid {holder.pid} on {holder.hostname}" if holder is not None and holder.lease_expires_at > now
                      else None)
            nxt: list[str] = [c for c in commands_allowed(vm.state, failed_from=failed_from)  # type: ignore[arg-type]
                   if c != "migrate" or vm.method == "managed"] if _known_state(vm.state) else []
            plan.vms.append(VmOverview(rec.name, vm.name, vm.state, vm.method, failed_from, vm.error,
                                       vm.last_sync_at, vm.last_sync_bytes, vm.updated_at, locked, nxt))
            if vm.state in ("failed", "blocked"):
                result.warnings.append(f"{rec.name}/{vm.name}: {vm.state}: {vm.error or 'no error recorded'}")
        if plan.vms or not vms:
            result.plans.append(plan)
    return result


def _known_state(state: str) -> bool:
    from scmt_cli.domain.vmstate import is_state

    return is_state(state)


def open_existing(state: str | None) -> StateStore | None:
    """The state store ``--state``/``SCMT_STATE`` names, or None when it is a file that does not exist yet
    (a read-only command must not create one); a PostgreSQL store is always opened."""
    import os

    from scmt_cli.state.paths import is_postgres_url, resolve_state_path

    if is_postgres_url(state if state not in (None, "") else os.environ.get("SCMT_STATE", "")):
        return StateStore.open(state)
    if not resolve_state_path(state).exists():
        return None
    return StateStore.open(state)


def store_name(state: str | None) -> str:
    """Where the store is, for people (a PostgreSQL URL without its password)."""
    import os

    from scmt_cli.errors import redact_url
    from scmt_cli.state.paths import is_postgres_url, resolve_state_path

    raw = state if state not in (None, "") else os.environ.get("SCMT_STATE", "")
    return redact_url(raw) if raw and is_postgres_url(raw) else str(resolve_state_path(state))
