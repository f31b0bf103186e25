"""Inventory over the PropertyCollector: one container view, one retrieval (plus pages).

:func:`retrieve_inventory` asks for exactly the properties the normalized
:class:`~scmt_cli.domain.inventory.Inventory` needs, for every VM, host,
cluster, datastore, network, folder and datacenter, with a single
``RetrievePropertiesEx`` (and ``ContinueRetrievePropertiesEx`` per page), so
the number of round trips does not grow with the number of VMs except by
pages of ``PAGE`` objects.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from scmt_cli.domain import inventory as inv

# pyvmomi's stubs type the dynamic API loosely; treat it as Any.
vim: Any = _vim
vmodl: Any = _vmodl

PAGE = 1000

_PROPS: dict[Any, list[str]] = {
    vim.VirtualMachine: [
        "name", "parent", "config.uuid", "config.guestId", "config.guestFullName", "config.firmware",
        "config.bootOptions.efiSecureBootEnabled", "config.hardware.numCPU", "config.hardware.numCoresPerSocket",
        "config.hardware.memoryMB", "config.hardware.device", "config.changeTrackingEnabled", "config.version",
        "config.annotation", "config.tools.toolsVersion", "runtime.powerState", "runtime.host",
        "runtime.consolidationNeeded", "guest.toolsRunningStatus", "guest.guestFullName", "guest.hostName",
        "guest.net", "guest.disk", "snapshot",
    ],
    vim.HostSystem: ["name", "parent", "config.product.version", "config.product.build"],
    vim.ClusterComputeResource: ["name"],
    vim.Datastore: ["summary.name", "summary.capacity", "summary.freeSpace", "summary.type"],
    vim.Network: ["name"],
    vim.dvs.DistributedVirtualPortgroup: ["key"],
    vim.Folder: ["name", "parent"],
    vim.Datacenter: ["name", "parent"],
}  # fmt: skip


def retrieve(content: Any) -> list[tuple[Any, dict[str, Any]]]:
    """(managed object, {property: value}) for every object the inventory needs (``content``: ServiceContent)."""
    view = content.viewManager.CreateContainerView(content.rootFolder, list(_PROPS), True)
    try:
        traversal = vmodl.query.PropertyCollector.TraversalSpec(
            name="view", type=vim.view.ContainerView, path="view", skip=False
        )
        obj_spec = vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traversal])
        prop_specs = [vmodl.query.PropertyCollector.PropertySpec(type=t, pathSet=p) for t, p in _PROPS.items()]
        spec = vmodl.query.PropertyCollector.FilterSpec(objectSet=[obj_spec], propSet=prop_specs)
        pc = content.propertyCollector
        options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=PAGE)
        out: list[tuple[Any, dict[str, Any]]] = []
        result = pc.RetrievePropertiesEx([spec], options)
        while result is not None:
            for oc in result.objects or []:
                out.append((oc.obj, {p.name: p.val for p in oc.propSet or []}))
            if not result.token:
                break
            result = pc.ContinueRetrievePropertiesEx(result.token)
        return out
    finally:
        view.DestroyView()


def _controller(dev: Any) -> tuple[str | None, str | None]:
    table = [
        (vim.vm.device.ParaVirtualSCSIController, "scsi", "pvscsi"),
        (vim.vm.device.VirtualLsiLogicSASController, "scsi", "lsilogic-sas"),
        (vim.vm.device.VirtualLsiLogicController, "scsi", "lsilogic"),
        (vim.vm.device.VirtualBusLogicController, "scsi", "buslogic"),
        (vim.vm.device.VirtualAHCIController, "sata", "ahci"),
        (vim.vm.device.VirtualIDEController, "ide", "ide"),
        (vim.vm.device.VirtualNVMEController, "nvme", "nvme"),
    ]
    for cls, kind, model in table:
        if isinstance(dev, cls):
            return kind, model
    return None, None


def snapshot_list(snapshot_info: Any) -> list[tuple[Any, Any]]:
    """(tree node, parent node) for every snapshot, depth-first, oldest first."""
    out: list[tuple[Any, Any]] = []

    def walk(nodes: Any, parent: Any) -> None:
        for node in nodes or []:
            out.append((node, parent))
            walk(node.childSnapshotList, node)

    if snapshot_info is not None:
        walk(snapshot_info.rootSnapshotList, None)
    return out


def _nic_adapter(dev: Any) -> str:
    for name in ("VirtualVmxnet3", "VirtualE1000e", "VirtualE1000", "VirtualVmxnet2", "VirtualPCNet32"):
        cls = getattr(vim.vm.device, name, None)
        if cls is not None and isinstance(dev, cls):
            return name.replace("Virtual", "").lower()
    return type(dev).__name__


def _folder_path(ref: Any, objs: dict[str, dict[str, Any]]) -> str | None:
    parts: list[str] = []
    cur = ref
    for _ in range(64):
        if cur is None:
            break
        props = objs.get(cur._moId)
        if props is None:
            break
        parts.append(props.get("name", "?"))
        cur = props.get("parent")
    if not parts:
        return None
    parts.reverse()
    return "/" + "/".join(parts[1:] if parts[0] == "Datacenters" else parts)


def _vm(props: dict[str, Any], moref: str, ctx: dict[str, Any], source: str) -> inv.VM:
    devices = props.get("config.hardware.device") or []
    by_key = {d.key: d for d in devices}
    guest_net = {(n.macAddress or "").lower(): n for n in props.get("guest.net") or []}
    disks, nics = [], []
    counts = {"usb": 0, "pci": 0, "sriov": 0, "tpm": False}
    for dev in devices:
        if isinstance(dev, vim.vm.device.VirtualDisk):
            b = dev.backing
            rdm = None
            if isinstance(b, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo):
                rdm = "physical" if b.compatibilityMode == "physicalMode" else "virtual"
            kind, model = _controller(by_key.get(dev.controllerKey))
            mode = getattr(b, "diskMode", None)
            disks.append(
                inv.Disk(
                    key=dev.key,
                    label=dev.deviceInfo.label if dev.deviceInfo else f"disk {dev.key}",
                    capacity_bytes=int(dev.capacityInBytes or (dev.capacityInKB or 0) * 1024),
                    file=getattr(b, "fileName", None),
                    datastore=ctx["ds_names"].get(b.datastore._moId) if getattr(b, "datastore", None) else None,
                    thin=getattr(b, "thinProvisioned", None) if rdm is None else None,
                    mode=mode,
                    sharing=getattr(b, "sharing", None),
                    rdm=rdm,  # type: ignore[arg-type]
                    controller=kind,
                    controller_model=model,
                    cbt_enabled=props.get("config.changeTrackingEnabled"),
                    change_id=getattr(b, "changeId", None),
                )
            )
        elif isinstance(dev, vim.vm.device.VirtualEthernetCard):
            b = dev.backing
            net = getattr(b, "deviceName", None)
            port = getattr(b, "port", None)
            if port is not None:
                net = ctx["dvpg"].get(port.portgroupKey, port.portgroupKey)
            mac = (dev.macAddress or "").lower() or None
            g = guest_net.get(mac or "")
            conn = dev.connectable
            nics.append(
                inv.Nic(
                    key=dev.key,
                    label=dev.deviceInfo.label if dev.deviceInfo else f"nic {dev.key}",
                    network=net,
                    mac=mac,
                    ips=tuple(g.ipAddress or ()) if g else (),
                    connected=conn.connected if conn else None,
                    start_connected=conn.startConnected if conn else None,
                    adapter_type=_nic_adapter(dev),
                )
            )
            if isinstance(dev, vim.vm.device.VirtualSriovEthernetCard):
                counts["sriov"] += 1
        elif isinstance(dev, vim.vm.device.VirtualUSB):
            counts["usb"] += 1
        elif isinstance(dev, vim.vm.device.VirtualPCIPassthrough):
            counts["pci"] += 1
        elif isinstance(dev, vim.vm.device.VirtualTPM):
            counts["tpm"] = True
    snaps = tuple(
        inv.Snapshot(
            name=node.name,
            created=node.createTime.isoformat() if node.createTime else None,
            description=node.description or None,
            moref=node.snapshot._moId,
            quiesced=node.quiesced,
        )
        for node, _ in snapshot_list(props.get("snapshot"))
    )
    parts = tuple(
        inv.Partition(mount=d.diskPath, capacity_bytes=d.capacity, free_bytes=d.freeSpace,
                      filesystem=getattr(d, "filesystemType", None))
        for d in props.get("guest.disk") or []
    )  # fmt: skip
    host_ref = props.get("runtime.host")
    host = ctx["hosts"].get(host_ref._moId) if host_ref is not None else None
    tools = {"guestToolsRunning": "running", "guestToolsNotRunning": "notRunning"}.get(
        props.get("guest.toolsRunningStatus") or "", "unknown"
    )
    fw = props.get("config.firmware")
    return inv.VM(
        name=props.get("name", moref),
        moref=moref,
        uuid=props.get("config.uuid"),
        power_state=props.get("runtime.powerState"),
        guest_id=props.get("config.guestId"),
        guest_full_name=props.get("config.guestFullName"),
        tools_guest_full_name=props.get("guest.guestFullName"),
        hostname=props.get("guest.hostName"),
        firmware=fw if fw in ("bios", "efi") else None,
        secure_boot=props.get("config.bootOptions.efiSecureBootEnabled"),
        vtpm=bool(counts["tpm"]),
        cpus=props.get("config.hardware.numCPU"),
        cores_per_socket=props.get("config.hardware.numCoresPerSocket"),
        memory_mib=props.get("config.hardware.memoryMB"),
        disks=tuple(disks),
        nics=tuple(nics),
        partitions=parts,
        snapshots=snaps,
        consolidation_needed=props.get("runtime.consolidationNeeded"),
        cbt_enabled=props.get("config.changeTrackingEnabled"),
        tools_status=tools,  # type: ignore[arg-type]
        tools_version=props.get("config.tools.toolsVersion") and str(props.get("config.tools.toolsVersion")),
        hardware_version=props.get("config.version"),
        host=host["name"] if host else None,
        folder=_folder_path(props.get("parent"), ctx["folders"]),
        cluster=host["cluster"] if host else None,
        usb_devices=int(counts["usb"]),
        pci_passthrough=int(counts["pci"]),
        sriov_nics=int(counts["sriov"]),
        annotation=props.get("config.annotation") or None,
        source=source,
    )


def build_inventory(
    objects: list[tuple[Any, dict[str, Any]]], source: str, vcenter_version: str | None
) -> inv.Inventory:
    """Map retrieved objects to the normalized inventory (pure; no round trips)."""
    clusters = {o._moId: p.get("name") for o, p in objects if isinstance(o, vim.ClusterComputeResource)}
    ds_names = {o._moId: p.get("summary.name") for o, p in objects if isinstance(o, vim.Datastore)}
    names = {o._moId: p.get("name") for o, p in objects if isinstance(o, vim.Network)}
    dvpg = {k: names.get(o._moId, k) for o, p in objects if isinstance(o, vim.dvs.DistributedVirtualPortgroup)
            for k in [p.get("key")]}  # fmt: skip
    folders = {o._moId: p for o, p in objects if isinstance(o, vim.Folder | vim.Datacenter)}
    hosts_out, hosts = [], {}
    for o, p in objects:
        if isinstance(o, vim.HostSystem):
            parent = p.get("parent")
            cluster = clusters.get(parent._moId) if parent is not None else None
            hosts[o._moId] = {"name": p.get("name"), "cluster": cluster}
            hosts_out.append(
                inv.Host(
                    name=p.get("name", o._moId),
                    esxi_version=p.get("config.product.version"),
                    esxi_build=p.get("config.product.build"),
                    vcenter_version=vcenter_version,
                )
            )
    ctx = {"ds_names": ds_names, "dvpg": dvpg, "hosts": hosts, "folders": folders}
    vms = tuple(_vm(p, o._moId, ctx, source) for o, p in objects if isinstance(o, vim.VirtualMachine))
    dss = tuple(
        inv.Datastore(
            name=p.get("summary.name", o._moId),
            capacity_bytes=p.get("summary.capacity"),
            free_bytes=p.get("summary.freeSpace"),
            type=p.get("summary.type"),
        )
        for o, p in objects
        if isinstance(o, vim.Datastore)
    )
    return inv.Inventory(vms=vms, hosts=tuple(hosts_out), datastores=dss, source=source)
