"""Parsing and validation of lab files into the model of :mod:`scmt_cli.lab.model`."""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from pathlib import Path

import yaml

from scmt_cli.lab.model import (
    FILLS,
    GUEST_IMAGE,
    LAB_FORMAT_VERSION,
    SECTOR,
    Lab,
    LabDatastore,
    LabDisk,
    LabHost,
    LabNic,
    LabPartition,
    LabSnapshot,
    LabVM,
    Region,
)
from scmt_cli.lab.yamlread import Reader

_TOP = ("version", "vcenter", "hosts", "datastores", "networks", "vms")
_VCENTER = ("name", "version", "datacenter", "user", "password")
_HOST = ("name", "esxi_version", "esxi_build", "cluster")
_DATASTORE = ("name", "type", "capacity", "free")
_VM = (
    "name", "uuid", "guest_id", "guest_full_name", "host", "power", "firmware", "secure_boot", "vtpm",
    "cpus", "cores_per_socket", "memory", "hostname", "tools", "hardware_version", "cbt", "folder",
    "annotation", "devices", "consolidation_needed", "disks", "nics", "partitions", "snapshots",
)  # fmt: skip
_TOOLS = ("status", "version")
_DEVICES = ("usb", "pci_passthrough", "sriov_nics")
_DISK = (
    "label", "size", "datastore", "file", "thin", "mode", "sharing", "rdm", "controller",
    "controller_model", "partition_style", "layout", "image",
)  # fmt: skip
_REGION = ("at", "size", "fill", "seed", "value", "text")
_NIC = ("label", "network", "mac", "ips", "connected", "start_connected", "type")
_SNAPSHOT = ("name", "created", "description", "quiesced")
_PARTITION = ("mount", "capacity", "free", "filesystem")

_POWER = ("poweredOn", "poweredOff", "suspended")
_TOOLS_STATUS = ("running", "notRunning", "notInstalled", "unknown")
_MODES = ("persistent", "independent_persistent", "independent_nonpersistent", "nonpersistent")
_CONTROLLERS = ("scsi", "sata", "ide", "nvme")


def _uuid_for(name: str) -> str:
    return str(uuidlib.UUID(hashlib.sha256(name.encode()).hexdigest()[:32]))


def _mac_ok(mac: str) -> bool:
    parts = mac.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)


