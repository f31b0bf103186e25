"""The lab file: a small vSphere estate described in YAML, for the fake vCenter.

``examples/lab.yaml`` is the reference; its comments document every key.  A lab
describes one vCenter with hosts, datastores and VMs; each VM disk has a
*layout* (which regions hold which data) so the fake can build sparse disk
files with real, reproducible content.

* :func:`scmt_cli.lab.parse.load_lab` reads and validates a lab file.  Every
  problem is an :class:`~scmt_cli.errors.InputError` (exit 3) naming
  ``file:line:column``, the field path and what was expected (unknown keys
  suggest the closest valid one).
* :func:`scmt_cli.lab.inventory.lab_inventory` turns a lab into the normalized
  :class:`~scmt_cli.domain.inventory.Inventory` that assessment reads.

This module holds only the data model; it imports nothing else of the lab.

Sizes accept integers (bytes) or strings such as ``"64 MiB"``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

LAB_FORMAT_VERSION = 1
SECTOR = 512
FILLS = ("random", "byte", "text", "zero", "counter")


@dataclass(frozen=True)
class Region:
    """``length`` bytes at ``offset`` filled by ``fill``.

    ``random``: bytes from a PRNG seeded with ``seed``; ``byte``: every byte is
    ``value``; ``text``: ``text`` repeated; ``zero``: allocated zeroes;
    ``counter``: every 512-byte sector starts with ``"<tag> sector <n>\\n"``
    (n = absolute sector number) and is padded with ``.``.
    """

    offset: int
    length: int
    fill: str
    seed: int = 0
    value: int = 0
    text: str = ""

    @property
    def end(self) -> int:
        return self.offset + self.length

    def render(self, tag: str) -> bytes:
        """The region's bytes (``tag`` labels ``counter`` sectors)."""
        if self.fill == "random":
            return random.Random(self.seed).randbytes(self.length)  # noqa: S311 - test data, not crypto
        if self.fill == "byte":
            return bytes([self.value]) * self.length
        if self.fill == "text":
            raw = self.text.encode()
            return (raw * (self.length // len(raw) + 1))[: self.length]
        if self.fill == "zero":
            return bytes(self.length)
        out = bytearray()
        first = self.offset // SECTOR
        for n in range(first, first + (self.length + SECTOR - 1) // SECTOR):
            head = f"{tag} sector {n}\n".encode()
            out += head[:SECTOR].ljust(SECTOR, b".")
        return bytes(out[: self.length])


@dataclass(frozen=True)
class LabDisk:
    key: int
    label: str
    capacity: int
    datastore: str
    file: str  # "[ds] vm/vm.vmdk"
    thin: bool = True
    mode: str = "persistent"
    sharing: str = "sharingNone"
    rdm: str | None = None
    controller: str = "scsi"
    controller_model: str | None = "pvscsi"
    partition_style: str | None = None
    layout: tuple[Region, ...] = ()
    image: str | None = None  # "guest" (the bootable lab guest) or an absolute path to a raw disk image

    @property
    def used(self) -> int:
        if self.image is not None:
            return image_allocated(self.image)
        return sum(r.length for r in self.layout)


GUEST_IMAGE = "guest"


def image_path(image: str) -> Path:
    """The raw file behind a disk's ``image`` (``guest``: the cached lab guest, built when missing)."""
    if image == GUEST_IMAGE:
        from scmt_cli.lab.guest import ensure_image

        return ensure_image().path
    return Path(image)


def image_allocated(image: str) -> int:
    """Bytes allocated in the image file, without building anything (0 when not built yet)."""
    if image == GUEST_IMAGE:
        from scmt_cli.lab.guest import cached_image

        found = cached_image()
        return found.allocated if found is not None else 0
    try:
        return Path(image).stat().st_blocks * 512
    except OSError:
        return 0


@dataclass(frozen=True)
class LabNic:
    key: int
    label: str
    network: str
    mac: str
    ips: tuple[str, ...] = ()
    connected: bool = True
    start_connected: bool = True
    adapter_type: str = "vmxnet3"


@dataclass(frozen=True)
class LabSnapshot:
    name: str
    created: str | None = None
    description: str | None = None
    quiesced: bool = False


@dataclass(frozen=True)
class LabPartition:
    mount: str
    capacity: int | None = None
    free: int | None = None
    filesystem: str | None = None


@dataclass(frozen=True)
class LabVM:
    name: str
    moref: str
    uuid: str
    guest_id: str
    host: str
    guest_full_name: str | None = None
    power: str = "poweredOn"
    firmware: str = "bios"
    secure_boot: bool = False
    vtpm: bool = False
    cpus: int = 2
    cores_per_socket: int = 1
    memory_mib: int = 2048
    hostname: str | None = None
    tools_status: str = "running"
    tools_version: str | None = "12352"
    hardware_version: str = "vmx-19"
    cbt: bool = True
    folder: str | None = None
    annotation: str | None = None
    usb_devices: int = 0
    pci_passthrough: int = 0
    sriov_nics: int = 0
    consolidation_needed: bool = False
    disks: tuple[LabDisk, ...] = ()
    nics: tuple[LabNic, ...] = ()
    partitions: tuple[LabPartition, ...] = ()
    snapshots: tuple[LabSnapshot, ...] = ()


@dataclass(frozen=True)
class LabHost:
    name: str
    esxi_version: str
    esxi_build: str | None = None
    cluster: str | None = None


@dataclass(frozen=True)
class LabDatastore:
    name: str
    type: str = "VMFS"
    capacity: int | None = None
    free: int | None = None


@dataclass(frozen=True)
class Lab:
    """A validated lab.  ``path`` is the file it came from (for messages)."""

    path: str
    vcenter_name: str = "vcsa.lab.test"
    vcenter_version: str = "7.0.3"
    datacenter: str = "DC1"
    user: str = "administrator@vsphere.local"
    password: str = field(default="lab-password", repr=False)
    hosts: tuple[LabHost, ...] = ()
    datastores: tuple[LabDatastore, ...] = ()
    networks: tuple[str, ...] = ()
    vms: tuple[LabVM, ...] = ()

    def vm(self, name: str) -> LabVM | None:
        return next((v for v in self.vms if v.name == name), None)

    def host(self, name: str) -> LabHost | None:
        return next((h for h in self.hosts if h.name == name), None)
