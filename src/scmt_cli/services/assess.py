"""``scmt assess``: run the assessment rules over an inventory or a plan's VMs.

Inputs (exactly one source of VMs):

* a plan: its VMs, with the plan's method, downtime tolerance, groups and
  target sizing; the inventory comes from ``source.inventory`` in the plan,
  from ``--inventory``, or (later) from the live vCenter;
* an inventory file: an RVTools export (xlsx, CSV file or directory) or the
  fake vCenter's lab file: every VM in it;
* a live vCenter (``--vcenter``, the plan's ``source.url``, or, with neither a
  plan nor an inventory, govc's ``GOVC_URL``) through the vSphere adapter;
  credentials resolve as ``scmt_cli.vsphere.settings`` says, and a datacenter
  (``source.datacenter`` / ``GOVC_DATACENTER``) limits the VMs read.

The result lists every VM with its verdict under the assessed method, the
recommended method and why, and every finding.  Its ``exit_code`` is 20 when
any VM is blocked, 21 when the network preflight found a required port not
open, 22 when a VM's assessment is ``incomplete`` (the input lacks data that
rules able to block it need, e.g. an RVTools export without its vDisk tab), 1
for warnings (including skipped VMs and inventory warnings), else 0; the CLI
prints the full report before exiting with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scmt_cli.domain.assess import ALL_METHODS, AssessContext, TargetSizing, VmAssessment, assess_vm
from scmt_cli.domain.inventory import VM, Inventory
from scmt_cli.errors import (
    AssessmentIncompleteError,
    BlockedByAssessmentError,
    PreflightError,
    UsageError,
    redact_url,
)
from scmt_cli.events import NullReporter, Reporter
from scmt_cli.services.preflight import PreflightReport, required_checks, run_preflight

EXIT_BLOCKED = BlockedByAssessmentError.exit_code
EXIT_PREFLIGHT = PreflightError.exit_code
EXIT_INCOMPLETE = AssessmentIncompleteError.exit_code
METHOD_SPEED = {m: i for i, m in enumerate(ALL_METHODS)}  # later = shorter switch


@dataclass
class AssessRequest:
    plan: Path | None = None
    inventory: Path | None = None
    vcenter: str | None = None
    method: str | None = None
    downtime_seconds: float | None = None
    vms: Sequence[str] = ()
    network: bool = True
    timeout: float = 3.0
    vcenter_user: str | None = None
    vcenter_password_file: str | None = None
    vcenter_thumbprint: str | None = None
    insecure: bool = False


@dataclass
class AssessResult:
    source: str
    vms: list[VmAssessment] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    preflight: list[PreflightReport] = field(default_factory=list)
    plan: str | None = None

    def counts(self) -> dict[str, int]:
        out = {"vms": len(self.vms), "ready": 0, "warnings": 0, "blocked": 0, "incomplete": 0,
               "skipped": len(self.skipped)}
        for a in self.vms:
            out[a.verdict] += 1
        return out

    @property
    def exit_code(self) -> int:
        if any(a.verdict == "blocked" for a in self.vms):
            return EXIT_BLOCKED
        if any(p.failed for p in self.preflight):
            return EXIT_PREFLIGHT
        if any(a.verdict == "incomplete" for a in self.vms):
            return EXIT_INCOMPLETE
        if self.skipped or self.warnings or any(a.verdict == "warnings" for a in self.vms):
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "plan": self.plan,
            "summary": self.counts(),
            "exit_code": self.exit_code,
            "vms": [a.to_dict() for a in self.vms],
            "skipped": list(self.skipped),
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "preflight": [p.to_dict() for p in self.preflight],
        }


def _live_inventory(req: AssessRequest, plan: Any, reporter: Reporter) -> Inventory:
    """The inventory of a live vCenter through the vSphere adapter (pyvmomi)."""
    import os

    from scmt_cli.vsphere.connect import open_vcenter
    from scmt_cli.vsphere.settings import resolve_settings

    source: dict[str, Any] = {}
    base_dir = None
    if plan is not None:
        src = plan.source
        base_dir = Path(plan.file).parent
        for key, value in (("url", src.url), ("user", src.username), ("password_env", src.password_env),
                           ("password_file", src.password_file), ("ca_file", src.ca_file),
                           ("thumbprint", src.thumbprint), ("insecure", src.insecure or None)):
            if value is not None:
                source[key] = str(value) if isinstance(value, Path) else value
    settings = resolve_settings(
        source=source, url=req.vcenter, user=req.vcenter_user, password_file=req.vcenter_password_file,
        thumbprint=req.vcenter_thumbprint, insecure=True if req.insecure else None, env=os.environ,
        base_dir=base_dir,
    )
    reporter.log("info", f"reading the inventory of {redact_url(settings.url)}")
    vc = open_vcenter(settings, reporter, connect=False)
    try:
        vc.connect()
        inventory = vc.inventory()
    finally:
        vc.close()
    if settings.datacenter:
        return _only_datacenter(inventory, settings.datacenter)
    return inventory


def _only_datacenter(inventory: Inventory, datacenter: str) -> Inventory:
    from scmt_cli.domain.inventory import datacenter_of, in_datacenter
    from scmt_cli.errors import ConfigError

    kept = in_datacenter(inventory, datacenter)
    if inventory.vms and not kept.vms:
        known = sorted({dc for vm in inventory.vms if (dc := datacenter_of(vm))})
        raise ConfigError(
            f"datacenter {datacenter!r} not found in {inventory.source} (GOVC_DATACENTER or source.datacenter)",
            hint=f"known datacenters: {', '.join(known)}" if known else None,
        )
    return kept


def govc_url() -> str | None:
    """``GOVC_URL`` when set: the vCenter a govc user's shell already points at."""
    import os

    return os.environ.get("GOVC_URL") or None


