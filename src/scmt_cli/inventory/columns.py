"""Which RVTools columns feed which inventory fields, per tab.

RVTools renames columns between versions (``In Use MiB`` was ``In Use MB``;
``Capacity MB`` became ``Capacity MiB``; its CSV export writes prefixed names
such as ``vInfoVMName``).  Each field lists every name we accept, first match
wins; names are compared case-insensitively with spaces and punctuation
ignored.  Sizes in columns named ``MB`` are MiB (RVTools always reported
mebibytes; the label changed, the unit did not).

A tab's ``key`` field (the VM or host name) is required when the tab is read;
the other fields are optional and a missing one is reported as a warning
naming the rules it disables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TabSpec:
    name: str
    key: str
    fields: dict[str, tuple[str, ...]]
    required: bool = False
    feeds: dict[str, str] = field(default_factory=dict)  # field -> what is lost without it
    # Rules that can block a VM and read only this tab: without the tab the assessment is incomplete.
    blocking: tuple[str, ...] = ()


TABS: dict[str, TabSpec] = {
    "vInfo": TabSpec(
        "vInfo",
        key="vm",
        required=True,
        fields={
            "vm": ("VM", "VM Name", "vInfoVMName", "Name"),
            "powerstate": ("Powerstate", "Power State", "vInfoPowerstate"),
            "template": ("Template", "vInfoTemplate"),
            "dns_name": ("DNS Name", "vInfoGuestHostName", "Guest Host Name"),
            "consolidation": ("Consolidation Needed", "vInfoConsolidationNeeded"),
            "cpus": ("CPUs", "vInfoCPUs", "Num CPU"),
            "memory": ("Memory", "Memory MiB", "Memory MB", "vInfoMemory"),
            "primary_ip": ("Primary IP Address", "vInfoPrimaryIPAddress", "IP Address"),
            "firmware": ("Firmware", "vInfoFirmware"),
            "secure_boot": ("EFI Secure boot", "Secure Boot", "vInfoSecureBoot"),
            "hw_version": ("HW version", "vInfoHWVersion", "VM Version"),
            "os_config": ("OS according to the configuration file", "vInfoOS", "Guest OS", "OS"),
            "os_tools": ("OS according to the VMware Tools", "vInfoOSTools"),
            "guest_id": ("Guest ID", "guestId", "vInfoGuestId"),
            "uuid": ("VM UUID", "vInfoUUID", "UUID"),
            "vm_id": ("VM ID", "vInfoVMID"),
            "host": ("Host", "vInfoHost"),
            "cluster": ("Cluster", "vInfoCluster"),
            "folder": ("Folder", "vInfoFolder"),
            "annotation": ("Annotation", "vInfoAnnotation"),
            "cbt": ("CBT", "vInfoCBT", "Change Block Tracking"),
            "in_use_mib": ("In Use MiB", "In Use MB", "vInfoInUse"),
            "provisioned_mib": ("Provisioned MiB", "Provisioned MB", "vInfoProvisioned"),
        },
        feeds={
            "powerstate": "power state (tools and agent rules)",
            "os_config": "guest OS rules",
            "memory": "agent memory rule",
            "cbt": "cbt.disabled",
            "consolidation": "snapshot.consolidation_needed",
            "host": "ESXi version rules",
            "firmware": "UEFI boot checks",
        },
    ),
    "vDisk": TabSpec(
        "vDisk",
        key="vm",
        fields={
            "vm": ("VM", "vDiskVMName", "VM Name"),
            "disk": ("Disk", "vDiskDiskName", "Label"),
            "disk_key": ("Disk Key", "vDiskKey"),
            "path": ("Disk Path", "vDiskPath", "Path"),
            "capacity_mib": ("Capacity MiB", "Capacity MB", "vDiskCapacity"),
            "raw": ("Raw", "vDiskRaw"),
            "raw_mode": ("Raw Com. Mode", "Raw Comp. Mode", "Raw Compatibility Mode", "vDiskRawComMode"),
            "mode": ("Disk Mode", "vDiskMode", "Mode"),
            "sharing": ("Sharing mode", "vDiskSharingMode", "Sharing"),
            "thin": ("Thin", "vDiskThin"),
            "controller": ("Controller", "vDiskController"),
        },
        feeds={
            "capacity_mib": "disk sizes and estimates",
            "raw_mode": "disk.rdm.*",
            "mode": "disk.independent",
            "sharing": "disk.shared",
        },
        blocking=("disk.rdm.physical", "disk.independent", "disk.shared", "sizing.shrink"),
    ),
    "vPartition": TabSpec(
        "vPartition",
        key="vm",
        fields={
            "vm": ("VM", "vPartitionVMName", "VM Name"),
            "disk": ("Disk", "vPartitionDisk", "Mount"),
            "capacity_mib": ("Capacity MiB", "Capacity MB", "vPartitionCapacity"),
            "free_mib": ("Free MiB", "Free MB", "vPartitionFree"),
            "consumed_mib": ("Consumed MiB", "Consumed MB", "vPartitionConsumed"),
            "filesystem": ("File System", "Filesystem", "vPartitionFileSystem"),
        },
    ),
    "vNetwork": TabSpec(
        "vNetwork",
        key="vm",
        fields={
            "vm": ("VM", "vNetworkVMName", "VM Name"),
            "label": ("NIC label", "Network adapter", "vNetworkLabel", "Label"),
            "adapter": ("Adapter", "vNetworkAdapter", "Type"),
            "network": ("Network", "vNetworkNetwork", "Port Group"),
            "mac": ("Mac Address", "MAC Address", "vNetworkMacAddress"),
            "ipv4": ("IPv4 Address", "IP Address", "vNetworkIpv4Address"),
            "ipv6": ("IPv6 Address", "vNetworkIpv6Address"),
            "connected": ("Connected", "vNetworkConnected"),
            "starts_connected": ("Starts Connected", "vNetworkStartsConnected"),
        },
        feeds={"ipv4": "nic.no_ip", "adapter": "device.sriov"},
    ),
    "vSnapshot": TabSpec(
        "vSnapshot",
        key="vm",
        fields={
            "vm": ("VM", "vSnapshotVMName", "VM Name"),
            "name": ("Name", "vSnapshotName", "Snapshot"),
            "description": ("Description", "vSnapshotDescription"),
            "created": ("Date / time", "Date/time", "vSnapshotDateTime", "Created"),
            "size_mib": ("Size MiB (total)", "Size MB (total)", "Size MiB (vmsn)", "vSnapshotSizeTotal"),
            "quiesced": ("Quiesced", "vSnapshotQuiesced"),
        },
        blocking=("snapshot.existing",),
    ),
    "vTools": TabSpec(
        "vTools",
        key="vm",
        fields={
            "vm": ("VM", "vToolsVMName", "VM Name"),
            "tools": ("Tools", "vToolsTools", "Tools Status"),
            "version": ("Tools Version", "vToolsToolsVersion"),
        },
        feeds={"tools": "tools.not_running"},
    ),
    "vHost": TabSpec(
        "vHost",
        key="host",
        fields={
            "host": ("Host", "vHostName", "Name"),
            "esx_version": ("ESX Version", "vHostESXVersion", "Version"),
            "cluster": ("Cluster", "vHostCluster"),
        },
        feeds={"esx_version": "ESXi version rules"},
    ),
    "vDatastore": TabSpec(
        "vDatastore",
        key="name",
        fields={
            "name": ("Name", "vDatastoreName", "Datastore"),
            "type": ("Type", "vDatastoreType"),
            "capacity_mib": ("Capacity MiB", "Capacity MB", "vDatastoreCapacity"),
            "free_mib": ("Free MiB", "Free MB", "vDatastoreFreeMB"),
        },
        feeds={"free_mib": "datastore.free_space"},
    ),
    "vUSB": TabSpec("vUSB", key="vm", fields={"vm": ("VM", "vUSBVMName", "VM Name")},
                    blocking=("device.usb",)),
}


def norm_header(text: object) -> str:
    """``"In Use MiB"`` -> ``"inusemib"``: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(text or "").lower())


def resolve(spec: TabSpec, headers: list[str]) -> tuple[dict[str, int], list[str]]:
    """Map each field of ``spec`` to a column index; also return the fields not found."""
    index: dict[str, int] = {}
    for i, h in enumerate(headers):
        index.setdefault(norm_header(h), i)
    found: dict[str, int] = {}
    missing: list[str] = []
    for fname, names in spec.fields.items():
        for n in names:
            col = index.get(norm_header(n))
            if col is not None:
                found[fname] = col
                break
        else:
            missing.append(fname)
    return found, missing
