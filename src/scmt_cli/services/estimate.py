"""``scmt plan estimate``: transfer, switch, downtime and total minutes.

Two modes:

* what-if: one row from ``--data``, ``--compression``, ``--bandwidth``
  (``--target-bandwidth``), ``--redundancy``, ``--switch``;
* plan: one row per plan VM.  Effective data is what the guest uses (the
  partitions' used space, else the disks' used bytes, else the provisioned
  size, noted per VM); compression is 0.7 (the seed's less favourable ratio)
  unless the plan turns compression off (1.0) or ``--compression`` says
  otherwise; bandwidth is the VM's plan bandwidth unless ``--bandwidth`` is
  given; the switch time is the seed's lab time for the VM's method and OS
  unless ``--switch`` is given.  Groups are waves (ungrouped VMs form the
  last wave), ``defaults.concurrency`` VMs share the link, and VMs that finish
  their seed early keep syncing at the plan's sync interval.

Units and rounding: :mod:`scmt_cli.domain.estimate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.domain.assess import lab_switch
from scmt_cli.domain.compat import match_os
from scmt_cli.domain.estimate import (
    DEFAULT_CONCURRENCY,
    DEFAULT_REDUNDANCY,
    DEFAULT_SWITCH_SECONDS,
    EstimateInput,
    VmEstimate,
    WaveTimeline,
    estimate_vm,
    schedule,
)
from scmt_cli.domain.inventory import VM
from scmt_cli.errors import InputError, UsageError
from scmt_cli.events import NullReporter, Reporter

DEFAULT_PLAN_COMPRESSION = 0.7


@dataclass
class EstimateRequest:
    plan: Path | None = None
    inventory: Path | None = None
    name: str = "what-if"
    data_bytes: int | None = None
    compression: float | None = None
    bandwidth: float | None = None  # bytes/s
    target_bandwidth: float | None = None
    redundancy: float = DEFAULT_REDUNDANCY
    switch_seconds: float | None = None
    increments: Sequence[int] = ()
    pre_switch_bytes: int = 0
    concurrency: int | None = None
    sync_interval: float | None = None


@dataclass
class EstimateResult:
    mode: str  # "what-if" | "plan"
    vms: list[VmEstimate] = field(default_factory=list)
    waves: list[WaveTimeline] = field(default_factory=list)
    concurrency: int = DEFAULT_CONCURRENCY
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    plan: str | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.warnings else 0

    @property
    def total_minutes(self) -> int:
        if self.waves:
            return math.ceil(round(self.waves[-1].end_minutes, 6))
        return sum(v.total_minutes for v in self.vms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "plan": self.plan,
            "vms": [v.to_dict() for v in self.vms],
            "waves": [w.to_dict() for w in self.waves],
            "concurrency": self.concurrency,
            "total_minutes": self.total_minutes,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }


def _what_if(req: EstimateRequest) -> EstimateResult:
    if req.data_bytes is None or req.bandwidth is None:
        raise UsageError("a what-if estimate needs --data SIZE and --bandwidth RATE (or give a PLAN)")
    try:
        inp = EstimateInput(
            name=req.name,
            data_bytes=req.data_bytes,
            compression=1.0 if req.compression is None else req.compression,
            source_bps=req.bandwidth,
            target_bps=req.target_bandwidth,
            redundancy=req.redundancy,
            switch_seconds=DEFAULT_SWITCH_SECONDS if req.switch_seconds is None else req.switch_seconds,
            increments_bytes=tuple(req.increments),
            pre_switch_bytes=req.pre_switch_bytes,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    est = estimate_vm(inp)
    return EstimateResult("what-if", vms=[est], concurrency=1)


def effective_data(vm: VM) -> tuple[int, str]:
    """Bytes the guest uses and where the number came from."""
    parts = [p for p in vm.partitions if p.capacity_bytes is not None and p.free_bytes is not None]
    if parts:
        return sum(max(0, (p.capacity_bytes or 0) - (p.free_bytes or 0)) for p in parts), "partitions in use"
    if vm.disks and all(d.used_bytes is not None for d in vm.disks):
        return sum(d.used_bytes or 0 for d in vm.disks if d.rdm is None), "disks in use"
    return sum(d.capacity_bytes for d in vm.disks if d.rdm is None), "provisioned size (in-use not reported)"


def _plan(req: EstimateRequest, rep: Reporter) -> EstimateResult:
    from scmt_cli.domain.plan.loader import load_plan
    from scmt_cli.inventory import load_inventory

    assert req.plan is not None
    plan = load_plan(req.plan).plan
    inv_path = req.inventory or plan.source.inventory
    if inv_path is None:
        raise InputError(
            f"{req.plan}: the plan names no source.inventory; pass --inventory FILE (RVTools export or lab file)",
            hint="estimates from a live vCenter arrive with the vSphere adapter",
        )
    inventory = load_inventory(inv_path)
    result = EstimateResult("plan", plan=str(req.plan))
    result.concurrency = req.concurrency or plan.defaults.concurrency or DEFAULT_CONCURRENCY
    estimates: dict[str, VmEstimate] = {}
    for spec in plan.vms:
        vm = inventory.vm(spec.name)
        if vm is None:
            result.warnings.append(f"{spec.name}: not in the inventory {inventory.source}; not estimated")
            continue
        eff = plan.effective(spec.name)
        rate = req.bandwidth or eff.bandwidth
        if rate is None:
            raise UsageError(f"{req.plan}: no bandwidth for VM {spec.name} (the plan says unlimited); "
                             "pass --bandwidth RATE, e.g. 300Mbit")
        data, how = effective_data(vm)
        if how.startswith("provisioned"):
            result.notes.append(f"{vm.name}: effective data from the {how}")
        compression = req.compression
        if compression is None:
            compression = 1.0 if eff.compression == "none" else DEFAULT_PLAN_COMPRESSION
        switch = req.switch_seconds
        if switch is None:
            osm = match_os(vm.guest_id, vm.guest_full_name, vm.tools_guest_full_name)
            switch = float(lab_switch(osm.os_kind, eff.method))
        try:
            inp = EstimateInput(
                name=vm.name, data_bytes=data, compression=compression, source_bps=rate,
                target_bps=req.target_bandwidth, redundancy=req.redundancy, switch_seconds=switch,
                increments_bytes=tuple(req.increments), pre_switch_bytes=req.pre_switch_bytes,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        estimates[vm.name] = estimate_vm(inp)
        rep.event("vm_estimated", vm=vm.name, total_minutes=estimates[vm.name].total_minutes)
    result.vms = list(estimates.values())
    waves: list[tuple[str, list[VmEstimate]]] = []
    grouped: set[str] = set()
    for g in plan.groups:
        members = [estimates[v] for v in g.vms if v in estimates]
        grouped.update(g.vms)
        if members:
            waves.append((g.name, members))
    rest = [e for n, e in estimates.items() if n not in grouped]
    if rest:
        waves.append(("(no group)" if waves else "all", rest))
    interval = req.sync_interval if req.sync_interval is not None else plan.defaults.sync_interval
    result.waves = schedule(waves, result.concurrency, interval)
    return result


def estimate(req: EstimateRequest, reporter: Reporter | None = None) -> EstimateResult:
    """The estimate the request asks for (see the module doc)."""
    rep = reporter or NullReporter()
    if req.concurrency is not None and req.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if req.plan is not None:
        return _plan(req, rep)
    return _what_if(req)
