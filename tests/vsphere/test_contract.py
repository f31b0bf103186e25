"""One contract for both VCenter implementations: the fake (from the lab) and pyvmomi against vcsim.

Skipped on vcsim only where vcsim cannot follow: QueryChangedDiskAreas (not
implemented by vcsim), and disks with content (vcsim's flat disks are empty, so
the test PUTs one first).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.errors import AuthenticationError, SourceOperationError, TLSVerificationError
from scmt_cli.events import RecordingReporter
from scmt_cli.lab.vcenter import start_estate, stop_estate
from scmt_cli.vsphere.api import VCenter
from scmt_cli.vsphere.connect import open_vcenter
from scmt_cli.vsphere.settings import ConnectionSettings

from . import vcsim as vcsim_mod
from .conftest import EXAMPLE_LAB

WRONG_PIN = ":".join(["0F"] * 32)


@dataclass
class Backend:
    kind: str
    settings: ConnectionSettings
    vm: str  # a powered-on VM
    server: Any

    def open(self, reporter: RecordingReporter | None = None, **over: Any) -> VCenter:
        fields = {k: getattr(self.settings, k) for k in ("host", "port", "user", "password", "thumbprint")}
        fields.update(over)
        return open_vcenter(ConnectionSettings(**fields), reporter)


@pytest.fixture(scope="module")
def vcsim_server() -> Iterator[vcsim_mod.Vcsim]:
    try:
        sim = vcsim_mod.start()
    except vcsim_mod.VcsimUnavailable as exc:
        if os.environ.get("SCMT_REQUIRE_VCSIM"):
            raise
        pytest.skip(f"vcsim unavailable: {exc}")
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(params=["fake", "vcsim"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "fake":
        estate = start_estate(EXAMPLE_LAB, tmp_path / "vc")
        host, port = estate.base_url.split("://")[1].rsplit(":", 1)
        settings = ConnectionSettings(
            host=host, port=int(port), user=estate.lab.user, password=estate.lab.password,
            thumbprint=estate.http.thumbprint,
        )  # fmt: skip
        try:
            yield Backend("fake", settings, "win2019-app01", estate)
        finally:
            stop_estate(estate)
    else:
        sim: vcsim_mod.Vcsim = request.getfixturevalue("vcsim_server")
        settings = ConnectionSettings(
            host=sim.host, port=sim.port, user=sim.user, password=sim.password, thumbprint=sim.thumbprint
        )
        yield Backend("vcsim", settings, "DC0_H0_VM1", sim)


def test_connect_pinned_and_refused(backend: Backend) -> None:
    vc = backend.open()
    vc.close()
    with pytest.raises(TLSVerificationError, match="does not match the pinned"):
        backend.open(thumbprint=WRONG_PIN)
    with pytest.raises(TLSVerificationError, match="not trusted"):
        backend.open(thumbprint=None)
    with pytest.raises(AuthenticationError) as info:
        backend.open(password="Wr0ng-" + secrets.token_hex(4))
    assert "Wr0ng-" not in info.value.message


def test_inventory(backend: Backend) -> None:
    vc = backend.open()
    try:
        inv = vc.inventory()
    finally:
        vc.close()
    vm = inv.vm(backend.vm)
    assert vm is not None and vm.power_state == "poweredOn"
    assert vm.disks and all(d.capacity_bytes > 0 and d.file and d.file.startswith("[") for d in vm.disks)
    assert vm.nics and all(n.mac for n in vm.nics)
    assert vm.host and inv.host(vm.host) is not None and inv.host(vm.host).esxi_version  # type: ignore[union-attr]
    assert inv.datastores and all(d.capacity_bytes for d in inv.datastores)
    assert vm.uuid and vm.moref and vm.cpus and vm.memory_mib and vm.firmware in ("bios", "efi")


def test_snapshot_create_list_remove_and_faults(backend: Backend) -> None:
    rep = RecordingReporter()
    vc = backend.open(rep)
    try:
        before = vc.list_snapshots(backend.vm)
        snap = vc.create_snapshot(backend.vm, "scmt-contract")
        listed = vc.list_snapshots(backend.vm)
        assert [s.id for s in listed] == [s.id for s in before] + [snap]
        assert listed[-1].name == "scmt-contract"
        ids = vc.disk_change_ids(backend.vm, snap)
        caps = vc.disk_capacities(backend.vm, snap)
        assert set(ids) == set(caps) and all(c > 0 for c in caps.values())
        vc.remove_snapshot(backend.vm, snap)
        assert [s.id for s in vc.list_snapshots(backend.vm)] == [s.id for s in before]  # nothing left behind
        with pytest.raises(SourceOperationError, match=rf"{backend.vm}: remove snapshot {snap}"):
            vc.remove_snapshot(backend.vm, snap)
        with pytest.raises(SourceOperationError, match="no-such-vm"):
            vc.create_snapshot("no-such-vm", "x")
        kinds = [e["kind"] for e in rep.of_type("event")]
        assert kinds.count("snapshot_created") == 1 and kinds.count("snapshot_removed") == 1
    finally:
        vc.close()


def test_nics_disconnect_reconnect(backend: Backend) -> None:
    vc = backend.open()
    try:
        vc.set_nics_connected(backend.vm, False)
        vm = vc.inventory().vm(backend.vm)
        assert vm is not None and vm.nics and all(n.connected is False and n.start_connected is False for n in vm.nics)
        vc.set_nics_connected(backend.vm, True)
        vm = vc.inventory().vm(backend.vm)
        assert vm is not None and all(n.connected and n.start_connected for n in vm.nics)
    finally:
        vc.close()


def test_power_cycle_and_graceful_shutdown(backend: Backend) -> None:
    vc = backend.open()
    try:
        with pytest.raises(SourceOperationError, match=rf"{backend.vm}: power on: .*InvalidPowerState"):
            vc.power_on(backend.vm)
        assert vc.shutdown_guest(backend.vm, timeout=30) == "guest"
        assert vc.power_state(backend.vm) == "poweredOff"
        assert vc.shutdown_guest(backend.vm, timeout=1) == "already_off"
        vc.power_on(backend.vm)
        assert vc.power_state(backend.vm) == "poweredOn"
        vc.power_off(backend.vm)
        assert vc.power_state(backend.vm) == "poweredOff"
        vc.power_on(backend.vm)
    finally:
        vc.close()


def test_folder_range_reads_of_an_uploaded_disk(backend: Backend) -> None:
    vc = backend.open()
    try:
        data = secrets.token_bytes(256 * 1024) + bytes(256 * 1024) + b"tail" * 1024
        ds = "ds-vmfs01" if backend.kind == "fake" else "LocalDS_0"
        path = f"[{ds}] scmt-contract/upload-flat.vmdk"
        vc.upload(path, data)  # type: ignore[attr-defined]
        src = vc.open_datastore_file(path, len(data))  # type: ignore[attr-defined]
        assert src.read(0, 4096) == data[:4096]
        assert src.read(300_000, 70_000) == data[300_000:370_000]
        assert src.read(len(data) - 10, 10) == data[-10:]
        assert_optional_parts(src, data)
        if backend.kind == "vcsim":
            # vcsim's VM disks are empty files: put content into one, then read it through a snapshot
            snap = vc.create_snapshot(backend.vm, "scmt-read")
            try:
                key, cap = next(iter(vc.disk_capacities(backend.vm, snap).items()))
                disk = (vc.inventory().vm(backend.vm) or pytest.fail("VM missing")).disks[0]
                assert disk.file is not None
                flat = disk.file[: -len(".vmdk")] + "-flat.vmdk"
                content = secrets.token_bytes(cap)
                vc.upload(flat, content)  # type: ignore[attr-defined]
                src = vc.open_disk(backend.vm, snap, key)
                assert src.size == cap and src.read(cap // 2, 8192) == content[cap // 2 : cap // 2 + 8192]
                assert_optional_parts(src, content)
                ident = src.identity()
                assert ident is not None and ident.fields.get("snapshot") and ident.fields.get("size") == cap
            finally:
                vc.remove_snapshot(backend.vm, snap)
    finally:
        vc.close()


def assert_optional_parts(src: Any, data: bytes) -> None:
    """The /folder source answers the transport interface's optional parts like every transport does."""
    from scmt_cli.transports.base import SOURCE_OPTIONAL, BlockSource, Identity

    assert isinstance(src, BlockSource) and all(hasattr(src, name) for name in SOURCE_OPTIONAL)
    ident = src.identity()
    assert ident is None or (isinstance(ident, Identity) and ident.fields.get("size") == len(data))
    assert isinstance(src.stats(), dict)
    assert src.changed_extents(None) is None  # CBT comes from vCenter, not from the data path
    assert src.remote_digests(64 * 1024) is None
    one, two = bytearray(5000), bytearray(70_000)
    src.readinto(len(data) // 3, memoryview(one))
    src.readinto_many([(10, memoryview(two)), (len(data) // 2, memoryview(one))])
    assert bytes(one) == data[len(data) // 2 : len(data) // 2 + 5000] and bytes(two) == data[10:70_010]


def test_changed_areas(backend: Backend) -> None:
    if backend.kind == "vcsim":
        pytest.skip("vcsim does not implement QueryChangedDiskAreas (nor changeId on disk backings)")
    vc = backend.open()
    try:
        snap = vc.create_snapshot(backend.vm, "scmt-cbt")
        key = min(vc.disk_capacities(backend.vm, snap))
        areas = vc.changed_areas(backend.vm, snap, key, "*")
        assert not areas.reset and areas.extents
        vc.remove_snapshot(backend.vm, snap)
    finally:
        vc.close()


def test_enable_cbt_with_stun_cycle_leaves_no_snapshot(backend: Backend) -> None:
    vm = "ubuntu22-web01" if backend.kind == "fake" else "DC0_C0_RP0_VM0"
    vc = backend.open()
    try:
        before = [s.id for s in vc.list_snapshots(vm)]
        assert vc.enable_cbt(vm) is True
        assert vc.enable_cbt(vm) is False  # already on: nothing done
        assert [s.id for s in vc.list_snapshots(vm)] == before
        vm_inv = vc.inventory().vm(vm)
        assert vm_inv is not None and vm_inv.cbt_enabled is True
    finally:
        vc.close()


def test_disable_cbt_with_stun_cycle_leaves_no_snapshot(backend: Backend) -> None:
    vm = "ubuntu22-web01" if backend.kind == "fake" else "DC0_C0_RP0_VM1"
    rep = RecordingReporter()
    vc = backend.open(rep)
    try:
        assert vc.power_state(vm) == "poweredOn"  # so the stun cycle really runs
        vc.enable_cbt(vm)
        before = [s.id for s in vc.list_snapshots(vm)]
        calls = getattr(vc, "calls", None)  # the adapter counts SOAP calls
        if calls is not None:
            calls.clear()
        assert vc.disable_cbt(vm) is True
        if calls is not None:
            assert calls["ReconfigVM_Task"] == 1 and calls["CreateSnapshot_Task"] == 1, dict(calls)
            assert calls["RemoveSnapshot_Task"] == 1, dict(calls)
        assert vc.disable_cbt(vm) is False  # already off: nothing done
        assert [s.id for s in vc.list_snapshots(vm)] == before
        vm_inv = vc.inventory().vm(vm)
        assert vm_inv is not None and vm_inv.cbt_enabled is False
        assert [r["vm"] for r in rep.of_type("event") if r["kind"] == "cbt_disabled"] == [vm]
    finally:
        vc.close()
