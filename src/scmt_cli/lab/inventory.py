"""The normalized inventory of a lab, as assessment reads it."""

from __future__ import annotations

from pathlib import Path

from scmt_cli.domain import inventory as inv
from scmt_cli.errors import InputError
from scmt_cli.lab.model import Lab, LabVM
from scmt_cli.lab.parse import load_lab


def _vm_inventory(lab: Lab, vm: LabVM, source: str) -> inv.VM:
    host = lab.host(vm.host)
    disks = tuple(
        inv.Disk(
            key=d.key,
            label=d.label,
            capacity_bytes=d.capacity,
            file=d.file,
            datastore=d.datastore,
            thin=None if d.rdm else d.thin,
            mode=d.mode,  # type: ignore[arg-type]
            sharing=d.sharing,
            rdm=d.rdm,  # type: ignore[arg-type]
            controller=d.controller,
            controller_model=d.controller_model,
            cbt_enabled=vm.cbt,
            partition_style=d.partition_style,  # type: ignore[arg-type]
            used_bytes=d.capacity if not d.thin else d.used,
        )
        for d in vm.disks
    )
    nics = tuple(
        inv.Nic(
            key=n.key,
            label=n.label,
            network=n.network,
            mac=n.mac,
            ips=n.ips,
            connected=n.connected if vm.power == "poweredOn" else False,
            start_connected=n.start_connected,
            adapter_type=n.adapter_type,
        )
        for n in vm.nics
    )
    snaps = tuple(
        inv.Snapshot(
            name=s.name,
            created=s.created,
            description=s.description,
            moref=f"snapshot-{vm.moref.split('-')[1]}-{i + 1}",
            quiesced=s.quiesced,
        )
        for i, s in enumerate(vm.snapshots)
    )
    parts = tuple(
        inv.Partition(mount=p.mount, capacity_bytes=p.capacity, free_bytes=p.free, filesystem=p.filesystem)
        for p in vm.partitions
    )
    tools_running = vm.tools_status == "running" and vm.power == "poweredOn"
    return inv.VM(
        name=vm.name,
        moref=vm.moref,
        uuid=vm.uuid,
        power_state=vm.power,  # type: ignore[arg-type]
        guest_id=vm.guest_id,
        guest_full_name=vm.guest_full_name,
        tools_guest_full_name=vm.guest_full_name if tools_running else None,
        hostname=vm.hostname if tools_running else None,
        firmware=vm.firmware,  # type: ignore[arg-type]
        secure_boot=vm.secure_boot,
        vtpm=vm.vtpm,
        cpus=vm.cpus,
        cores_per_socket=vm.cores_per_socket,
        memory_mib=vm.memory_mib,
        disks=disks,
        nics=nics,
        partitions=parts,
        snapshots=snaps,
        consolidation_needed=vm.consolidation_needed,
        cbt_enabled=vm.cbt,
        tools_status=vm.tools_status if vm.power == "poweredOn" or vm.tools_status == "notInstalled" else "notRunning",  # type: ignore[arg-type]
        tools_version=vm.tools_version,
        hardware_version=vm.hardware_version,
        host=vm.host,
        folder=vm.folder,
        cluster=host.cluster if host else None,
        usb_devices=vm.usb_devices,
        pci_passthrough=vm.pci_passthrough,
        sriov_nics=vm.sriov_nics,
        annotation=vm.annotation,
        source=source,
    )


def lab_inventory(lab: Lab | str | Path) -> inv.Inventory:
    """The normalized inventory of a lab (a :class:`Lab` or a path to one).

    This is the inventory the fake vCenter reports before any operation; the
    fake's own ``inventory()`` reflects later changes (power, snapshots, CBT).
    """
    if not isinstance(lab, Lab):
        lab = load_lab(lab)
    source = f"lab:{Path(lab.path).name}"
    if not lab.vms and not lab.hosts:
        raise InputError(f"{lab.path}: the lab describes no hosts and no VMs")
    return inv.Inventory(
        vms=tuple(_vm_inventory(lab, vm, source) for vm in lab.vms),
        hosts=tuple(
            inv.Host(
                name=h.name, esxi_version=h.esxi_version, esxi_build=h.esxi_build, vcenter_version=lab.vcenter_version
            )
            for h in lab.hosts
        ),
        datastores=tuple(
            inv.Datastore(name=d.name, capacity_bytes=d.capacity, free_bytes=d.free, type=d.type)
            for d in lab.datastores
        ),
        source=source,
    )
