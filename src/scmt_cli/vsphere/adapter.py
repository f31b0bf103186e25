"""The pyvmomi adapter: :class:`PyVmomiVCenter` implements :class:`~scmt_cli.vsphere.api.VCenter`
against a real vCenter (or govmomi's vcsim).

* TLS comes from :func:`~scmt_cli.vsphere.tls.make_ssl_context` (system CAs,
  ``ca_file``, or a pinned SHA-256 thumbprint checked before credentials are
  sent; ``insecure`` only when asked, with a warning).
* Every call goes through :meth:`PyVmomiVCenter._call`: transient faults
  (dropped connections, ``TaskInProgress``) are retried with tenacity, an
  expired session (``NotAuthenticated``) triggers one re-login, and other
  faults become SourceOperationErrors (13) naming the VM and the step; a
  connection that keeps dropping becomes a SourceUnreachableError (10).
  Retries after a dropped answer are idempotent: create_snapshot finds the
  snapshot the first attempt made (by name, recent), remove_snapshot and
  power on/off accept that the first attempt already did the work.
* ``calls`` counts SOAP round trips per method name (tests assert that the
  inventory takes a bounded number).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from pyVim import connect as _pvconnect
from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from scmt_cli.domain.inventory import Inventory
from scmt_cli.errors import AuthenticationError, ScmtError, SourceOperationError, SourceUnreachableError
from scmt_cli.events import NullReporter, Reporter
from scmt_cli.transports.base import BlockSource
from scmt_cli.vsphere import _pvinventory
from scmt_cli.vsphere.api import (
    ChangedAreas,
    PowerState,
    ShutdownHow,
    SnapshotInfo,
    cbt_reset_reason,
    collect_changed_areas,
    graceful_shutdown,
)
from scmt_cli.vsphere.folder import FolderDiskSource, FolderSession, flat_path, split_datastore_path
from scmt_cli.vsphere.settings import ConnectionSettings
from scmt_cli.vsphere.tls import classify_connect_error, make_ssl_context

# pyvmomi's stubs type the dynamic API loosely; treat it as Any.
vim: Any = _vim
vmodl: Any = _vmodl
pvconnect: Any = _pvconnect

T = TypeVar("T")

_TRANSIENT_FAULTS = (vim.fault.TaskInProgress, vmodl.fault.HostCommunication, vim.fault.HostConnectFault)
_NETWORK = (ConnectionError, http.client.HTTPException, socket.timeout, ssl.SSLEOFError, TimeoutError)


class _Transient(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _fault_text(exc: BaseException) -> str:
    name = getattr(exc, "_wsdlName", None) or type(exc).__name__
    msg = getattr(exc, "msg", None) or ""
    return f"{name}: {msg}" if msg else str(name)


def _capacity(disk: Any) -> int:
    return int(disk.capacityInBytes or (disk.capacityInKB or 0) * 1024)


class PyVmomiVCenter:
    """VCenter over pyvmomi (see module doc).  One instance per thread."""

    def __init__(self, settings: ConnectionSettings, reporter: Reporter | None = None, *, attempts: int = 4) -> None:
        self.settings = settings
        self.reporter: Reporter = reporter or NullReporter()
        self.calls: Counter[str] = Counter()
        self._attempts = attempts
        self._si: Any = None
        self._ctx: ssl.SSLContext | None = None
        self._folder: FolderSession | None = None
        self._vms: dict[str, Any] = {}
        self._datacenter: dict[str, str] = {}
        self._content: Any = None

    # -- session -------------------------------------------------------------------
    def connect(self) -> None:
        if self._si is not None:
            return
        s = self.settings
        if s.insecure:
            self.reporter.log("warning", f"TLS certificate of {s.url} is NOT verified (insecure)", vcenter=s.url)
        self._ctx = make_ssl_context(thumbprint=s.thumbprint, ca_file=s.ca_file, insecure=s.insecure)
        self._login()
        self._folder = FolderSession(s.base_url, self._ctx, self._cookie, self._relogin)

    def _login(self) -> None:
        s = self.settings
        try:
            si = pvconnect.SmartConnect(
                host=s.host, port=s.port, path=s.path, user=s.user, pwd=s.password, sslContext=self._ctx,
                connectionPoolTimeout=-1,
            )  # fmt: skip
        except vim.fault.InvalidLogin:
            raise AuthenticationError(f"{s.user}@{s.host}: login refused (wrong user name or password)") from None
        except vmodl.MethodFault as exc:
            raise SourceOperationError(f"{s.url}: login: {_fault_text(exc)}") from None
        except ScmtError:
            raise
        except Exception as exc:  # noqa: BLE001 - every network/TLS failure is classified
            raise classify_connect_error(exc, s.url) from None
        stub = si._stub
        invoke = stub.InvokeMethod

        def counted(mo: Any, info: Any, args: Any, outer: Any = None) -> Any:
            self.calls[info.wsdlName] += 1
            return invoke(mo, info, args, outer)

        stub.InvokeMethod = counted
        self._si = si
        self._content = si.RetrieveContent()

    def _relogin(self) -> None:
        self.reporter.log("info", f"vCenter session expired; logging in again to {self.settings.url}")
        old, self._si = self._si, None
        if old is not None:
            try:
                pvconnect.Disconnect(old)
            except Exception:  # noqa: BLE001, S110 - the old session is gone anyway
                pass
        self._login()

    def _cookie(self) -> str:
        raw = str(getattr(self._si._stub, "cookie", "") or "")
        return raw.split(";", 1)[0].strip()

    def close(self) -> None:
        if self._folder is not None:
            self._folder.close()
            self._folder = None
        if self._si is not None:
            try:
                pvconnect.Disconnect(self._si)
            except Exception:  # noqa: BLE001, S110 - closing never raises
                pass
            self._si = None

    def __enter__(self) -> PyVmomiVCenter:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the call wrapper -------------------------------------------------------------
    def _call(self, vm: str, step: str, fn: Callable[[], T]) -> T:
        if self._si is None:
            raise SourceOperationError(f"{vm}: {step}: not connected to {self.settings.url}")
        relogged = False

        def once() -> T:
            nonlocal relogged
            try:
                return fn()
            except vim.fault.NotAuthenticated:
                if relogged:
                    raise
                relogged = True
                self._relogin()
                raise _Transient(RuntimeError("session renewed")) from None
            except _TRANSIENT_FAULTS as exc:
                raise _Transient(exc) from None
            except _NETWORK as exc:
                raise _Transient(exc) from None

        runner = retry(
            retry=retry_if_exception(lambda e: isinstance(e, _Transient)),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            reraise=True,
        )(once)
        try:
            return runner()
        except _Transient as exc:
            what = f"{vm}: {step}: gave up after {self._attempts} attempts"
            if isinstance(exc.cause, _NETWORK):  # the vCenter stopped answering: exit 10, not a vSphere fault
                raise SourceUnreachableError(
                    f"{what}: the connection to {self.settings.url} dropped ({type(exc.cause).__name__}: {exc.cause})",
                    hint="check that the vCenter is up and reachable, then rerun (finished work is kept)",
                ) from None
            raise SourceOperationError(f"{what}: {exc.cause}") from None
        except vmodl.MethodFault as exc:
            raise SourceOperationError(f"{vm}: {step}: {_fault_text(exc)}") from None

    # -- lookups -------------------------------------------------------------------------
    def _wait(self, task: Any, timeout: float = 3600.0) -> Any:
        """Poll a task until it ends; return its result or raise its fault.

        Reads only ``info.state/error/result`` (a whole TaskInfo may not
        deserialize: vcsim reports snapshot tasks' entity with the wrong type).
        """
        delay, deadline = 0.05, time.monotonic() + timeout
        while True:
            info = self._props(task, "info.state", "info.error", "info.result")
            state = info.get("info.state")
            if state == "success":
                return info.get("info.result")
            if state == "error":
                raise info.get("info.error") or vim.fault.VimFault(msg="task failed without a fault")
            if time.monotonic() > deadline:
                raise vim.fault.Timedout(msg=f"task did not finish within {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _props(self, obj: Any, *paths: str) -> dict[str, Any]:
        """Some properties of one object in one RetrievePropertiesEx (unset ones are absent).

        Used instead of attribute access, which costs one round trip per property.
        """
        pcq = vmodl.query.PropertyCollector
        spec = pcq.FilterSpec(
            objectSet=[pcq.ObjectSpec(obj=obj, skip=False)],
            propSet=[pcq.PropertySpec(type=type(obj), pathSet=list(paths))],
        )
        res = self._content.propertyCollector.RetrievePropertiesEx([spec], pcq.RetrieveOptions())
        if res is None or not res.objects:
            raise vmodl.fault.ManagedObjectNotFound(msg="the object no longer exists", obj=obj)
        oc = res.objects[0]
        for missing in oc.missingSet or []:
            if isinstance(missing.fault, vmodl.fault.ManagedObjectNotFound):
                raise missing.fault
        return {p.name: p.val for p in oc.propSet or []}

    def _vm(self, name: str) -> Any:
        ref = self._vms.get(name)
        if ref is None:
            content = self._content
            view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
            try:
                pcq = vmodl.query.PropertyCollector
                traversal = pcq.TraversalSpec(name="view", type=vim.view.ContainerView, path="view", skip=False)
                spec = pcq.FilterSpec(
                    objectSet=[pcq.ObjectSpec(obj=view, skip=True, selectSet=[traversal])],
                    propSet=[pcq.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])],
                )
                found = {}
                res = content.propertyCollector.RetrievePropertiesEx([spec], pcq.RetrieveOptions())
                while res is not None:
                    for oc in res.objects or []:
                        found[oc.propSet[0].val] = oc.obj
                    res = content.propertyCollector.ContinueRetrievePropertiesEx(res.token) if res.token else None
                self._vms = found
            finally:
                view.DestroyView()
            ref = self._vms.get(name)
        if ref is None:
            raise vim.fault.NotFound(msg=f"virtual machine {name!r} does not exist")
        return ref

    def _snapshot(self, vm_ref: Any, snap_id: str) -> Any:
        for node, _ in _pvinventory.snapshot_list(self._props(vm_ref, "snapshot").get("snapshot")):
            if node.snapshot._moId == snap_id:
                return node.snapshot
        raise vmodl.fault.ManagedObjectNotFound(msg=f"snapshot {snap_id!r} does not exist")

    @staticmethod
    def _disks(devices: Any) -> dict[int, Any]:
        return {d.key: d for d in devices or [] if isinstance(d, vim.vm.device.VirtualDisk)}

    # -- inventory -----------------------------------------------------------------------
    def inventory(self) -> Inventory:
        def work() -> Inventory:
            objects = _pvinventory.retrieve(self._content)
            about = self._content.about
            return _pvinventory.build_inventory(objects, f"vcenter:{self.settings.host}", about.version)

        return self._call("inventory", "retrieve inventory", work)

    def power_state(self, vm: str) -> PowerState:
        props = self._call(vm, "read power state", lambda: self._props(self._vm(vm), "runtime.powerState"))
        state: PowerState = props["runtime.powerState"]
        return state

    # -- CBT and snapshots -------------------------------------------------------------------
    def enable_cbt(self, vm: str) -> bool:
        ref = self._call(vm, "find VM", lambda: self._vm(vm))
        if self._call(
            vm,
            "read CBT state",
            lambda: bool(self._props(ref, "config.changeTrackingEnabled").get("config.changeTrackingEnabled")),
        ):
            return False
        spec = vim.vm.ConfigSpec(changeTrackingEnabled=True)
        self._call(vm, "enable changed block tracking", lambda: self._wait(ref.ReconfigVM_Task(spec)))
        if self.power_state(vm) == "poweredOn":
            snap = self.create_snapshot(vm, "scmt-cbt-stun", description="stun cycle to activate CBT")
            self.remove_snapshot(vm, snap)
        self.reporter.event("cbt_enabled", vm=vm)
        return True

    def disable_cbt(self, vm: str) -> bool:
        ref = self._call(vm, "find VM", lambda: self._vm(vm))
        if not self._call(
            vm,
            "read CBT state",
            lambda: bool(self._props(ref, "config.changeTrackingEnabled").get("config.changeTrackingEnabled")),
        ):
            return False
        spec = vim.vm.ConfigSpec(changeTrackingEnabled=False)
        self._call(vm, "disable changed block tracking", lambda: self._wait(ref.ReconfigVM_Task(spec)))
        if self.power_state(vm) == "poweredOn":
            snap = self.create_snapshot(vm, "scmt-cbt-stun", description="stun cycle to deactivate CBT")
            self.remove_snapshot(vm, snap)
        self.reporter.event("cbt_disabled", vm=vm)
        return True

    def create_snapshot(self, vm: str, name: str, *, quiesce: bool = False, description: str = "") -> str:
        def work() -> str:
            ref = self._vm(vm)
            for node, _ in _pvinventory.snapshot_list(
                self._props(ref, "snapshot").get("snapshot")
            ):  # a retry may follow success
                if node.name == name and node.createTime and time.time() - node.createTime.timestamp() < 600:
                    return str(node.snapshot._moId)
            task = ref.CreateSnapshot_Task(name=name, description=description, memory=False, quiesce=quiesce)
            return str(self._wait(task)._moId)

        try:
            snap = self._call(vm, "create snapshot", work)
        except SourceUnreachableError as exc:  # the request may have reached vCenter before the line dropped
            raise SourceUnreachableError(
                f"{exc.message}; snapshot {name!r} may exist on the VM (the next run removes the tool's snapshots)",
                hint=exc.hint,
            ) from None
        self.reporter.event("snapshot_created", vm=vm, snapshot=snap, name=name)
        return snap

    def remove_snapshot(self, vm: str, snapshot: str) -> None:
        sent = False

        def work() -> None:
            nonlocal sent
            ref = self._vm(vm)
            try:
                snap = self._snapshot(ref, snapshot)
            except vmodl.fault.ManagedObjectNotFound:
                if sent:  # a retry: the first request removed it, its answer was lost
                    return
                raise
            sent = True
            self._wait(snap.RemoveSnapshot_Task(removeChildren=False))

        self._call(vm, f"remove snapshot {snapshot}", work)
        self.reporter.event("snapshot_removed", vm=vm, snapshot=snapshot)

    def list_snapshots(self, vm: str) -> list[SnapshotInfo]:
        def work() -> list[SnapshotInfo]:
            return [
                SnapshotInfo(
                    id=node.snapshot._moId,
                    name=node.name,
                    created=node.createTime.isoformat() if node.createTime else None,
                    description=node.description or None,
                    quiesced=node.quiesced,
                    parent=parent.snapshot._moId if parent is not None else None,
                )
                for node, parent in _pvinventory.snapshot_list(self._props(self._vm(vm), "snapshot").get("snapshot"))
            ]

        return self._call(vm, "list snapshots", work)

    def _snapshot_disks(self, vm: str, snapshot: str) -> dict[int, Any]:
        snap = self._snapshot(self._vm(vm), snapshot)
        return self._disks(self._props(snap, "config.hardware.device").get("config.hardware.device"))

    def disk_change_ids(self, vm: str, snapshot: str) -> dict[int, str | None]:
        def work() -> dict[int, str | None]:
            return {
                k: getattr(d.backing, "changeId", None) or None for k, d in self._snapshot_disks(vm, snapshot).items()
            }

        return self._call(vm, "read change ids", work)

    def disk_capacities(self, vm: str, snapshot: str) -> dict[int, int]:
        def work() -> dict[int, int]:
            return {k: _capacity(d) for k, d in self._snapshot_disks(vm, snapshot).items()}

        return self._call(vm, "read disk capacities", work)

    def changed_areas(
        self, vm: str, snapshot: str, disk_key: int, change_id: str, *, previous_capacity: int | None = None
    ) -> ChangedAreas:
        step = f"query changed areas of disk {disk_key}"
        ref = self._call(vm, "find VM", lambda: self._vm(vm))
        snap = self._call(vm, "find snapshot", lambda: self._snapshot(ref, snapshot))
        disks = self._call(vm, "read snapshot disks", lambda: self._snapshot_disks(vm, snapshot))
        disk = disks.get(disk_key)
        if disk is None:
            raise SourceOperationError(f"{vm}: {step}: the snapshot has no disk {disk_key}")
        reason = cbt_reset_reason(
            change_id,
            getattr(disk.backing, "changeId", None) or None,
            previous_capacity=previous_capacity,
            capacity=_capacity(disk),
        )
        if reason:
            self.reporter.log("warning", f"{vm}: disk {disk_key}: {reason}; a full resync is needed")
            return ChangedAreas((), reset=True, reason=reason)

        def query(start: int) -> tuple[int, int, list[tuple[int, int]]]:
            info = self._call(
                vm,
                step,
                lambda: ref.QueryChangedDiskAreas(
                    snapshot=snap, deviceKey=disk_key, startOffset=start, changeId=change_id
                ),  # fmt: skip
            )
            return info.startOffset, info.length, [(a.start, a.length) for a in info.changedArea or []]

        try:
            extents, calls = collect_changed_areas(query, _capacity(disk), what=f"{vm}: {step}")
        except SourceOperationError as exc:
            if "FileFault" not in exc.message:
                raise
            reason = f"QueryChangedDiskAreas: {exc.message.split(': ', 2)[-1]}"
            self.reporter.log("warning", f"{vm}: disk {disk_key}: {reason}; a full resync is needed")
            return ChangedAreas((), reset=True, reason=reason)
        return ChangedAreas(tuple(extents), queries=calls)

    def _datacenter_of(self, ref: Any) -> str:
        key = ref._moId
        if key not in self._datacenter:
            cur = self._props(ref, "parent").get("parent")
            while cur is not None and not isinstance(cur, vim.Datacenter):
                cur = self._props(cur, "parent").get("parent")
            self._datacenter[key] = self._props(cur, "name")["name"] if cur is not None else "ha-datacenter"
        return self._datacenter[key]

    def open_disk(self, vm: str, snapshot: str, disk_key: int) -> BlockSource:
        step = f"open disk {disk_key}"

        def work() -> tuple[str, int, str, str | None]:
            ref = self._vm(vm)
            disk = self._snapshot_disks(vm, snapshot).get(disk_key)
            if disk is None:
                raise vim.fault.NotFound(msg=f"the snapshot has no disk {disk_key}")
            b = disk.backing
            if isinstance(b, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo):
                raise vim.fault.FileFault(msg="a raw device mapping has no flat file to read over /folder")
            if getattr(b, "parent", None) is not None:
                raise vmodl.fault.NotSupported(
                    msg="the disk is a delta in a snapshot chain; /folder can read only the base disk"
                )
            mode = str(getattr(b, "diskMode", "") or "")
            power = self._props(ref, "runtime.powerState")["runtime.powerState"]
            if mode.startswith("independent") and power == "poweredOn":
                raise vim.fault.FileLocked(msg="the disk is independent and in use; power the VM off to copy it")
            change_id = getattr(b, "changeId", None) or None
            return flat_path(b.fileName), _capacity(disk), self._datacenter_of(ref), change_id

        flat, size, dc, change_id = self._call(vm, step, work)
        split_datastore_path(flat)
        assert self._folder is not None
        return FolderDiskSource(self._folder, dc, flat, size, label=f"{vm}/disk{disk_key}",
                                identity={"snapshot": snapshot, "change_id": change_id})

    def open_disk_vddk(self, vm: str, snapshot: str, disk_key: int, libdir: str) -> BlockSource:
        """The disk of ``snapshot`` read through ``nbdkit vddk`` (follows snapshot chains; see :mod:`.vddk`)."""
        from scmt_cli.vsphere.vddk import VddkDisk, open_vddk_disk

        def work() -> VddkDisk:
            ref = self._vm(vm)
            snap = self._snapshot(ref, snapshot)
            disk = self._snapshot_disks(vm, snapshot).get(disk_key)
            if disk is None:
                raise vim.fault.NotFound(msg=f"the snapshot has no disk {disk_key}")
            return VddkDisk(libdir=libdir, vm_moref=ref._moId, snapshot_moref=snap._moId, file=disk.backing.fileName)

        spec = self._call(vm, f"open disk {disk_key} through VDDK", work)
        return open_vddk_disk(spec, self.settings, label=f"{vm}/disk{disk_key}")

    # -- power and devices --------------------------------------------------------------------
    def shutdown_guest(self, vm: str, timeout: float) -> ShutdownHow:
        def request() -> bool:
            ref = self._call(vm, "find VM", lambda: self._vm(vm))
            try:
                self._call(vm, "shut down guest", ref.ShutdownGuest)
            except SourceOperationError as exc:
                if "ToolsUnavailable" in exc.message:
                    return False
                raise
            return True

        how = graceful_shutdown(
            vm=vm, timeout=timeout, state=lambda: self.power_state(vm), request=request,
            hard_off=lambda: self.power_off(vm), warn=lambda msg: self.reporter.log("warning", msg, vm=vm),
            sleep=time.sleep, clock=time.monotonic,
        )  # fmt: skip
        self.reporter.event("source_shut_down", vm=vm, how=how)
        return how

    def _power(self, vm: str, step: str, want: str, method: str) -> None:
        sent = False

        def work() -> None:
            nonlocal sent
            ref = self._vm(vm)
            if sent and self._props(ref, "runtime.powerState")["runtime.powerState"] == want:
                return  # a retry: the first request did it, its answer was lost
            sent = True
            self._wait(getattr(ref, method)())

        self._call(vm, step, work)

    def power_on(self, vm: str) -> None:
        self._power(vm, "power on", "poweredOn", "PowerOnVM_Task")

    def power_off(self, vm: str) -> None:
        self._power(vm, "power off", "poweredOff", "PowerOffVM_Task")

    def set_nics_connected(self, vm: str, connected: bool) -> None:
        def work() -> None:
            ref = self._vm(vm)
            props = self._props(ref, "runtime.powerState", "config.hardware.device")
            on = props["runtime.powerState"] == "poweredOn"
            changes = []
            for dev in props.get("config.hardware.device") or []:
                if isinstance(dev, vim.vm.device.VirtualEthernetCard):
                    dev.connectable.startConnected = connected
                    if on:
                        dev.connectable.connected = connected
                    changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=dev))
            if changes:
                self._wait(ref.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=changes)))

        self._call(vm, "connect network adapters" if connected else "disconnect network adapters", work)

    def annotate(self, vm: str, text: str) -> None:
        spec = vim.vm.ConfigSpec(annotation=text)
        self._call(vm, "set annotation", lambda: self._wait(self._vm(vm).ReconfigVM_Task(spec)))

    def rename(self, vm: str, new_name: str) -> None:
        def work() -> None:
            ref = self._vm(vm)
            self._wait(ref.Rename_Task(newName=new_name))
            self._vms.pop(vm, None)
            self._vms[new_name] = ref

        self._call(vm, f"rename to {new_name!r}", work)

    # -- datastore files (tests and tooling) ------------------------------------------------
    def _any_datacenter(self) -> str:
        view = self._content.viewManager.CreateContainerView(self._content.rootFolder, [vim.Datacenter], True)
        try:
            refs = list(self._props(view, "view").get("view") or [])
        finally:
            view.DestroyView()
        if not refs:
            raise vim.fault.NotFound(msg="no datacenter")
        return str(self._props(refs[0], "name")["name"])

    def upload(self, datastore_path: str, data: bytes, datacenter: str | None = None) -> None:
        """PUT a file on a datastore over /folder (vcsim's flat disks start empty)."""
        dc = datacenter or self._call("datastore", "find datacenter", self._any_datacenter)
        ds, rel = split_datastore_path(datastore_path)
        assert self._folder is not None
        self._folder.upload(dc, ds, rel, data)

    def open_datastore_file(self, datastore_path: str, size: int, datacenter: str | None = None) -> BlockSource:
        """Any datastore file as a BlockSource over /folder."""
        dc = datacenter or self._call("datastore", "find datacenter", self._any_datacenter)
        assert self._folder is not None
        return FolderDiskSource(self._folder, dc, datastore_path, size)