def m_keys(node: yaml.Node) -> set[str]:
    """The keys of a mapping node (before validation), to choose which keys are required."""
    if not isinstance(node, yaml.MappingNode):
        return set()
    return {k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _image_size(image: str) -> int:
    if image == GUEST_IMAGE:
        from scmt_cli.lab.guest.recipe import DISK_SIZE

        return DISK_SIZE
    return Path(image).stat().st_size


class LabParser:
    def __init__(self, path: Path) -> None:
        self.r = Reader(str(path))
        self.path = path

    def parse(self) -> Lab:
        r = self.r
        top = r.mapping(r.compose(self.path), "", _TOP, required=("version", "hosts", "datastores", "vms"))
        version = r.integer(top["version"], "version")
        if version != LAB_FORMAT_VERSION:
            r.fail(top["version"], "version", f"unsupported lab format version {version} (expected 1)")
        vc = r.mapping(top["vcenter"], "vcenter", _VCENTER) if "vcenter" in top else {}
        hosts = tuple(self._host(n, f"hosts[{i}]") for i, n in enumerate(r.sequence(top["hosts"], "hosts")))
        dss = tuple(
            self._datastore(n, f"datastores[{i}]") for i, n in enumerate(r.sequence(top["datastores"], "datastores"))
        )
        nets = r.string_list(top["networks"], "networks") if "networks" in top else ()
        self._unique(top["hosts"], "hosts", [h.name for h in hosts])
        self._unique(top["datastores"], "datastores", [d.name for d in dss])
        vm_nodes = r.sequence(top["vms"], "vms")
        vms = tuple(
            self._vm(n, f"vms[{i}]", i, {h.name for h in hosts}, {d.name for d in dss}, set(nets))
            for i, n in enumerate(vm_nodes)
        )
        self._unique(top["vms"], "vms", [v.name for v in vms])
        macs = [n.mac.lower() for v in vms for n in v.nics]
        self._unique(top["vms"], "vms[*].nics[*].mac", macs)
        attrs = {"name": "vcenter_name", "version": "vcenter_version", "datacenter": "datacenter"}
        attrs.update(user="user", password="password")  # noqa: S106 - a field name, not a secret
        kw = {attrs[k]: r.string(v, f"vcenter.{k}") for k, v in vc.items()}
        return Lab(path=str(self.path), hosts=hosts, datastores=dss, networks=nets, vms=vms, **kw)

    def _unique(self, node: yaml.Node, path: str, names: list[str]) -> None:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                item = node.value[i] if isinstance(node, yaml.SequenceNode) and i < len(node.value) else node
                self.r.fail(item, path, f"duplicate name {name!r}")
            seen.add(name)

    def _host(self, node: yaml.Node, path: str) -> LabHost:
        r = self.r
        m = r.mapping(node, path, _HOST, required=("name", "esxi_version"))
        return LabHost(
            name=r.string(m["name"], f"{path}.name"),
            esxi_version=r.string(m["esxi_version"], f"{path}.esxi_version"),
            esxi_build=r.optional_string(m.get("esxi_build"), f"{path}.esxi_build"),
            cluster=r.optional_string(m.get("cluster"), f"{path}.cluster"),
        )

    def _datastore(self, node: yaml.Node, path: str) -> LabDatastore:
        r = self.r
        m = r.mapping(node, path, _DATASTORE, required=("name",))
        cap = r.size(m["capacity"], f"{path}.capacity") if "capacity" in m else None
        free = r.size(m["free"], f"{path}.free") if "free" in m else None
        if cap is not None and free is not None and free > cap:
            r.fail(m["free"], f"{path}.free", f"free space {free} exceeds capacity {cap}")
        return LabDatastore(
            name=r.string(m["name"], f"{path}.name"),
            type=r.choice(m["type"], f"{path}.type", ("VMFS", "NFS", "NFS41", "vsan", "vvol"))
            if "type" in m
            else "VMFS",
            capacity=cap,
            free=free,
        )

    def _vm(self, node: yaml.Node, path: str, index: int, hosts: set[str], dss: set[str], nets: set[str]) -> LabVM:
        r = self.r
        m = r.mapping(node, path, _VM, required=("name", "guest_id", "host", "disks"))
        name = r.string(m["name"], f"{path}.name")
        host = r.string(m["host"], f"{path}.host")
        if host not in hosts:
            r.fail(m["host"], f"{path}.host", f"unknown host {host!r} (hosts: {', '.join(sorted(hosts))})")
        kw: dict[str, object] = {}
        for key in ("guest_full_name", "hostname", "hardware_version", "folder", "annotation"):
            if key in m:
                kw[key] = r.optional_string(m[key], f"{path}.{key}")
        if "power" in m:
            kw["power"] = r.choice(m["power"], f"{path}.power", _POWER)
        if "firmware" in m:
            kw["firmware"] = r.choice(m["firmware"], f"{path}.firmware", ("bios", "efi"))
        for key in ("secure_boot", "vtpm", "cbt", "consolidation_needed"):
            if key in m:
                kw[key] = r.boolean(m[key], f"{path}.{key}")
        if kw.get("secure_boot") and kw.get("firmware", "bios") != "efi":
            r.fail(m["secure_boot"], f"{path}.secure_boot", "secure boot needs firmware: efi")
        if "cpus" in m:
            kw["cpus"] = r.integer(m["cpus"], f"{path}.cpus", 1, 768)
        if "cores_per_socket" in m:
            kw["cores_per_socket"] = r.integer(m["cores_per_socket"], f"{path}.cores_per_socket", 1, 768)
        if "memory" in m:
            kw["memory_mib"] = r.size(m["memory"], f"{path}.memory", minimum=1024**2) // 1024**2
        if "tools" in m:
            t = r.mapping(m["tools"], f"{path}.tools", _TOOLS)
            if "status" in t:
                kw["tools_status"] = r.choice(t["status"], f"{path}.tools.status", _TOOLS_STATUS)
            if "version" in t:
                kw["tools_version"] = r.optional_string(t["version"], f"{path}.tools.version")
        if "devices" in m:
            d = r.mapping(m["devices"], f"{path}.devices", _DEVICES)
            for key, attr in (
                ("usb", "usb_devices"),
                ("pci_passthrough", "pci_passthrough"),
                ("sriov_nics", "sriov_nics"),
            ):
                if key in d:
                    kw[attr] = r.integer(d[key], f"{path}.devices.{key}", 0)
        disk_nodes = r.sequence(m["disks"], f"{path}.disks")
        disks = tuple(self._disk(n, f"{path}.disks[{i}]", name, i, dss) for i, n in enumerate(disk_nodes))
        nic_nodes = r.sequence(m["nics"], f"{path}.nics") if "nics" in m else []
        nics = tuple(self._nic(n, f"{path}.nics[{i}]", i, nets) for i, n in enumerate(nic_nodes))
        parts = tuple(
            self._partition(n, f"{path}.partitions[{i}]")
            for i, n in enumerate(r.sequence(m["partitions"], f"{path}.partitions") if "partitions" in m else [])
        )
        snaps = tuple(
            self._snapshot(n, f"{path}.snapshots[{i}]")
            for i, n in enumerate(r.sequence(m["snapshots"], f"{path}.snapshots") if "snapshots" in m else [])
        )
        uuid = r.string(m["uuid"], f"{path}.uuid") if "uuid" in m else _uuid_for(name)
        return LabVM(
            name=name,
            moref=f"vm-{101 + index}",
            uuid=uuid,
            guest_id=r.string(m["guest_id"], f"{path}.guest_id"),
            host=host,
            disks=disks,
            nics=nics,
            partitions=parts,
            snapshots=snaps,
            **kw,  # type: ignore[arg-type]
        )

    def _disk(self, node: yaml.Node, path: str, vm: str, index: int, dss: set[str]) -> LabDisk:
        r = self.r
        m = r.mapping(node, path, _DISK, required=("datastore",) if "image" in m_keys(node) else ("size", "datastore"))
        image = self._image(m["image"], f"{path}.image") if "image" in m else None
        if image is not None and "layout" in m:
            r.fail(m["layout"], f"{path}.layout", "a disk with an image has no layout (the image is its content)")
        image_size = _image_size(image) if image is not None else None
        cap = r.size(m["size"], f"{path}.size", minimum=SECTOR) if "size" in m else int(image_size or 0)
        if image_size is not None and cap != image_size:
            r.fail(m.get("size", node), f"{path}.size", f"the image is {image_size} bytes; size must match it")
        if cap % SECTOR:
            r.fail(m["size"], f"{path}.size", f"must be a multiple of {SECTOR} bytes, got {cap}")
        ds = r.string(m["datastore"], f"{path}.datastore")
        if ds not in dss:
            r.fail(
                m["datastore"], f"{path}.datastore", f"unknown datastore {ds!r} (datastores: {', '.join(sorted(dss))})"
            )
        default_file = f"[{ds}] {vm}/{vm}.vmdk" if index == 0 else f"[{ds}] {vm}/{vm}_{index}.vmdk"
        file = r.string(m["file"], f"{path}.file") if "file" in m else default_file
        if not file.startswith(f"[{ds}] ") or not file.endswith(".vmdk"):
            r.fail(m.get("file", node), f"{path}.file", f'expected "[{ds}] folder/name.vmdk", got {file!r}')
        layout = tuple(
            self._region(n, f"{path}.layout[{i}]", cap, f"{vm}/disk{index}")
            for i, n in enumerate(r.sequence(m["layout"], f"{path}.layout") if "layout" in m else [])
        )
        for i in range(1, len(layout)):
            if layout[i].offset < layout[i - 1].end:
                r.fail(m["layout"].value[i], f"{path}.layout[{i}]", "regions must be sorted by 'at' and not overlap")
        kw: dict[str, object] = {}
        if "thin" in m:
            kw["thin"] = r.boolean(m["thin"], f"{path}.thin")
        if "mode" in m:
            kw["mode"] = r.choice(m["mode"], f"{path}.mode", _MODES)
        if "sharing" in m:
            kw["sharing"] = r.choice(m["sharing"], f"{path}.sharing", ("sharingNone", "sharingMultiWriter"))
        if "rdm" in m:
            kw["rdm"] = r.choice(m["rdm"], f"{path}.rdm", ("physical", "virtual"))
        if "controller" in m:
            kw["controller"] = r.choice(m["controller"], f"{path}.controller", _CONTROLLERS)
        if "controller_model" in m:
            kw["controller_model"] = r.optional_string(m["controller_model"], f"{path}.controller_model")
        if "partition_style" in m:
            kw["partition_style"] = r.choice(m["partition_style"], f"{path}.partition_style", ("mbr", "gpt"))
        label = r.string(m["label"], f"{path}.label") if "label" in m else f"Hard disk {index + 1}"
        return LabDisk(key=2000 + index, label=label, capacity=cap, datastore=ds, file=file, layout=layout,
                       image=image, **kw)  # type: ignore[arg-type]

    def _image(self, node: yaml.Node, path: str) -> str:
        value = self.r.string(node, path)
        if value == GUEST_IMAGE:
            return value
        p = Path(value)
        if not p.is_absolute():
            p = (self.path.parent / p).absolute()
        if not p.is_file():
            self.r.fail(node, path, f"expected 'guest' or a raw disk image file; {p} is not a file")
        return str(p)

    def _region(self, node: yaml.Node, path: str, capacity: int, tag: str) -> Region:
        r = self.r
        m = r.mapping(node, path, _REGION, required=("at", "size", "fill"))
        offset = r.size(m["at"], f"{path}.at")
        length = r.size(m["size"], f"{path}.size", minimum=1)
        if offset + length > capacity:
            r.fail(node, path, f"region [{offset}, {offset + length}) ends past the disk's size {capacity}")
        fill = r.choice(m["fill"], f"{path}.fill", FILLS)
        seed = (
            r.integer(m["seed"], f"{path}.seed") if "seed" in m else int.from_bytes(tag.encode()[-4:], "big") + offset
        )
        value = 0
        text = ""
        if fill == "byte":
            if "value" not in m:
                r.fail(node, f"{path}.value", "fill: byte needs 'value' (0..255)")
            value = r.integer(m["value"], f"{path}.value", 0, 255)
        if fill == "text":
            if "text" not in m:
                r.fail(node, f"{path}.text", "fill: text needs 'text'")
            text = r.string(m["text"], f"{path}.text")
            if not text:
                r.fail(m["text"], f"{path}.text", "must not be empty")
        if fill == "counter":
            text = tag
        return Region(offset=offset, length=length, fill=fill, seed=seed, value=value, text=text)

    def _nic(self, node: yaml.Node, path: str, index: int, nets: set[str]) -> LabNic:
        r = self.r
        m = r.mapping(node, path, _NIC, required=("network", "mac"))
        net = r.string(m["network"], f"{path}.network")
        if nets and net not in nets:
            r.fail(m["network"], f"{path}.network", f"unknown network {net!r} (networks: {', '.join(sorted(nets))})")
        mac = r.string(m["mac"], f"{path}.mac")
        if not _mac_ok(mac):
            r.fail(m["mac"], f"{path}.mac", f"expected a MAC address like 00:50:56:aa:bb:cc, got {mac!r}")
        kw: dict[str, object] = {}
        for key in ("connected", "start_connected"):
            if key in m:
                kw[key] = r.boolean(m[key], f"{path}.{key}")
        if "type" in m:
            kw["adapter_type"] = r.choice(
                m["type"], f"{path}.type", ("vmxnet3", "e1000e", "e1000", "vmxnet2", "pcnet32")
            )
        ips = r.string_list(m["ips"], f"{path}.ips") if "ips" in m else ()
        label = r.string(m["label"], f"{path}.label") if "label" in m else f"Network adapter {index + 1}"
        return LabNic(key=4000 + index, label=label, network=net, mac=mac.lower(), ips=ips, **kw)  # type: ignore[arg-type]

    def _snapshot(self, node: yaml.Node, path: str) -> LabSnapshot:
        r = self.r
        m = r.mapping(node, path, _SNAPSHOT, required=("name",))
        return LabSnapshot(
            name=r.string(m["name"], f"{path}.name"),
            created=r.optional_string(m.get("created"), f"{path}.created"),
            description=r.optional_string(m.get("description"), f"{path}.description"),
            quiesced=r.boolean(m["quiesced"], f"{path}.quiesced") if "quiesced" in m else False,
        )

    def _partition(self, node: yaml.Node, path: str) -> LabPartition:
        r = self.r
        m = r.mapping(node, path, _PARTITION, required=("mount",))
        return LabPartition(
            mount=r.string(m["mount"], f"{path}.mount"),
            capacity=r.size(m["capacity"], f"{path}.capacity") if "capacity" in m else None,
            free=r.size(m["free"], f"{path}.free") if "free" in m else None,
            filesystem=r.optional_string(m.get("filesystem"), f"{path}.filesystem"),
        )


def load_lab(path: str | Path) -> Lab:
    """Read and validate a lab file; raise :class:`InputError` (exit 3) with ``file:line`` on any problem."""
    return LabParser(Path(path)).parse()
