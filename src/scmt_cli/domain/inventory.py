"""The normalized inventory model: one shape for every inventory input.

Live vCenter (the pyvmomi adapter), the fake vCenter's lab file and RVTools
exports all produce :class:`Inventory`.  Assessment rules and the migration
services read only this model.  Unknown values are ``None`` (never a guessed
default), so a rule can tell "false" from "not reported".

Sizes are bytes; memory is MiB (as vSphere reports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PowerState = Literal["poweredOn", "poweredOff", "suspended"]
Firmware = Literal["bios", "efi"]
DiskMode = Literal["persistent", "independent_persistent", "independent_nonpersistent", "nonpersistent", "undoable"]
RdmMode = Literal["physical", "virtual"]
ToolsStatus = Literal["running", "notRunning", "notInstalled", "unknown"]


@dataclass(frozen=True)
class Partition:
    mount: str  # "/", "C:\\"
    capacity_bytes: int | None = None
    free_bytes: int | None = None
    filesystem: str | None = None  # ext4, xfs, ntfs, refs ...


@dataclass(frozen=True)
class Disk:
    key: int  # the device key (2000, 2001, ...) - stable per VM
    label: str  # "Hard disk 1"
    capacity_bytes: int
    file: str | None = None  # "[datastore1] web01/web01.vmdk"
    datastore: str | None = None
    thin: bool | None = None
    mode: DiskMode | None = "persistent"
    sharing: str | None = None  # "sharingNone" | "sharingMultiWriter"
    rdm: RdmMode | None = None
    controller: str | None = None  # "scsi" (lsilogic, pvscsi...), "sata", "ide", "nvme"
    controller_model: str | None = None
    cbt_enabled: bool | None = None  # per-disk CBT, when known
    change_id: str | None = None
    partition_style: Literal["mbr", "gpt"] | None = None
    used_bytes: int | None = None


@dataclass(frozen=True)
class Nic:
    key: int
    label: str  # "Network adapter 1"
    network: str | None = None
    mac: str | None = None
    ips: tuple[str, ...] = ()
    connected: bool | None = None
    start_connected: bool | None = None
    adapter_type: str | None = None  # vmxnet3, e1000e ...


@dataclass(frozen=True)
class Snapshot:
    name: str
    created: str | None = None  # ISO 8601
    description: str | None = None
    moref: str | None = None
    quiesced: bool | None = None
    size_bytes: int | None = None


@dataclass(frozen=True)
class Host:
    name: str
    esxi_version: str | None = None  # "7.0.2"
    esxi_build: str | None = None
    vcenter_version: str | None = None


@dataclass(frozen=True)
class Datastore:
    name: str
    capacity_bytes: int | None = None
    free_bytes: int | None = None
    type: str | None = None  # VMFS, NFS, vsan


@dataclass(frozen=True)
class VM:
    name: str
    moref: str | None = None
    uuid: str | None = None
    power_state: PowerState | None = None
    guest_id: str | None = None  # config guestId, e.g. "rhel8_64Guest"
    guest_full_name: str | None = None  # config guestFullName
    tools_guest_full_name: str | None = None  # what VMware Tools report
    hostname: str | None = None
    firmware: Firmware | None = None
    secure_boot: bool | None = None
    vtpm: bool | None = None
    cpus: int | None = None
    cores_per_socket: int | None = None
    memory_mib: int | None = None
    memory_free_mib: int | None = None  # inside the guest, when known (agent methods)
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    partitions: tuple[Partition, ...] = ()
    snapshots: tuple[Snapshot, ...] = ()
    consolidation_needed: bool | None = None
    cbt_enabled: bool | None = None
    tools_status: ToolsStatus | None = None
    tools_version: str | None = None
    hardware_version: str | None = None  # "vmx-19"
    host: str | None = None
    folder: str | None = None
    cluster: str | None = None
    usb_devices: int = 0
    pci_passthrough: int = 0
    sriov_nics: int = 0
    annotation: str | None = None
    source: str = ""  # where this record came from: "vcenter", "rvtools:file.xlsx", "lab:lab.yaml"

    @property
    def ips(self) -> tuple[str, ...]:
        return tuple(ip for nic in self.nics for ip in nic.ips)

    @property
    def provisioned_bytes(self) -> int:
        return sum(d.capacity_bytes for d in self.disks)


@dataclass(frozen=True)
class NotAssessed:
    """Data the input lacks: ``what`` (for people) and the ids of the rules that could not run."""

    what: str
    rules: tuple[str, ...]


@dataclass(frozen=True)
class Inventory:
    vms: tuple[VM, ...] = ()
    hosts: tuple[Host, ...] = ()
    datastores: tuple[Datastore, ...] = ()
    source: str = ""
    # Problems met while reading (row-level): the other VMs are still usable.
    skipped: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # What the input did not let the assessment check for any VM (an RVTools export without its vDisk
    # tab: no RDM, shared-disk or independent-disk check): a VM not blocked otherwise is "incomplete".
    not_assessed: tuple[NotAssessed, ...] = field(default_factory=tuple)

    def vm(self, name: str) -> VM | None:
        for vm in self.vms:
            if vm.name == name:
                return vm
        return None

    def host(self, name: str | None) -> Host | None:
        for h in self.hosts:
            if h.name == name:
                return h
        return None

    def datastore(self, name: str | None) -> Datastore | None:
        for d in self.datastores:
            if d.name == name:
                return d
        return None


def datacenter_of(vm: VM) -> str | None:
    """The datacenter part of a VM's folder path (``/DC0/vm/app`` -> ``DC0``), None when unknown."""
    if not vm.folder:
        return None
    parts = [p for p in vm.folder.split("/") if p]
    if "vm" in parts:
        return "/".join(parts[: parts.index("vm")]) or None
    return parts[0] if parts else None


def in_datacenter(inventory: Inventory, datacenter: str) -> Inventory:
    """Only the VMs of ``datacenter`` (a name or a folder path, as govc's GOVC_DATACENTER).

    VMs whose datacenter is unknown are kept: refusing them would hide VMs.
    """
    from dataclasses import replace

    want = datacenter.strip("/")

    def matches(vm: VM) -> bool:
        dc = datacenter_of(vm)
        return dc is None or dc == want or dc.rsplit("/", 1)[-1] == want

    return replace(inventory, vms=tuple(vm for vm in inventory.vms if matches(vm)))
