"""The fake vCenter across a process boundary: a JSON RPC on ``POST /sdk/rpc``.

``python -m scmt_cli.lab.vcenter --lab LAB`` serves it (its JSON line names
``rpc``).  :class:`RemoteFakeVCenter` is the client side: it logs in over HTTPS
exactly like :class:`~scmt_cli.lab.vcenter.FakeVCenter` (TLS verified by the
same settings), reads disks over ``/folder`` with httpx, and forwards every
other :class:`~scmt_cli.vsphere.api.VCenter` call to the server, which runs it
on the estate.  ScmtErrors raised there are raised again here with the same
class and message.

Test controls (not part of the VCenter port) are reachable with
:meth:`RemoteFakeVCenter.control`: ``delete_vm``, ``reset_cbt``, ``inject_fault``,
``set_shutdown_delay``, ``workload_start`` / ``workload_stop``.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import httpx

from scmt_cli import errors
from scmt_cli.domain import inventory as inv
from scmt_cli.errors import ScmtError, SourceOperationError
from scmt_cli.events import Reporter
from scmt_cli.lab.estate import FakeEstate, VimFault
from scmt_cli.lab.vcenter import FakeVCenter
from scmt_cli.lab.workload import Workload
from scmt_cli.transports.base import BlockSource, Extent
from scmt_cli.vsphere.api import ChangedAreas, PowerState, ShutdownHow, SnapshotInfo
from scmt_cli.vsphere.folder import FolderDiskSource
from scmt_cli.vsphere.settings import ConnectionSettings

_PORT_METHODS = (
    "inventory", "power_state", "enable_cbt", "disable_cbt", "create_snapshot", "remove_snapshot", "list_snapshots",
    "disk_change_ids", "disk_capacities", "changed_areas", "shutdown_guest", "power_on", "power_off",
    "set_nics_connected", "annotate", "rename",
)  # fmt: skip


# -- (de)serialisation -----------------------------------------------------------------


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


def _vm_from(d: dict[str, Any]) -> inv.VM:
    d = dict(d)
    d["disks"] = tuple(inv.Disk(**x) for x in d["disks"])
    d["nics"] = tuple(inv.Nic(**{**x, "ips": tuple(x["ips"])}) for x in d["nics"])
    d["partitions"] = tuple(inv.Partition(**x) for x in d["partitions"])
    d["snapshots"] = tuple(inv.Snapshot(**x) for x in d["snapshots"])
    return inv.VM(**d)


def inventory_from_json(d: dict[str, Any]) -> inv.Inventory:
    return inv.Inventory(
        vms=tuple(_vm_from(v) for v in d["vms"]),
        hosts=tuple(inv.Host(**h) for h in d["hosts"]),
        datastores=tuple(inv.Datastore(**x) for x in d["datastores"]),
        source=d["source"],
        skipped=tuple(d["skipped"]),
        warnings=tuple(d["warnings"]),
    )


# -- server side ---------------------------------------------------------------------------


class _LocalVCenter(FakeVCenter):
    """FakeVCenter that runs inside the server: the HTTP layer has already checked the session."""

    def _call(self, vm: str, step: str, fn: Any) -> Any:
        try:
            return fn()
        except VimFault as exc:
            raise SourceOperationError(f"{vm}: {step}: {exc.fault}: {exc.message}") from None


class RpcServer:
    """Executes RPC requests on an estate; install with :func:`install_rpc`."""

    def __init__(self, estate: FakeEstate) -> None:
        self.estate = estate
        self.local = _LocalVCenter(estate, ConnectionSettings(host="127.0.0.1"))
        self.workloads: dict[int, Workload] = {}
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        method = str(request.get("method", ""))
        args = list(request.get("args") or [])
        kwargs = dict(request.get("kwargs") or {})
        try:
            return 200, {"result": _to_json(self._dispatch(method, args, kwargs))}
        except ScmtError as exc:
            return 200, {"error": {"class": type(exc).__name__, "message": exc.message, "hint": exc.hint}}
        except VimFault as exc:
            return 200, {"error": {"class": "SourceOperationError", "message": f"{method}: {exc}", "hint": None}}
        except (TypeError, ValueError, KeyError) as exc:
            return 400, {"error": {"class": "InternalError", "message": f"bad RPC {method}: {exc}", "hint": None}}

    def _dispatch(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        est = self.estate
        if method in _PORT_METHODS:
            return getattr(self.local, method)(*args, **kwargs)
        if method == "open_disk":
            vm, snap, key = args
            disk, flat = est.readable_view(vm, snap, int(key))
            return {"path": flat, "size": disk.capacity, "datacenter": est.lab.datacenter}
        if method == "datacenter":
            return est.lab.datacenter
        if method == "delete_vm":
            return est.delete_vm(*args)
        if method == "reset_cbt":
            return est.reset_cbt(*args)
        if method == "inject_fault":
            return est.inject_fault(*args, **kwargs)
        if method == "guest_write":  # vm, disk key, offset, data as hex: a write by the running guest
            vm, key, offset, data = args
            return est.guest_write(vm, int(key), int(offset), bytes.fromhex(data))
        if method == "set_shutdown_delay":
            est.shutdown_delay = float(args[0])
            return None
        if method == "workload_start":
            wl = Workload(est, *args, **kwargs).start()
            with self._lock:
                wid = len(self.workloads) + 1
                self.workloads[wid] = wl
            return wid
        if method == "workload_stop":
            with self._lock:
                wl = self.workloads.pop(int(args[0]))
            wl.stop()
            return wl.written
        raise KeyError(method)


def install_rpc(estate: FakeEstate) -> RpcServer:
    server = RpcServer(estate)
    estate.http.rpc = server
    return server


# -- client side ------------------------------------------------------------------------------


class RemoteFakeVCenter(FakeVCenter):
    """The VCenter port over a fake served by another process (see module doc)."""

    def __init__(self, rpc_url: str, settings: ConnectionSettings, reporter: Reporter | None = None) -> None:
        super().__init__(None, settings, reporter)  # type: ignore[arg-type]
        self.rpc_url = rpc_url

    def _rpc(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._http is None or self._token is None:
            raise SourceOperationError(f"{method}: not connected to {self.settings.url}")
        for attempt in (1, 2):
            try:
                resp = self._http.post(
                    self.rpc_url, json={"method": method, "args": list(args), "kwargs": kwargs},
                    headers={"Cookie": self._cookie()}, timeout=300.0,
                )  # fmt: skip
            except httpx.HTTPError as exc:
                raise SourceOperationError(f"{method}: fake vCenter RPC failed: {type(exc).__name__}") from None
            if resp.status_code == 401 and attempt == 1:
                self._relogin()
                continue
            break
        answer = resp.json() if resp.headers.get("content-type") == "application/json" else {}
        if "error" in answer:
            err = answer["error"]
            cls = getattr(errors, str(err.get("class")), None)
            if not (isinstance(cls, type) and issubclass(cls, ScmtError)):
                cls = SourceOperationError
            raise cls(str(err.get("message")), hint=err.get("hint"))
        if resp.status_code != 200:
            raise SourceOperationError(f"{method}: fake vCenter RPC answered HTTP {resp.status_code}")
        return answer.get("result")

    def control(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Test controls: delete_vm, reset_cbt, inject_fault, set_shutdown_delay, workload_start/stop, guest_write."""
        return self._rpc(method, *args, **kwargs)

    def inventory(self) -> inv.Inventory:
        return inventory_from_json(self._rpc("inventory"))

    def power_state(self, vm: str) -> PowerState:
        state: PowerState = self._rpc("power_state", vm)
        return state

    def enable_cbt(self, vm: str) -> bool:
        done = bool(self._rpc("enable_cbt", vm))
        if done:
            self.reporter.event("cbt_enabled", vm=vm)
        return done

    def disable_cbt(self, vm: str) -> bool:
        done = bool(self._rpc("disable_cbt", vm))
        if done:
            self.reporter.event("cbt_disabled", vm=vm)
        return done

    def create_snapshot(self, vm: str, name: str, *, quiesce: bool = False, description: str = "") -> str:
        snap = str(self._rpc("create_snapshot", vm, name, quiesce=quiesce, description=description))
        self.reporter.event("snapshot_created", vm=vm, snapshot=snap, name=name)
        return snap

    def remove_snapshot(self, vm: str, snapshot: str) -> None:
        self._rpc("remove_snapshot", vm, snapshot)
        self.reporter.event("snapshot_removed", vm=vm, snapshot=snapshot)

    def list_snapshots(self, vm: str) -> list[SnapshotInfo]:
        return [SnapshotInfo(**s) for s in self._rpc("list_snapshots", vm)]

    def disk_change_ids(self, vm: str, snapshot: str) -> dict[int, str | None]:
        return {int(k): v for k, v in self._rpc("disk_change_ids", vm, snapshot).items()}

    def disk_capacities(self, vm: str, snapshot: str) -> dict[int, int]:
        return {int(k): int(v) for k, v in self._rpc("disk_capacities", vm, snapshot).items()}

    def changed_areas(
        self, vm: str, snapshot: str, disk_key: int, change_id: str, *, previous_capacity: int | None = None
    ) -> ChangedAreas:
        d = self._rpc("changed_areas", vm, snapshot, disk_key, change_id, previous_capacity=previous_capacity)
        extents = tuple(Extent(e["offset"], e["length"], e["kind"]) for e in d["extents"])
        result = ChangedAreas(extents, reset=d["reset"], reason=d["reason"], queries=d["queries"])
        if result.reset:
            self.reporter.log("warning", f"{vm}: disk {disk_key}: {result.reason}; a full resync is needed")
        return result

    def open_disk(self, vm: str, snapshot: str, disk_key: int) -> BlockSource:
        info = self._rpc("open_disk", vm, snapshot, disk_key)
        assert self._folder is not None
        return FolderDiskSource(
            self._folder, info["datacenter"], info["path"], int(info["size"]), label=f"{vm}/disk{disk_key}"
        )

    def shutdown_guest(self, vm: str, timeout: float) -> ShutdownHow:
        how: ShutdownHow = self._rpc("shutdown_guest", vm, timeout)
        self.reporter.event("source_shut_down", vm=vm, how=how)
        return how

    def power_on(self, vm: str) -> None:
        self._rpc("power_on", vm)

    def power_off(self, vm: str) -> None:
        self._rpc("power_off", vm)

    def set_nics_connected(self, vm: str, connected: bool) -> None:
        self._rpc("set_nics_connected", vm, connected)

    def annotate(self, vm: str, text: str) -> None:
        self._rpc("annotate", vm, text)

    def rename(self, vm: str, new_name: str) -> None:
        self._rpc("rename", vm, new_name)

    def upload(self, datastore_path: str, data: bytes, datacenter: str | None = None) -> None:
        from scmt_cli.vsphere.folder import split_datastore_path

        ds, rel = split_datastore_path(datastore_path)
        assert self._folder is not None
        self._folder.upload(datacenter or str(self._rpc("datacenter")), ds, rel, data)

    def open_datastore_file(self, datastore_path: str, size: int, datacenter: str | None = None) -> BlockSource:
        assert self._folder is not None
        return FolderDiskSource(self._folder, datacenter or str(self._rpc("datacenter")), datastore_path, size)
