"""Fill a :class:`~scmt_cli.targets.base.TargetVmSpec` from the plan and the inventory.

Rules (services call :func:`vm_spec_from_plan` once per VM at failover):

* CPU and memory: the plan's override, else the source's; neither is an error;
* firmware and secure boot: as the source (``efi`` stays UEFI, secure boot kept);
* disks: the prepared disks in index order, on virtio (SATA under ``direct``
  failover, whose guest has no virtio drivers injected);
* NICs: one per source NIC, in order.  A plan ``nics`` entry is matched by
  ``label``, else by ``source`` (the VMware network).  The KVM network is the
  entry's ``network``, else ``target.networks[<VMware network>]``; an unmapped
  NIC is a :class:`~scmt_cli.errors.PlanError`.  MAC: ``keep`` (the default)
  keeps the source's, ``generate`` makes a stable new one
  (:func:`~scmt_cli.targets.base.generate_mac`), anything else is used as is.
  The model is virtio (e1000e under ``direct`` failover).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scmt_cli.domain.inventory import VM
from scmt_cli.errors import PlanError
from scmt_cli.targets.base import (
    DiskBus,
    NicModel,
    PreparedDisk,
    TargetDisk,
    TargetNic,
    TargetVmSpec,
    generate_mac,
    normalize_mac,
)

MIB = 1024 * 1024


def _nic_entry(entries: Sequence[Any], label: str, network: str | None) -> Any | None:
    for e in entries:
        if e.label is not None and e.label == label:
            return e
    for e in entries:
        if e.label is None and e.source is not None and e.source == network:
            return e
    return None


def vm_spec_from_plan(
    effective: Any,
    target: Any,
    source: VM,
    disks: Sequence[PreparedDisk],
    *,
    plan_name: str = "",
    compatible_devices: bool | None = None,
) -> TargetVmSpec:
    """The target VM for one plan VM (see the module rules).

    ``effective`` is the plan's ``Effective`` for the VM and ``target`` the
    plan's ``Target`` (duck-typed: ``networks``/``network_for``).
    ``compatible_devices`` (default: ``effective.direct``) picks SATA disks and
    e1000e NICs.  The result is validated (every NIC has a MAC).
    """
    name = effective.target_name or source.name
    cpus = effective.cpus or source.cpus
    if not cpus:
        raise PlanError(f"{source.name}: the CPU count is unknown; set cpus for this VM in the plan")
    memory_mib = effective.memory // MIB if effective.memory else source.memory_mib
    if not memory_mib:
        raise PlanError(f"{source.name}: the memory size is unknown; set memory for this VM in the plan")
    compat = effective.direct if compatible_devices is None else compatible_devices
    bus: DiskBus = "sata" if compat else "virtio"
    model: NicModel = "e1000e" if compat else "virtio"

    tdisks = tuple(TargetDisk(d.path, d.format, bus) for d in sorted(disks, key=lambda d: d.index))
    nics: list[TargetNic] = []
    for i, nic in enumerate(source.nics):
        entry = _nic_entry(effective.nics, nic.label, nic.network)
        network = (entry.network if entry is not None else None) or target.network_for(nic.network or "")
        if not network:
            raise PlanError(
                f"{source.name}: NIC {nic.label!r} is on VMware network {nic.network!r}, which target.networks "
                "does not map; add it to target.networks or set network for this NIC"
            )
        wanted = entry.mac if entry is not None else "keep"
        if wanted == "keep":
            mac = normalize_mac(nic.mac, vm=source.name) if nic.mac else generate_mac(name, i, salt=plan_name)
        elif wanted == "generate":
            mac = generate_mac(name, i, salt=plan_name)
        else:
            mac = normalize_mac(wanted, vm=source.name)
        nics.append(TargetNic(network, mac, model, ip=entry.ip if entry is not None else None,
                              gateway=entry.gateway if entry is not None else None,
                              dns=tuple(entry.dns) if entry is not None else ()))
    return TargetVmSpec(
        name=name,
        cpus=int(cpus),
        memory_mib=int(memory_mib),
        firmware="efi" if source.firmware == "efi" else "bios",
        secure_boot=bool(source.secure_boot) and source.firmware == "efi",
        disks=tdisks,
        nics=tuple(nics),
        description=f"migrated from vSphere VM {source.name} by scmt" + (f" (plan {plan_name})" if plan_name else ""),
    ).validated()