def _load_inventory(path: Path) -> Inventory:
    from scmt_cli.inventory import load_inventory

    return load_inventory(path)


def target_sizing(eff: Any) -> TargetSizing:
    """What the plan asks for on the target for one VM (its effective settings)."""
    disks: dict[str, int] = {}
    for d in eff.disks:
        if d.size is None:
            continue
        if d.label:
            disks[d.label] = d.size
        if d.key is not None:
            disks[str(d.key)] = d.size
    memory_mib = None if eff.memory is None else eff.memory // (1024 * 1024)
    return TargetSizing(cpus=eff.cpus, memory_mib=memory_mib, disk_bytes=disks)


def _unify_groups(results: list[VmAssessment]) -> list[VmAssessment]:
    """VMs of one group fail over together: recommend the group's fastest needed method to all."""
    from dataclasses import replace

    by_group: dict[str, list[VmAssessment]] = {}
    for a in results:
        if a.group:
            by_group.setdefault(a.group, []).append(a)
    out = []
    for a in results:
        members = by_group.get(a.group or "", [])
        if len(members) > 1:
            fastest = max((m.recommended_method for m in members), key=lambda m: METHOD_SPEED[m])
            if fastest != a.recommended_method:
                a = replace(a, recommended_method=fastest,
                            reason=a.reason + f"; {fastest} because another VM of group {a.group!r} needs it")
        out.append(a)
    return out


