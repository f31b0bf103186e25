"""The target platform contract: where migrated VMs are created and run.

A *platform* turns a :class:`TargetVmSpec` into a VM on the KVM side and
drives its power and network.  Two implementations exist, chosen by the plan's
``target.type`` through :func:`open_platform`:

* ``dir`` (:mod:`scmt_cli.targets.dir`, the embedded default): a folder per VM
  with the disks, a libvirt domain XML ready for ``virsh define`` and a
  ``state.json`` record of power and network state;
* ``libvirt`` (:mod:`scmt_cli.targets.libvirt`): a real libvirt connection.

Contract every platform honours:

* every method is idempotent: starting a running VM, stopping a stopped one,
  disconnecting a disconnected network or re-preparing a prepared disk
  succeeds and returns the current state;
* :meth:`TargetPlatform.prepare_disks` never shrinks or truncates an existing
  disk (a rerun must not destroy copied data); a disk that exists with a
  larger size than requested raises :class:`~scmt_cli.errors.SizeMismatchError`;
* failures raise :class:`~scmt_cli.errors.TargetPlatformError` (exit 50) naming
  the VM and the step, bad configuration :class:`~scmt_cli.errors.PlanError`
  or :class:`~scmt_cli.errors.ConfigError`;
* nothing prints: progress and warnings go to the :class:`~scmt_cli.events.Reporter`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from scmt_cli.errors import PlanError
from scmt_cli.events import NullReporter, Reporter

DiskFormat = Literal["raw", "qcow2"]
DiskBus = Literal["virtio", "scsi", "sata", "ide"]
NicModel = Literal["virtio", "e1000e", "e1000", "rtl8139"]
TargetFirmware = Literal["bios", "efi"]
PowerState = Literal["running", "shutoff", "paused"]
PlatformType = Literal["dir", "libvirt"]

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_BAD_NAME = re.compile(r"[\x00-\x1f/\\]")


def check_vm_name(name: str) -> str:
    """Return ``name`` if it can name a target VM (a folder and a libvirt domain).

    Raises :class:`PlanError` for empty names, ``.``/``..``, slashes and control
    characters.
    """
    if not name or name in (".", "..") or _BAD_NAME.search(name) or name.startswith("-"):
        raise PlanError(
            f"VM name {name!r} cannot name a target VM: expected a non-empty name without '/', '\\', "
            "control characters or a leading '-', and not '.' or '..'"
        )
    return name


def normalize_mac(mac: str, *, vm: str = "VM") -> str:
    """Return ``mac`` as lower-case ``aa:bb:cc:dd:ee:ff`` (``-`` separators allowed).

    Raises :class:`PlanError` for anything else and for multicast addresses.
    """
    value = mac.strip().lower().replace("-", ":")
    if not _MAC.match(value):
        raise PlanError(f"{vm}: MAC address {mac!r} is not of the form aa:bb:cc:dd:ee:ff")
    if int(value[:2], 16) & 1:
        raise PlanError(f"{vm}: MAC address {mac!r} is a multicast address; a NIC needs a unicast one")
    return value


def generate_mac(vm: str, index: int, *, salt: str = "") -> str:
    """A stable MAC in KVM's locally administered ``52:54:00`` range for NIC ``index`` of ``vm``.

    The same inputs always give the same address, so re-defining a VM after a
    crash keeps its MAC; ``salt`` (e.g. the plan name) separates plans.
    """
    digest = hashlib.sha256(f"{salt}\x00{vm}\x00{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


@dataclass(frozen=True)
class TargetDisk:
    """One disk of a target VM as the hypervisor will see it."""

    path: str
    format: DiskFormat = "raw"
    bus: DiskBus = "virtio"


@dataclass(frozen=True)
class TargetNic:
    """One NIC.  ``mac=None`` means "regenerate" (see :func:`generate_mac`).

    ``network`` is a libvirt network name, or ``bridge:NAME`` for a host bridge.
    """

    network: str
    mac: str | None = None
    model: NicModel = "virtio"
    ip: str | None = None  # static address for the guest, CIDR (10.0.0.10/24); set by guest conversion
    gateway: str | None = None
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class TargetVmSpec:
    """Everything a platform needs to define one VM; services fill it from the plan and inventory."""

    name: str
    cpus: int
    memory_mib: int
    firmware: TargetFirmware = "bios"
    secure_boot: bool = False
    disks: tuple[TargetDisk, ...] = ()
    nics: tuple[TargetNic, ...] = ()
    uuid: str | None = None
    description: str | None = None

    def validated(self) -> TargetVmSpec:
        """Return a copy with checked fields and every NIC given a MAC; raise :class:`PlanError`."""
        check_vm_name(self.name)
        if self.cpus < 1:
            raise PlanError(f"{self.name}: cpus must be at least 1 (got {self.cpus})")
        if self.memory_mib < 16:
            raise PlanError(f"{self.name}: memory_mib must be at least 16 (got {self.memory_mib})")
        if self.firmware not in get_args(TargetFirmware):
            raise PlanError(f"{self.name}: firmware {self.firmware!r} is not one of bios, efi")
        if self.secure_boot and self.firmware != "efi":
            raise PlanError(f"{self.name}: secure boot needs firmware 'efi' (got {self.firmware!r})")
        for i, d in enumerate(self.disks):
            if d.format not in get_args(DiskFormat):
                raise PlanError(f"{self.name}: disks[{i}].format {d.format!r} is not one of raw, qcow2")
            if d.bus not in get_args(DiskBus):
                raise PlanError(f"{self.name}: disks[{i}].bus {d.bus!r} is not one of virtio, scsi, sata, ide")
        nics = []
        for i, n in enumerate(self.nics):
            if n.model not in get_args(NicModel):
                raise PlanError(
                    f"{self.name}: nics[{i}].model {n.model!r} is not one of {', '.join(get_args(NicModel))}"
                )
            if not n.network or n.network == "bridge:":
                raise PlanError(f"{self.name}: nics[{i}].network is empty; expected a network or bridge:NAME")
            mac = normalize_mac(n.mac, vm=self.name) if n.mac else generate_mac(self.name, i)
            nics.append(TargetNic(n.network, mac, n.model, ip=n.ip, gateway=n.gateway, dns=n.dns))
        macs = [n.mac for n in nics]
        if len(set(macs)) != len(macs):
            raise PlanError(f"{self.name}: two NICs share one MAC address")
        return TargetVmSpec(
            self.name, self.cpus, self.memory_mib, self.firmware, self.secure_boot,
            self.disks, tuple(nics), self.uuid, self.description,
        )  # fmt: skip


@dataclass(frozen=True)
class DiskRequest:
    """A source disk to prepare on the target: its index in the VM and its size in bytes."""

    index: int
    size_bytes: int


@dataclass(frozen=True)
class PreparedDisk:
    """Where the copy engine writes one disk and what the VM will boot from.

    ``copy_url`` is a ``file://`` URL the engine opens through its ``file``
    transport; ``path``/``format`` are the final disk (equal to the copy file
    for raw disks; for qcow2 the raw copy is converted at cutover by
    :meth:`TargetPlatform.finalize_disks`).
    """

    index: int
    size_bytes: int
    copy_url: str
    copy_path: str
    path: str
    format: DiskFormat

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "size_bytes": self.size_bytes,
            "copy_url": self.copy_url,
            "path": self.path,
            "format": self.format,
        }


@dataclass(frozen=True)
class TargetState:
    """What a platform knows about one VM.  ``defined=False`` means the VM does not exist there."""

    name: str
    defined: bool
    power: PowerState = "shutoff"
    network_connected: bool = False
    platform: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "defined": self.defined,
            "power": self.power,
            "network_connected": self.network_connected,
            "platform": self.platform,
        }


@dataclass(frozen=True)
class ConversionResult:
    """The outcome of guest conversion: ``ran`` is false when it was skipped (see ``warnings``)."""

    vm: str
    ran: bool
    skipped_reason: str | None = None
    argv: tuple[str, ...] = ()
    output: str = ""
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    log_path: str | None = None
    guest: str | None = None  # the OS the converter found ("Debian GNU/Linux 12 (bookworm)")
    virtio_drivers: bool | None = None  # the converter's verdict; None when it did not say
    changes: tuple[str, ...] = ()  # what the converter's output says it changed
    steps: tuple[str, ...] = ()  # its progress steps, in order

    def to_dict(self) -> dict[str, Any]:
        return {
            "vm": self.vm,
            "ran": self.ran,
            "skipped_reason": self.skipped_reason,
            "argv": list(self.argv),
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
            "log": self.log_path,
            "guest": self.guest,
            "virtio_drivers": self.virtio_drivers,
            "changes": list(self.changes),
            "steps": list(self.steps),
        }


@dataclass(frozen=True)
class PlatformSpec:
    """The plan's ``target`` section, as the platforms need it.

    ``path``: the ``dir`` platform's root (one folder per VM) and the libvirt
    platform's disk storage folder.  ``uri``: the libvirt connection URI.
    ``disk_format``: ``raw`` (sparse files) or ``qcow2``.  ``v2v_command``:
    the guest converter (found on ``PATH``).  ``v2v_timeout_s``: how long one
    conversion may run; ``v2v_stall_timeout_s``: how long it may print nothing;
    ``v2v_accel``: ``auto``, ``kvm`` or ``tcg`` (see :mod:`scmt_cli.targets.convert`).
    """

    type: PlatformType = "dir"
    path: str = ""
    uri: str = ""
    disk_format: DiskFormat = "raw"
    v2v_command: str = "virt-v2v-in-place"
    v2v_timeout_s: float = 3600.0
    v2v_stall_timeout_s: float = 600.0
    v2v_accel: str = "auto"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "plan") -> PlatformSpec:
        """Build from a plan's ``target`` mapping; raise :class:`PlanError` naming ``where`` and the field."""
        known = {"type", "path", "uri", "disk_format", "v2v_command", "v2v_timeout_s", "v2v_stall_timeout_s",
                 "v2v_accel"}
        typ = data.get("type", "dir")
        if typ not in get_args(PlatformType):
            raise PlanError(f"{where}: target.type {typ!r} is not one of dir, libvirt")
        fmt = data.get("disk_format", "raw")
        if fmt not in get_args(DiskFormat):
            raise PlanError(f"{where}: target.disk_format {fmt!r} is not one of raw, qcow2")
        for key in ("path", "uri", "v2v_command"):
            if key in data and not isinstance(data[key], str):
                raise PlanError(f"{where}: target.{key} must be a string")
        for key, default in (("v2v_timeout_s", 3600.0), ("v2v_stall_timeout_s", 600.0)):
            value = data.get(key, default)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise PlanError(f"{where}: target.{key} must be a positive number of seconds")
        accel = data.get("v2v_accel", "auto")
        if accel not in ("auto", "kvm", "tcg"):
            raise PlanError(f"{where}: target.v2v_accel {accel!r} is not one of auto, kvm, tcg")
        return cls(
            type=typ,
            path=data.get("path", ""),
            uri=data.get("uri", ""),
            disk_format=fmt,
            v2v_command=data.get("v2v_command", "virt-v2v-in-place"),
            v2v_timeout_s=float(data.get("v2v_timeout_s", 3600.0)),
            v2v_stall_timeout_s=float(data.get("v2v_stall_timeout_s", 600.0)),
            v2v_accel=accel,
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def from_target(cls, target: Any, *, where: str = "plan") -> PlatformSpec:
        """Build from the plan model's ``Target`` (``type``, ``path``, ``uri``, ``disk_format``)."""
        data: dict[str, Any] = {"type": target.type, "disk_format": getattr(target, "disk_format", "raw")}
        if getattr(target, "path", None) is not None:
            data["path"] = str(target.path)
        if getattr(target, "uri", None):
            data["uri"] = str(target.uri)
        return cls.from_mapping(data, where=where)


class TargetPlatform(Protocol):
    """Creates and drives target VMs.  Methods take the VM name; see the module contract."""

    kind: str

    def describe(self) -> str:
        """Where VMs go (a folder or a libvirt URI without secrets)."""

    def prepare_disks(self, vm: str, disks: Sequence[DiskRequest]) -> list[PreparedDisk]:
        """Create (sparse) or reuse the copy destinations for ``vm``'s disks; never truncate data."""

    def finalize_disks(self, vm: str) -> list[PreparedDisk]:
        """Make the final disks from the copies (qcow2: ``qemu-img convert``); a no-op for raw."""

    def define(self, spec: TargetVmSpec) -> TargetState:
        """Define (or redefine) the VM from ``spec``; keeps its power state."""

    def start(self, vm: str) -> TargetState: ...

    def stop(self, vm: str, *, graceful: bool = True, timeout: float = 60.0) -> TargetState:
        """Power off: ACPI shutdown first when ``graceful``, forced off after ``timeout`` seconds."""

    def destroy(self, vm: str, *, remove_disks: bool = False) -> TargetState:
        """Force off and remove the VM's definition (disks kept unless ``remove_disks``)."""

    def set_network(self, vm: str, connected: bool) -> TargetState:
        """Connect or isolate every NIC of ``vm`` (link state up/down)."""

    def state(self, vm: str) -> TargetState: ...

    def convert(self, spec: TargetVmSpec, *, direct: bool = False, job: Any = None,
                folder: Path | None = None) -> ConversionResult:
        """Guest conversion on ``spec``'s disks; ``direct`` skips it (the seed's "Directly Fail Over").

        ``folder`` holds the converter's overlays, its input XML and the commit
        marker (default: the VM's folder); a test failover passes its own
        folder, so nothing of a test conversion lands beside the real disks.

        Call :meth:`finalize_disks` first (conversion works on the final,
        possibly qcow2, disks).  ``job`` is a :class:`scmt_cli.targets.convert.ConvertJob`
        (log file, cache, cancel check, timeout overrides).  A missing converter is a
        warning in the result, disks without an operating system are skipped with
        the reason; a failing, timed-out or stalled one raises
        :class:`~scmt_cli.errors.ConversionError` (exit 52) and leaves the disks
        as they were (see :mod:`scmt_cli.targets.convert`).
        """

    def close(self) -> None: ...


def open_platform(
    spec: PlatformSpec | Mapping[str, Any] | Any,
    *,
    reporter: Reporter | None = None,
    where: str = "plan",
) -> TargetPlatform:
    """Open the platform the plan names (``dir`` or ``libvirt``).

    ``spec`` is a :class:`PlatformSpec`, a plan's ``target`` mapping or the
    plan model's ``Target``.
    A ``dir`` platform needs ``path``; a ``libvirt`` one needs ``uri`` and a
    ``path`` for disk storage.  Missing fields raise :class:`PlanError`; a
    missing ``libvirt-python`` raises :class:`~scmt_cli.errors.ConfigError`.
    """
    if isinstance(spec, PlatformSpec):
        pspec = spec
    elif isinstance(spec, Mapping):
        pspec = PlatformSpec.from_mapping(spec, where=where)
    else:  # the plan model's Target
        pspec = PlatformSpec.from_target(spec, where=where)
    rep: Reporter = reporter or NullReporter()
    if not pspec.path:
        raise PlanError(f"{where}: target.path is required (the folder that holds the target disks)")
    if pspec.type == "dir":
        from scmt_cli.targets.dir import DirPlatform

        return DirPlatform(Path(pspec.path), spec=pspec, reporter=rep)
    if not pspec.uri:
        raise PlanError(f"{where}: target.uri is required for a libvirt target (e.g. qemu:///system)")
    from scmt_cli.targets.libvirt import LibvirtPlatform

    return LibvirtPlatform(pspec.uri, Path(pspec.path), spec=pspec, reporter=rep)
