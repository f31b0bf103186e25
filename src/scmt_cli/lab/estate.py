"""The fake vCenter's state: VMs from a lab file, their disks, power, NICs, snapshots, CBT.

A :class:`FakeEstate` is the "server side": it owns the sparse disk files under
``workdir``, serves ``/folder`` over real HTTP (:mod:`fakehttp`) and applies
operations with vSphere's rules and faults.  Clients talk to it through
:class:`scmt_cli.lab.vcenter.FakeVCenter` (the :class:`~scmt_cli.vsphere.api.VCenter`
implementation), which logs in over HTTP first.

vSphere behaviour modelled (each violation raises :class:`VimFault`, which the
client turns into a SourceOperationError naming VM and step):

* powering on a powered-on VM / off a powered-off VM: ``InvalidPowerState``;
* removing a missing snapshot, or any call on a deleted VM: ``ManagedObjectNotFound``;
* guest shutdown without running VMware Tools: ``ToolsUnavailable``;
* snapshots of VMs with multi-writer or physical-RDM disks: ``SnapshotFault``;
* CBT turned on in the config only becomes active after a stun (snapshot
  create) or a power-on; each activation starts a new change-id UUID.
* snapshots do not freeze independent disks; only the oldest snapshot's disks
  are plain flat files readable over ``/folder``.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scmt_cli.lab.disk import FakeDisk
from scmt_cli.lab.model import Lab, LabVM
from scmt_cli.lab.server import FakeHttpServer, FileView
from scmt_cli.vsphere.folder import flat_path, split_datastore_path


class VimFault(Exception):
    """A vSphere fault: ``fault`` is the vSphere fault name, ``message`` its text."""

    def __init__(self, fault: str, message: str) -> None:
        super().__init__(f"{fault}: {message}")
        self.fault = fault
        self.message = message


@dataclass
class FakeSnapshot:
    id: str
    name: str
    created: str
    description: str = ""
    quiesced: bool = False
    parent: str | None = None
    disk_keys: tuple[int, ...] = ()  # disks frozen by this snapshot (independent ones are not)


@dataclass
class FakeNic:
    key: int
    label: str
    network: str
    mac: str
    ips: tuple[str, ...]
    connected: bool
    start_connected: bool
    adapter_type: str


@dataclass
class FakeVM:
    spec: LabVM
    name: str
    power: str
    cbt_config: bool
    disks: dict[int, FakeDisk]
    nics: list[FakeNic]
    annotation: str | None
    snapshots: list[FakeSnapshot] = field(default_factory=list)
    deleted: bool = False
    tools_running: bool = True


class FakeEstate:
    """The fake vCenter's inventory and data, plus its HTTP endpoint."""

    def __init__(self, lab: Lab, workdir: Path, *, tls: bool = True, cbt_window: int = 4 * 1024 * 1024) -> None:
        self.lab = lab
        self.workdir = workdir
        self.cbt_window = cbt_window
        self.shutdown_delay = 0.05  # seconds a guest takes to shut down
        self.lock = threading.RLock()
        self.cbt_queries = 0
        self._ids = itertools.count(1)
        self._faults: list[list[object]] = []  # [op, vm or None, fault, message, times left]
        self.vms: dict[str, FakeVM] = {}
        files: dict[str, FakeDisk] = {}
        for spec in lab.vms:
            disks: dict[int, FakeDisk] = {}
            for d in spec.disks:
                disk = files.get(d.file)
                if disk is None:
                    ds, rel = split_datastore_path(d.file)
                    disk = FakeDisk(d, workdir / "disks" / ds / rel, f"{spec.name}/disk{d.key - 2000}")
                    files[d.file] = disk
                disks[d.key] = disk
            nics = [
                FakeNic(n.key, n.label, n.network, n.mac, n.ips, n.connected and spec.power == "poweredOn",
                        n.start_connected, n.adapter_type)
                for n in spec.nics
            ]  # fmt: skip
            vm = FakeVM(
                spec=spec,
                name=spec.name,
                power=spec.power,
                cbt_config=spec.cbt,
                disks=disks,
                nics=nics,
                annotation=spec.annotation,
                tools_running=spec.tools_status == "running",
            )
            self.vms[spec.name] = vm
            if spec.cbt and spec.power == "poweredOn":
                self._activate_cbt(vm)
            for s in spec.snapshots:
                self._snapshot(vm, s.name, s.description or "", s.quiesced, created=s.created)
        self.http = FakeHttpServer(
            workdir / "datastores",
            self._resolve,
            user=lab.user,
            password=lab.password,
            info={"name": lab.vcenter_name, "version": lab.vcenter_version},
            tls=tls,
        )
        self.base_url = ""

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> str:
        """Start the HTTP endpoint; returns the SDK URL (``https://127.0.0.1:PORT/sdk``)."""
        if not self.base_url:
            self.base_url = self.http.start()
        return self.base_url + "/sdk"

    def stop(self) -> None:
        self.http.stop()
        self.base_url = ""

    # -- lookups -----------------------------------------------------------------
    def vm(self, name: str) -> FakeVM:
        vm = self.vms.get(name)
        if vm is None or vm.deleted:
            raise VimFault("ManagedObjectNotFound", f"virtual machine {name!r} does not exist")
        return vm

    def snapshot(self, vm: FakeVM, snap_id: str) -> FakeSnapshot:
        for s in vm.snapshots:
            if s.id == snap_id:
                return s
        raise VimFault("ManagedObjectNotFound", f"snapshot {snap_id!r} does not exist on {vm.name}")

    def disk(self, vm: FakeVM, key: int) -> FakeDisk:
        disk = vm.disks.get(key)
        if disk is None:
            raise VimFault("InvalidArgument", f"{vm.name} has no disk with key {key}")
        return disk

    def resize_disk(self, name: str, key: int, capacity: int) -> None:
        """Extend a disk, refused like vSphere while the VM has snapshots or to shrink."""
        with self.lock:
            disk = self.disk(self.vm(name), key)
            try:
                disk.grow(capacity)
            except ValueError as exc:
                raise VimFault("InvalidDeviceOperation", str(exc)) from None

    def inject_fault(
        self, op: str, vm: str | None = None, fault: str = "SystemError", message: str = "injected", times: int = 1
    ) -> None:
        """Tests: the next ``times`` calls of ``op`` (``create_snapshot``, ``remove_snapshot``,
        ``power_on``, ``power_off``, ``shutdown_guest``, ``set_nics_connected``, ``open_disk``)
        on ``vm`` (any VM when None) fail with vSphere fault ``fault``."""
        with self.lock:
            self._faults.append([op, vm, fault, message, times])

    def _check_fault(self, op: str, vm: str) -> None:
        for entry in self._faults:
            if entry[0] == op and entry[1] in (None, vm) and int(entry[4]) > 0:  # type: ignore[call-overload]
                entry[4] = int(entry[4]) - 1  # type: ignore[call-overload]
                raise VimFault(str(entry[2]), str(entry[3]))

    def delete_vm(self, name: str) -> None:
        """Tests: the VM disappears (as if someone deleted it between two calls)."""
        with self.lock:
            self.vm(name).deleted = True

    # -- CBT ---------------------------------------------------------------------
    def _activate_cbt(self, vm: FakeVM) -> None:
        for disk in vm.disks.values():
            if not disk.cbt_active and disk.spec.rdm != "physical":
                disk.reset_cbt(True)

    def set_cbt(self, name: str, enabled: bool) -> None:
        """Change ``changeTrackingEnabled`` (takes effect at the next stun or power-on)."""
        with self.lock:
            vm = self.vm(name)
            vm.cbt_config = enabled
            if not enabled:
                for disk in vm.disks.values():
                    disk.reset_cbt(False)

    def reset_cbt(self, name: str) -> None:
        """Tests: CBT resets (as after a storage vMotion or a crash): new UUID, old change ids invalid."""
        with self.lock:
            for disk in self.vm(name).disks.values():
                if disk.cbt_active:
                    disk.reset_cbt(True)

    # -- snapshots ---------------------------------------------------------------
    def _snapshot(self, vm: FakeVM, name: str, description: str, quiesce: bool, created: str | None = None) -> str:
        snap_id = f"snapshot-{next(self._ids)}"
        keys = tuple(k for k, d in vm.disks.items() if not d.spec.mode.startswith("independent"))
        for key in keys:
            vm.disks[key].freeze(snap_id)
        vm.snapshots.append(
            FakeSnapshot(
                id=snap_id,
                name=name,
                created=created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                description=description,
                quiesced=quiesce,
                parent=vm.snapshots[-1].id if vm.snapshots else None,
                disk_keys=keys,
            )
        )
        return snap_id

    def create_snapshot(self, name: str, snap_name: str, quiesce: bool, description: str) -> str:
        with self.lock:
            vm = self.vm(name)
            self._check_fault("create_snapshot", name)
            for disk in vm.disks.values():
                if disk.spec.sharing == "sharingMultiWriter":
                    raise VimFault("SnapshotFault", "snapshots are not supported on VMs with multi-writer disks")
                if disk.spec.rdm == "physical":
                    raise VimFault("SnapshotFault", "snapshots are not supported with physical-mode RDM disks")
            if quiesce and (vm.power != "poweredOn" or not vm.tools_running):
                raise VimFault("ToolsUnavailable", "quiescing needs VMware Tools running in the guest")
            if vm.cbt_config and vm.power == "poweredOn":
                self._activate_cbt(vm)  # the stun activates a pending CBT change
            return self._snapshot(vm, snap_name, description, quiesce)

    def remove_snapshot(self, name: str, snap_id: str) -> None:
        with self.lock:
            vm = self.vm(name)
            self._check_fault("remove_snapshot", name)
            snap = self.snapshot(vm, snap_id)
            for key in snap.disk_keys:
                vm.disks[key].release(snap_id)
            vm.snapshots.remove(snap)
            for other in vm.snapshots:
                if other.parent == snap_id:
                    other.parent = snap.parent

    # -- data --------------------------------------------------------------------
    def guest_write(self, name: str, key: int, offset: int, data: bytes) -> bool:
        """A guest write to a live disk; False (nothing written) when the VM is not running."""
        with self.lock:
            vm = self.vm(name)
            if vm.power != "poweredOn":
                return False
            disk = self.disk(vm, key)
        disk.write(offset, data)
        return True

    def readable_view(self, name: str, snap_id: str, key: int) -> tuple[FakeDisk, str]:
        """Check that ``key`` of ``snap_id`` is a flat file /folder can serve; return (disk, flat path)."""
        with self.lock:
            vm = self.vm(name)
            self._check_fault("open_disk", name)
            snap = self.snapshot(vm, snap_id)
            disk = self.disk(vm, key)
            if disk.spec.rdm == "physical":
                raise VimFault("FileFault", f"disk {key} is a physical-mode RDM; it has no flat file to read")
            if key not in snap.disk_keys:
                if vm.power == "poweredOn":
                    raise VimFault("FileLocked", f"disk {key} is independent and in use; power the VM off to copy it")
                return disk, flat_path(disk.spec.file)
            if vm.snapshots[0].id != snap_id:
                raise VimFault(
                    "NotSupported",
                    f"disk {key} of snapshot {snap_id} is a delta in a snapshot chain "
                    f"({vm.snapshots.index(snap)} older snapshots); /folder can read only the base disk",
                )
            return disk, flat_path(disk.spec.file)

    def _resolve(self, datastore: str, rel: str) -> FileView | None:
        """HTTP side: a VM disk's flat file, as frozen by its VM's oldest snapshot (else live)."""
        with self.lock:
            for vm in self.vms.values():
                if vm.deleted:
                    continue
                for key, disk in vm.disks.items():
                    ds, drel = split_datastore_path(disk.spec.file)
                    if ds != datastore or flat_path(drel) != rel:
                        continue
                    base = next((s for s in vm.snapshots if key in s.disk_keys), None)
                    return _DiskView(disk, base.id if base else None)
        return None

    # -- power and devices ---------------------------------------------------------
    def power_on(self, name: str) -> None:
        with self.lock:
            vm = self.vm(name)
            self._check_fault("power_on", name)
            if vm.power == "poweredOn":
                raise VimFault("InvalidPowerState", "the VM is already powered on")
            vm.power = "poweredOn"
            vm.tools_running = vm.spec.tools_status == "running"
            for nic in vm.nics:
                nic.connected = nic.start_connected
            if vm.cbt_config:
                self._activate_cbt(vm)

    def power_off(self, name: str) -> None:
        with self.lock:
            vm = self.vm(name)
            self._check_fault("power_off", name)
            if vm.power == "poweredOff":
                raise VimFault("InvalidPowerState", "the VM is already powered off")
            vm.power = "poweredOff"
            for nic in vm.nics:
                nic.connected = False

    def shutdown_guest(self, name: str) -> None:
        """Start a guest shutdown; the VM powers off ``shutdown_delay`` seconds later."""
        with self.lock:
            vm = self.vm(name)
            self._check_fault("shutdown_guest", name)
            if vm.power != "poweredOn":
                raise VimFault("InvalidPowerState", "the VM is not powered on")
            if not vm.tools_running:
                raise VimFault("ToolsUnavailable", "VMware Tools are not running in the guest")
            delay = self.shutdown_delay
        if delay < 0:
            return  # tests: a guest that ignores the request

        def _down() -> None:
            time.sleep(delay)
            with self.lock:
                if vm.power == "poweredOn":
                    vm.power = "poweredOff"
                    for nic in vm.nics:
                        nic.connected = False

        threading.Thread(target=_down, name=f"fake-shutdown-{name}", daemon=True).start()

    def set_nics_connected(self, name: str, connected: bool) -> None:
        with self.lock:
            vm = self.vm(name)
            self._check_fault("set_nics_connected", name)
            for nic in vm.nics:
                nic.start_connected = connected
                nic.connected = connected and vm.power == "poweredOn"

    def annotate(self, name: str, text: str) -> None:
        with self.lock:
            self.vm(name).annotation = text

    def rename(self, name: str, new_name: str) -> None:
        with self.lock:
            vm = self.vm(name)
            if new_name in self.vms and not self.vms[new_name].deleted:
                raise VimFault("DuplicateName", f"a VM named {new_name!r} already exists")
            del self.vms[name]
            vm.name = new_name
            self.vms[new_name] = vm


@dataclass
class _DiskView:
    disk: FakeDisk
    freeze: str | None

    @property
    def size(self) -> int:
        return self.disk.capacity

    def read(self, offset: int, length: int) -> bytes:
        return self.disk.read(offset, length, self.freeze)
