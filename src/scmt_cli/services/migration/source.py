"""The source side of a migration: which vCenter implementation to talk to and
which disks of a VM are copied.

:func:`open_vcenter` connects to the vCenter of the plan's ``source`` section
(a real one through pyvmomi, or the embedded lab's fake: the choice is
:func:`scmt_cli.vsphere.connect.open_vcenter`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from scmt_cli.domain.inventory import VM, Inventory
from scmt_cli.domain.plan import Effective, Plan
from scmt_cli.errors import NotAvailableError, PlanError
from scmt_cli.events import Reporter
from scmt_cli.vsphere import connect
from scmt_cli.vsphere.api import VCenter
from scmt_cli.vsphere.settings import resolve_settings


def source_mapping(plan: Plan) -> dict[str, Any]:
    """The plan's ``source`` section in the form :func:`resolve_settings` reads."""
    s = plan.source
    raw: dict[str, Any] = {
        "url": s.url,
        "user": s.username,
        "password_env": s.password_env,
        "password_file": str(s.password_file) if s.password_file else None,
        "ca_file": str(s.ca_file) if s.ca_file else None,
        "thumbprint": s.thumbprint,
        "datacenter": s.datacenter,
    }
    if s.insecure:
        raw["insecure"] = True
    return {k: v for k, v in raw.items() if v is not None}


def open_vcenter(plan: Plan, reporter: Reporter) -> VCenter:
    """A VCenter (not yet connected) for the plan's source; see the module docstring."""
    if not plan.source.url:
        raise PlanError(f"{plan.file}: source.url is required to sync from vCenter")
    settings = resolve_settings(source=source_mapping(plan), env=os.environ, base_dir=plan.file.parent)
    return connect.open_vcenter(settings, reporter, connect=False)


@dataclass(frozen=True)
class SourceDisk:
    """One disk to copy: vSphere device ``key``, ``index`` on the target (0, 1, ...)."""

    key: int
    label: str
    capacity: int
    index: int
    datastore: str | None = None


def included_disks(eff: Effective, vm: VM) -> tuple[list[SourceDisk], list[str]]:
    """The disks of ``vm`` the plan copies, and warnings for those skipped.

    A plan ``disks`` entry matches by ``key``, else by ``label``; ``include:
    false`` skips the disk.  Physical-mode RDMs and independent disks cannot be
    read through a snapshot and are skipped with a warning.
    """
    out: list[SourceDisk] = []
    warnings: list[str] = []
    for disk in sorted(vm.disks, key=lambda d: d.key):
        spec = next((s for s in eff.disks if s.key is not None and s.key == disk.key), None)
        spec = spec or next((s for s in eff.disks if s.label is not None and s.label == disk.label), None)
        if spec is not None and not spec.include:
            continue
        if disk.rdm == "physical":
            warnings.append(f"{vm.name}: {disk.label} is a physical-mode RDM; it is not copied (map the LUN)")
            continue
        if disk.mode and disk.mode.startswith("independent"):
            warnings.append(f"{vm.name}: {disk.label} is an independent disk; snapshots do not cover it, "
                            "so it is not copied (set include: false to silence this)")
            continue
        out.append(SourceDisk(disk.key, disk.label, disk.capacity_bytes, len(out), disk.datastore))
    return out, warnings


def source_vm(vc: VCenter, name: str, *, inventory: Inventory | None = None) -> VM:
    """The inventory record of ``name`` (from ``inventory`` when given); a missing VM is a PlanError naming it."""
    vm = (inventory if inventory is not None else vc.inventory()).vm(name)
    if vm is None:
        raise PlanError(f"VM {name!r} of the plan does not exist in the source vCenter")
    return vm


#: Methods whose source is wired in this release (all four; a new method starts refused here).
WIRED_METHODS: frozenset[str] = frozenset({"managed", "agentless", "agent", "hot-backup"})


def require_wired_method(eff: Effective, command: str) -> None:
    """Refuse (NotAvailableError, exit 4) a VM whose method has no working source path yet.

    Copying an agent or hot-backup VM through vCenter snapshots would silently
    break what those methods promise (no snapshots on the source).
    """
    if eff.method not in WIRED_METHODS:
        raise NotAvailableError(
            f"{eff.name}: scmt {command} does not support method {eff.method!r} yet "
            "(its continuous change stream is not available; vCenter snapshots would break its promise)",
            hint="use method agent (periodic syncs through the scmt agent) or agentless for this VM",
        )