def assess(req: AssessRequest, reporter: Reporter | None = None) -> AssessResult:
    """Assess the VMs the request names (see the module doc)."""
    rep = reporter or NullReporter()
    if req.method is not None and req.method not in ALL_METHODS:
        raise UsageError(f"unknown method {req.method!r}; expected one of {', '.join(ALL_METHODS)}")
    plan = None
    if req.plan is not None:
        from scmt_cli.domain.plan.loader import load_plan

        loaded = load_plan(req.plan)
        plan = loaded.plan
    inv_path = req.inventory or (plan.source.inventory if plan is not None else None)
    if inv_path is not None:
        inventory = _load_inventory(Path(inv_path))
    elif req.vcenter or (plan is not None and plan.source.url):
        inventory = _live_inventory(req, plan, rep)
    elif plan is None and govc_url():
        inventory = _live_inventory(req, plan, rep)  # resolve_settings reads GOVC_URL and friends
    else:
        raise UsageError(
            "nothing to assess: give a PLAN, --inventory FILE (RVTools .xlsx/.csv or lab .yaml) or --vcenter URL",
            hint="or export GOVC_URL (with GOVC_USERNAME, GOVC_PASSWORD), as for govc",
        )
    rep.log("info", f"assessing {len(inventory.vms)} VM(s) from {inventory.source or inv_path}")
    result = AssessResult(source=inventory.source or str(inv_path), plan=str(req.plan) if req.plan else None)
    for w in inventory.warnings:
        (result.notes if w.startswith("note: ") else result.warnings).append(w.removeprefix("note: "))
    result.skipped.extend(inventory.skipped)
    wanted: list[str] = list(req.vms) or ([v.name for v in plan.vms] if plan is not None else [])
    selected: list[VM] = []
    if wanted:
        for name in wanted:
            vm = inventory.vm(name)
            if vm is None:
                result.skipped.append(f"{name}: not in the inventory {inventory.source or inv_path}")
            else:
                selected.append(vm)
    else:
        selected = list(inventory.vms)
    results: list[VmAssessment] = []
    for vm in selected:
        ctx = AssessContext(inventory=inventory)
        method = req.method
        tolerance = req.downtime_seconds
        group = None
        if plan is not None and vm.name in plan.effective_by_vm:
            eff = plan.effective(vm.name)
            ctx = AssessContext(inventory=inventory, target=target_sizing(eff),
                                vddk=plan.source.vddk_libdir is not None, enable_cbt=plan.source.enable_cbt)
            method = method or eff.method
            tolerance = tolerance if tolerance is not None else eff.downtime_tolerance
            group = eff.group
        a = assess_vm(vm, ctx, method=method, tolerance_seconds=tolerance, group=group)
        rep.event("vm_assessed", vm=vm.name, verdict=a.verdict, method=a.method)
        results.append(a)
    result.vms = _unify_groups(results)
    if req.network and (plan is not None or req.vcenter or (inv_path is None and govc_url())):
        result.preflight = _preflight(req, plan, inventory, result.vms, rep)
    return result


def _preflight(
    req: AssessRequest, plan: Any, inventory: Inventory, vms: list[VmAssessment], rep: Reporter
) -> list[PreflightReport]:
    """One preflight per method in use, on the real addresses of the VMs assessed under it."""
    vc_url = req.vcenter or (plan.source.url if plan is not None else govc_url())
    common: dict[str, list[str]] = {"vcenter": [], "target": []}
    if vc_url:
        parts = urlsplit(vc_url if "://" in vc_url else f"https://{vc_url}")
        if parts.hostname:
            common["vcenter"].append(f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname)
    if plan is not None and plan.target.uri and (host := urlsplit(plan.target.uri).hostname):
        common["target"].append(host)
    reports = []
    for method in dict.fromkeys(a.method for a in vms):
        addresses: dict[str, list[str]] = {**common, "esxi": [], "agent": []}
        for a in vms:
            if a.method != method:
                continue
            vm = inventory.vm(a.name)
            if vm is not None and vm.host:
                addresses["esxi"].append(vm.host)
            eff = plan.effective_by_vm.get(a.name) if plan is not None else None
            if eff is not None and eff.agent is not None:
                addresses["agent"].append(f"{eff.agent.host}:{eff.agent.port}")
        checks, missing = required_checks(method, addresses)
        rep.log("info", f"preflight for {method}: {len(checks)} check(s)")
        reports.append(run_preflight(method, checks, missing_roles=missing, timeout=req.timeout, reporter=rep))
    return reports
