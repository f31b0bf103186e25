"""The fake vCenter client: :class:`FakeVCenter` implements :class:`~scmt_cli.vsphere.api.VCenter`
over a :class:`~scmt_cli.lab.estate.FakeEstate`.

It logs in over the estate's real HTTPS endpoint (TLS checked with the same
settings as a real vCenter: CA, pinned thumbprint or explicit ``insecure``),
reads disks over ``/folder`` with httpx, and applies every other operation to
the in-process estate, translating vSphere faults into SourceOperationErrors
that name the VM and the step.  An expired session is renewed once.

``python -m scmt_cli.lab --lab examples/lab.yaml`` starts an estate and
prints one JSON line (``url``, ``thumbprint``, ``user``, ``rpc``); other
processes use it through :class:`scmt_cli.lab.remote.RemoteFakeVCenter`
(login and ``/folder`` as on vCenter, other calls over a JSON RPC; the SOAP API
is not emulated).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from scmt_cli.domain import inventory as inv
from scmt_cli.errors import AuthenticationError, SourceOperationError
from scmt_cli.events import NullReporter, Reporter
from scmt_cli.lab.disk import CbtQueryError
from scmt_cli.lab.estate import FakeEstate, VimFault
from scmt_cli.lab.inventory import lab_inventory
from scmt_cli.lab.model import Lab
from scmt_cli.lab.parse import load_lab
from scmt_cli.lab.server import COOKIE
from scmt_cli.transports.base import BlockSource
from scmt_cli.vsphere.api import (
    ChangedAreas,
    PowerState,
    ShutdownHow,
    SnapshotInfo,
    cbt_reset_reason,
    collect_changed_areas,
    graceful_shutdown,
)
from scmt_cli.vsphere.folder import FolderDiskSource, FolderSession, split_datastore_path
from scmt_cli.vsphere.settings import ConnectionSettings
from scmt_cli.vsphere.tls import classify_connect_error, make_ssl_context

T = TypeVar("T")
TRANSIENT_FAULTS = ("TaskInProgress", "HostCommunication")  # retried, like the adapter does
TRANSIENT_ATTEMPTS = 4

_ESTATES: dict[tuple[str, int], FakeEstate] = {}
_ESTATES_LOCK = threading.Lock()


def start_estate(lab: Lab | str | Path, workdir: Path, *, tls: bool = True, port: int = 0) -> FakeEstate:
    """Build an estate from a lab, start its HTTP endpoint (on ``port``, 0: any) and register it for
    :func:`estate_for`."""
    if not isinstance(lab, Lab):
        lab = load_lab(lab)
    estate = FakeEstate(lab, workdir, tls=tls)
    estate.http.port = port
    url = estate.start()
    host, bound = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with _ESTATES_LOCK:
        _ESTATES[(host, int(bound))] = estate
    return estate


def stop_estate(estate: FakeEstate) -> None:
    with _ESTATES_LOCK:
        for key, value in list(_ESTATES.items()):
            if value is estate:
                del _ESTATES[key]
    estate.stop()


def estate_for(host: str, port: int) -> FakeEstate | None:
    """The in-process fake estate listening on host:port, if any."""
    with _ESTATES_LOCK:
        return _ESTATES.get((host, port))


class FakeVCenter:
    """The VCenter port over a fake estate (see module doc)."""

    def __init__(self, estate: FakeEstate, settings: ConnectionSettings, reporter: Reporter | None = None) -> None:
        self.estate = estate
        self.settings = settings
        self.reporter: Reporter = reporter or NullReporter()
        self._token: str | None = None
        self._folder: FolderSession | None = None
        self._http: httpx.Client | None = None
        self.logins = 0

    # -- session -----------------------------------------------------------------
    def connect(self) -> None:
        if self._token is not None:
            return
        s = self.settings
        if s.insecure:
            self.reporter.log("warning", f"TLS certificate of {s.url} is NOT verified (insecure)", vcenter=s.url)
        ctx = make_ssl_context(thumbprint=s.thumbprint, ca_file=s.ca_file, insecure=s.insecure)
        self._http = httpx.Client(verify=ctx, timeout=30.0)
        try:
            self._login()
        except BaseException:
            self._http.close()
            self._http = None
            raise
        self._folder = FolderSession(s.base_url, ctx, self._cookie, self._relogin)

    def _login(self) -> None:
        assert self._http is not None
        s = self.settings
        try:
            resp = self._http.post(f"{s.base_url}/sdk/login", json={"user": s.user, "password": s.password})
        except httpx.HTTPError as exc:
            raise classify_connect_error(exc, s.url) from None
        if resp.status_code == 401:
            raise AuthenticationError(f"{s.user}@{s.host}: login refused (wrong user name or password)")
        if resp.status_code != 200:
            raise SourceOperationError(f"{s.url}: login: unexpected HTTP {resp.status_code}")
        token = resp.cookies.get(COOKIE)
        if not token:
            raise SourceOperationError(f"{s.url}: login: no session cookie in the answer")
        self._token = token.strip('"')
        self.logins += 1

    def _relogin(self) -> None:
        self.reporter.log("info", f"vCenter session expired; logging in again to {self.settings.url}")
        self._token = None
        self._login()

    def _cookie(self) -> str:
        return f'{COOKIE}="{self._token or ""}"'

    def close(self) -> None:
        if self._http is not None and self._token is not None:
            try:
                self._http.post(f"{self.settings.base_url}/sdk/logout", headers={"Cookie": self._cookie()})
            except httpx.HTTPError:
                pass
        for client in (self._http, self._folder):
            if client is not None:
                client.close()
        self._http = self._folder = None
        self._token = None

    def __enter__(self) -> FakeVCenter:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, vm: str, step: str, fn: Callable[[], T]) -> T:
        if self._token is None:
            raise SourceOperationError(f"{vm}: {step}: not connected to {self.settings.url}")
        if not self.estate.http.valid(self._token):
            self._relogin()
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                return fn()
            except VimFault as exc:
                if exc.fault in TRANSIENT_FAULTS and attempt < TRANSIENT_ATTEMPTS:
                    time.sleep(0.01 * attempt)
                    continue
                raise SourceOperationError(f"{vm}: {step}: {exc.fault}: {exc.message}") from None
        raise AssertionError("unreachable")

    # -- inventory -----------------------------------------------------------------
    def inventory(self) -> inv.Inventory:
        return self._call("inventory", "retrieve inventory", self._inventory)

    def _inventory(self) -> inv.Inventory:
        base = lab_inventory(self.estate.lab)
        by_name = {vm.name: vm for vm in base.vms}
        vms = []
        with self.estate.lock:
            for fvm in self.estate.vms.values():
                if fvm.deleted:
                    continue
                old = by_name[fvm.spec.name]
                on = fvm.power == "poweredOn"
                disks = tuple(
                    dataclasses.replace(
                        d,
                        capacity_bytes=fvm.disks[d.key].capacity,
                        cbt_enabled=fvm.cbt_config,
                        change_id=fvm.disks[d.key].change_id,
                    )
                    for d in old.disks
                )
                nics = tuple(
                    inv.Nic(n.key, n.label, n.network, n.mac, n.ips, n.connected, n.start_connected, n.adapter_type)
                    for n in fvm.nics
                )
                snaps = tuple(
                    inv.Snapshot(s.name, s.created, s.description or None, s.id, s.quiesced) for s in fvm.snapshots
                )
                tools: inv.ToolsStatus = "running" if on and fvm.tools_running else (old.tools_status or "unknown")
                if tools == "running" and not on:
                    tools = "notRunning"
                vms.append(
                    dataclasses.replace(
                        old, name=fvm.name, power_state=fvm.power, disks=disks, nics=nics, snapshots=snaps,  # type: ignore[arg-type]
                        cbt_enabled=fvm.cbt_config, annotation=fvm.annotation, tools_status=tools,
                        hostname=fvm.spec.hostname if on and fvm.tools_running else None,
                        source=f"vcenter:{self.settings.host}",
                    )
                )  # fmt: skip
        return dataclasses.replace(base, vms=tuple(vms), source=f"vcenter:{self.settings.host}")

    def power_state(self, vm: str) -> PowerState:
        state = self._call(vm, "read power state", lambda: self.estate.vm(vm).power)
        return state  # type: ignore[return-value]

    # -- CBT and snapshots -----------------------------------------------------------
    def enable_cbt(self, vm: str) -> bool:
        def work() -> bool:
            fvm = self.estate.vm(vm)
            if fvm.cbt_config and all(d.cbt_active for d in fvm.disks.values() if d.spec.rdm != "physical"):
                return False
            self.estate.set_cbt(vm, True)
            if fvm.power == "poweredOn":
                snap = self.estate.create_snapshot(vm, "scmt-cbt-stun", False, "stun cycle to activate CBT")
                self.estate.remove_snapshot(vm, snap)
            return True

        done = self._call(vm, "enable changed block tracking", work)
        if done:
            self.reporter.event("cbt_enabled", vm=vm)
        return done

    def disable_cbt(self, vm: str) -> bool:
        def work() -> bool:
            fvm = self.estate.vm(vm)
            if not fvm.cbt_config and not any(d.cbt_active for d in fvm.disks.values()):
                return False
            self.estate.set_cbt(vm, False)  # tracking stops; every change id recorded so far is void
            if fvm.power == "poweredOn":
                snap = self.estate.create_snapshot(vm, "scmt-cbt-stun", False, "stun cycle to deactivate CBT")
                self.estate.remove_snapshot(vm, snap)
            return True

        done = self._call(vm, "disable changed block tracking", work)
        if done:
            self.reporter.event("cbt_disabled", vm=vm)
        return done

    def create_snapshot(self, vm: str, name: str, *, quiesce: bool = False, description: str = "") -> str:
        snap = self._call(vm, "create snapshot", lambda: self.estate.create_snapshot(vm, name, quiesce, description))
        self.reporter.event("snapshot_created", vm=vm, snapshot=snap, name=name)
        return snap

    def remove_snapshot(self, vm: str, snapshot: str) -> None:
        self._call(vm, f"remove snapshot {snapshot}", lambda: self.estate.remove_snapshot(vm, snapshot))
        self.reporter.event("snapshot_removed", vm=vm, snapshot=snapshot)

    def list_snapshots(self, vm: str) -> list[SnapshotInfo]:
        def work() -> list[SnapshotInfo]:
            return [
                SnapshotInfo(s.id, s.name, s.created, s.description or None, s.quiesced, s.parent)
                for s in self.estate.vm(vm).snapshots
            ]

        return self._call(vm, "list snapshots", work)

    def disk_change_ids(self, vm: str, snapshot: str) -> dict[int, str | None]:
        def work() -> dict[int, str | None]:
            fvm = self.estate.vm(vm)
            snap = self.estate.snapshot(fvm, snapshot)
            return {k: (d.frozen(snapshot).change_id if k in snap.disk_keys else None) for k, d in fvm.disks.items()}

        return self._call(vm, "read change ids", work)

    def disk_capacities(self, vm: str, snapshot: str) -> dict[int, int]:
        def work() -> dict[int, int]:
            fvm = self.estate.vm(vm)
            self.estate.snapshot(fvm, snapshot)
            return {k: d.capacity for k, d in fvm.disks.items()}

        return self._call(vm, "read disk capacities", work)

    def changed_areas(
        self, vm: str, snapshot: str, disk_key: int, change_id: str, *, previous_capacity: int | None = None
    ) -> ChangedAreas:
        step = f"query changed areas of disk {disk_key}"

        def work() -> ChangedAreas:
            fvm = self.estate.vm(vm)
            snap = self.estate.snapshot(fvm, snapshot)
            disk = self.estate.disk(fvm, disk_key)
            if disk_key not in snap.disk_keys:
                return ChangedAreas((), reset=True, reason="independent disks are not tracked through snapshots")
            frozen = disk.frozen(snapshot)
            reason = cbt_reset_reason(
                change_id, frozen.change_id, previous_capacity=previous_capacity, capacity=frozen.capacity
            )
            if reason:
                return ChangedAreas((), reset=True, reason=reason)

            def query(start: int) -> tuple[int, int, list[tuple[int, int]]]:
                self.estate.cbt_queries += 1
                return disk.query_changed(snapshot, start, change_id, self.estate.cbt_window)

            try:
                extents, calls = collect_changed_areas(query, frozen.capacity, what=f"{vm}: {step}")
            except CbtQueryError as exc:
                return ChangedAreas((), reset=True, reason=f"QueryChangedDiskAreas: FileFault: {exc}")
            return ChangedAreas(tuple(extents), queries=calls)

        result = self._call(vm, step, work)
        if result.reset:
            self.reporter.log("warning", f"{vm}: disk {disk_key}: {result.reason}; a full resync is needed")
        return result

    def open_disk(self, vm: str, snapshot: str, disk_key: int) -> BlockSource:
        def work() -> tuple[Any, str, str | None]:
            disk, flat = self.estate.readable_view(vm, snapshot, disk_key)
            frozen = disk_key in self.estate.snapshot(self.estate.vm(vm), snapshot).disk_keys
            return disk, flat, disk.frozen(snapshot).change_id if frozen else None

        disk, flat, change_id = self._call(vm, f"open disk {disk_key}", work)
        assert self._folder is not None
        label = f"{vm}/disk{disk_key}"
        return FolderDiskSource(self._folder, self.estate.lab.datacenter, flat, disk.capacity, label=label,
                                identity={"snapshot": snapshot, "change_id": change_id})

    # -- datastore files (tests and tooling) -----------------------------------------------
    def upload(self, datastore_path: str, data: bytes, datacenter: str | None = None) -> None:
        """PUT a file on a datastore over /folder (VM disks are refused as locked)."""
        ds, rel = split_datastore_path(datastore_path)
        assert self._folder is not None
        self._folder.upload(datacenter or self.estate.lab.datacenter, ds, rel, data)

    def open_datastore_file(self, datastore_path: str, size: int, datacenter: str | None = None) -> BlockSource:
        """Any datastore file as a BlockSource over /folder."""
        assert self._folder is not None
        return FolderDiskSource(self._folder, datacenter or self.estate.lab.datacenter, datastore_path, size)

    # -- power and devices ---------------------------------------------------------------
    def shutdown_guest(self, vm: str, timeout: float) -> ShutdownHow:
        def request() -> bool:
            try:
                self._call(vm, "shut down guest", lambda: self.estate.shutdown_guest(vm))
            except SourceOperationError as exc:
                if "ToolsUnavailable" in exc.message:
                    return False
                raise
            return True

        how = graceful_shutdown(
            vm=vm,
            timeout=timeout,
            state=lambda: self.power_state(vm),
            request=request,
            hard_off=lambda: self.power_off(vm),
            warn=lambda msg: self.reporter.log("warning", msg, vm=vm),
            sleep=time.sleep,
            clock=time.monotonic,
        )
        self.reporter.event("source_shut_down", vm=vm, how=how)
        return how

    def power_on(self, vm: str) -> None:
        self._call(vm, "power on", lambda: self.estate.power_on(vm))

    def power_off(self, vm: str) -> None:
        self._call(vm, "power off", lambda: self.estate.power_off(vm))

    def set_nics_connected(self, vm: str, connected: bool) -> None:
        step = "connect network adapters" if connected else "disconnect network adapters"
        self._call(vm, step, lambda: self.estate.set_nics_connected(vm, connected))

    def annotate(self, vm: str, text: str) -> None:
        self._call(vm, "set annotation", lambda: self.estate.annotate(vm, text))

    def rename(self, vm: str, new_name: str) -> None:
        self._call(vm, f"rename to {new_name!r}", lambda: self.estate.rename(vm, new_name))
