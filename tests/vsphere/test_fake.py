"""The fake vCenter: CBT semantics, snapshot freezes, /folder over HTTP, vSphere faults."""

from __future__ import annotations

import pytest

from scmt_cli.errors import SourceOperationError
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.lab.parse import load_lab
from scmt_cli.lab.vcenter import FakeVCenter
from scmt_cli.lab.workload import Workload
from scmt_cli.vsphere.api import parse_change_id

from .conftest import EXAMPLE_LAB

MiB = 1024 * 1024
VM = "win2019-app01"


def expected_disk(vm: str, index: int) -> bytes:
    lab = load_lab(EXAMPLE_LAB)
    spec = lab.vm(vm)
    assert spec is not None
    disk = spec.disks[index]
    out = bytearray(disk.capacity)
    for r in disk.layout:
        out[r.offset : r.end] = r.render(f"{vm}/disk{index}")
    return bytes(out)


def test_disk_read_over_http_matches_the_lab_layout(vc: FakeVCenter, estate: FakeEstate) -> None:
    snap = vc.create_snapshot(VM, "scmt-seed")
    src = vc.open_disk(VM, snap, 2000)
    want = expected_disk(VM, 0)
    assert src.size == len(want) == 64 * MiB
    got = b"".join(src.read(off, 4 * MiB) for off in range(0, src.size, 4 * MiB))
    assert got == want
    assert got[:18] == b"win2019-app01/disk"
    assert src.read(4 * MiB + 5, 3) == want[4 * MiB + 5 : 4 * MiB + 8]
    assert any(m == "GET" and p.startswith("/folder/win2019-app01/") for m, p in estate.http.requests)
    vc.remove_snapshot(VM, snap)


def test_snapshot_is_stable_while_the_workload_writes(vc: FakeVCenter, estate: FakeEstate) -> None:
    snap = vc.create_snapshot(VM, "scmt-1")
    src = vc.open_disk(VM, snap, 2000)
    before = src.read(0, src.size)
    wl = Workload(estate, VM, disk_keys=(2000,), seed=3)
    recs = [wl.write_once() for _ in range(40)]
    assert all(recs)
    assert src.read(0, src.size) == before  # frozen
    live = estate.vms[VM].disks[2000].read(0, src.size)
    assert live != before
    vc.remove_snapshot(VM, snap)


def test_changed_areas_cover_every_write_and_nothing_far_away(vc: FakeVCenter, estate: FakeEstate) -> None:
    s1 = vc.create_snapshot(VM, "scmt-1")
    ids1 = vc.disk_change_ids(VM, s1)
    uuid1, seq1 = parse_change_id(ids1[2000] or "")
    wl = Workload(estate, VM, disk_keys=(2000,), io_size=4096, seed=9)
    recs = [wl.write_once() for _ in range(25)]
    vc.remove_snapshot(VM, s1)  # order of warm syncs: record ids, remove old, create new
    s2 = vc.create_snapshot(VM, "scmt-2")
    ids2 = vc.disk_change_ids(VM, s2)
    uuid2, seq2 = parse_change_id(ids2[2000] or "")
    assert uuid2 == uuid1 and seq2 > seq1
    areas = vc.changed_areas(VM, s2, 2000, ids1[2000] or "")
    assert not areas.reset
    assert areas.queries == 16  # 64 MiB in 4 MiB windows: the loop ran to capacity, not past it
    for r in recs:
        assert r is not None
        assert any(e.offset <= r.offset and r.offset + r.length <= e.end for e in areas.extents), r
    assert areas.changed_bytes <= 25 * 64 * 1024  # block granularity, not the whole disk
    # the data at the changed areas in the new snapshot equals the live data at snapshot time
    src = vc.open_disk(VM, s2, 2000)
    live = estate.vms[VM].disks[2000].read(0, src.size)
    for e in areas.extents:
        assert src.read(e.offset, e.length) == live[e.offset : e.end]
    none = vc.changed_areas(VM, s2, 2000, ids2[2000] or "")
    assert none.extents == () and not none.reset
    vc.remove_snapshot(VM, s2)


def test_star_returns_allocated_areas(vc: FakeVCenter) -> None:
    snap = vc.create_snapshot(VM, "seed")
    areas = vc.changed_areas(VM, snap, 2000, "*")
    spans = [(e.offset, e.length) for e in areas.extents]
    assert spans == [(0, 1 * MiB), (4 * MiB, 12 * MiB), (32 * MiB, 2 * MiB), (48 * MiB, 4 * MiB)]
    vc.remove_snapshot(VM, snap)


def test_cbt_reset_is_reported_not_hidden(vc: FakeVCenter, estate: FakeEstate) -> None:
    s1 = vc.create_snapshot(VM, "a")
    old = vc.disk_change_ids(VM, s1)[2000] or ""
    vc.remove_snapshot(VM, s1)
    estate.reset_cbt(VM)
    s2 = vc.create_snapshot(VM, "b")
    res = vc.changed_areas(VM, s2, 2000, old)
    assert res.reset and res.extents == () and "reset" in (res.reason or "")
    bogus = vc.changed_areas(VM, s2, 2000, "not-a-change-id")
    assert bogus.reset
    vc.remove_snapshot(VM, s2)


def test_enable_cbt_needs_a_stun_cycle(vc: FakeVCenter, estate: FakeEstate) -> None:
    vm = "ubuntu22-web01"  # cbt: false in the lab
    s = vc.create_snapshot(vm, "x")
    assert vc.disk_change_ids(vm, s) == {2000: None}
    res = vc.changed_areas(vm, s, 2000, "*")
    assert res.reset and "off" in (res.reason or "")
    vc.remove_snapshot(vm, s)
    assert vc.enable_cbt(vm) is True
    assert vc.list_snapshots(vm) == []  # the stun snapshot is gone
    assert vc.enable_cbt(vm) is False
    s = vc.create_snapshot(vm, "y")
    assert vc.disk_change_ids(vm, s)[2000] is not None
    vc.remove_snapshot(vm, s)


def test_disable_cbt_invalidates_every_recorded_change_id(vc: FakeVCenter, estate: FakeEstate, reporter) -> None:
    s1 = vc.create_snapshot(VM, "a")  # win2019-app01: CBT on and active in the lab
    old = vc.disk_change_ids(VM, s1)[2000] or pytest.fail("CBT should be active")
    vc.remove_snapshot(VM, s1)
    assert vc.disable_cbt(VM) is True
    assert vc.list_snapshots(VM) == []  # the stun snapshot is gone
    assert any(r["kind"] == "cbt_disabled" for r in reporter.of_type("event"))
    assert vc.disable_cbt(VM) is False  # already off: nothing done
    inv_vm = vc.inventory().vm(VM)
    assert inv_vm is not None and inv_vm.cbt_enabled is False
    s2 = vc.create_snapshot(VM, "b")
    assert set(vc.disk_change_ids(VM, s2).values()) == {None}
    off = vc.changed_areas(VM, s2, 2000, old)
    assert off.reset and "off" in (off.reason or "")
    vc.remove_snapshot(VM, s2)
    assert vc.enable_cbt(VM) is True  # on again: a new UUID, the old id is still void
    s3 = vc.create_snapshot(VM, "c")
    new = vc.disk_change_ids(VM, s3)[2000] or ""
    assert parse_change_id(new)[0] != parse_change_id(old)[0]
    again = vc.changed_areas(VM, s3, 2000, old)
    assert again.reset and "reset" in (again.reason or "")
    vc.remove_snapshot(VM, s3)
    with pytest.raises(SourceOperationError, match="no-such-vm: disable changed block tracking: ManagedObjectNotFound"):
        vc.disable_cbt("no-such-vm")


def test_vsphere_faults_name_vm_and_step(vc: FakeVCenter, estate: FakeEstate) -> None:
    with pytest.raises(SourceOperationError, match=r"win2019-app01: power on: InvalidPowerState"):
        vc.power_on(VM)
    with pytest.raises(SourceOperationError, match=r"remove snapshot snapshot-999: ManagedObjectNotFound"):
        vc.remove_snapshot(VM, "snapshot-999")
    with pytest.raises(SourceOperationError, match="multi-writer"):
        vc.create_snapshot("redis-a", "x")
    with pytest.raises(SourceOperationError, match="physical-mode RDM"):
        vc.create_snapshot("centos7-legacy01", "x")
    snap = vc.create_snapshot(VM, "x")
    estate.delete_vm(VM)
    with pytest.raises(SourceOperationError, match="ManagedObjectNotFound"):
        vc.disk_change_ids(VM, snap)
    assert VM not in {v.name for v in vc.inventory().vms}


def test_snapshot_chain_and_independent_disks(vc: FakeVCenter) -> None:
    vm = "rhel8-db01"  # two existing snapshots, disk 2002 independent
    assert [s.name for s in vc.list_snapshots(vm)] == ["before-kernel-update", "before-app-upgrade"]
    snap = vc.create_snapshot(vm, "scmt")
    with pytest.raises(SourceOperationError, match="snapshot chain"):
        vc.open_disk(vm, snap, 2000)
    with pytest.raises(SourceOperationError, match="independent"):
        vc.open_disk(vm, snap, 2002)
    assert vc.disk_change_ids(vm, snap)[2002] is None
    vc.remove_snapshot(vm, snap)
    assert len(vc.list_snapshots(vm)) == 2


def test_power_nics_shutdown_rename(vc: FakeVCenter, estate: FakeEstate, reporter) -> None:
    vc.set_nics_connected(VM, False)
    assert all(n.connected is False for n in (vc.inventory().vm(VM) or pytest.fail("VM missing")).nics)
    vc.set_nics_connected(VM, True)
    assert all(n.connected for n in (vc.inventory().vm(VM) or pytest.fail("VM missing")).nics)
    assert vc.shutdown_guest(VM, timeout=10) == "guest"
    assert vc.power_state(VM) == "poweredOff"
    assert vc.shutdown_guest(VM, timeout=1) == "already_off"
    with pytest.raises(SourceOperationError, match="InvalidPowerState"):
        vc.power_off(VM)
    vc.power_on(VM)
    estate.shutdown_delay = -1  # a guest that ignores the request
    assert vc.shutdown_guest(VM, timeout=0.1) == "hard"
    assert any("did not shut down" in r["message"] for r in reporter.of_type("log"))
    vc.power_on("centos7-legacy01") if vc.power_state("centos7-legacy01") == "poweredOff" else None
    assert vc.shutdown_guest("centos7-legacy01", timeout=5) == "hard"  # no VMware Tools
    vc.rename(VM, f"{VM}-migrated")
    vc.annotate(f"{VM}-migrated", "migrated by scmt")
    inv = vc.inventory()
    assert (
        inv.vm(VM) is None and (inv.vm(f"{VM}-migrated") or pytest.fail("VM missing")).annotation == "migrated by scmt"
    )


def test_inventory_reflects_live_state(vc: FakeVCenter) -> None:
    inv = vc.inventory()
    assert len(inv.vms) == 7
    app = inv.vm(VM)
    assert app is not None and app.disks[0].change_id is not None and app.source.startswith("vcenter:")
    assert (inv.vm("ubuntu22-web01") or pytest.fail("VM missing")).disks[0].change_id is None


def test_session_expiry_relogin_and_transient_read_errors(vc: FakeVCenter, estate: FakeEstate) -> None:
    snap = vc.create_snapshot(VM, "s")
    src = vc.open_disk(VM, snap, 2001)
    estate.http.expire_sessions()
    assert src.read(0, 4096) == expected_disk(VM, 1)[:4096]  # re-login on 401
    assert vc.logins == 2
    estate.http.fail_reads = 2  # two 503 answers, then success
    assert src.read(4096, 4096) == expected_disk(VM, 1)[4096:8192]
    estate.http.fail_reads = 10
    from scmt_cli.errors import TransportError

    with pytest.raises(TransportError) as info:
        src.read(0, 512)
    assert info.value.transient
    estate.http.fail_reads = 0
    estate.http.expire_sessions()
    assert vc.list_snapshots(VM)  # API calls re-login too
    vc.remove_snapshot(VM, snap)


def test_workload_thread_writes_and_stops_when_vm_is_off(vc: FakeVCenter, estate: FakeEstate) -> None:
    wl = Workload(estate, VM, rate=4 * MiB, io_size=64 * 1024, pattern="hotspot", max_bytes=MiB)
    with wl:
        for _ in range(200):
            if wl.written >= MiB:
                break
            import time

            time.sleep(0.01)
    assert wl.error is None and wl.written >= MiB
    assert {r.disk_key for r in wl.records} <= {2000, 2001}
    vc.power_off(VM)
    assert wl.write_once() is None


def test_a_stalled_client_does_not_block_the_server(estate: FakeEstate) -> None:
    import socket

    from .conftest import fake_settings

    host, port = estate.base_url.split("://")[1].rsplit(":", 1)
    stalled = socket.create_connection((host, int(port)))  # never starts TLS
    try:
        other = FakeVCenter(estate, fake_settings(estate))
        other.connect()
        assert other.power_state(VM) == "poweredOn"
        other.close()
    finally:
        stalled.close()


def test_resized_disk_forces_a_full_resync(vc: FakeVCenter, estate: FakeEstate) -> None:
    s1 = vc.create_snapshot(VM, "a")
    old_id = vc.disk_change_ids(VM, s1)[2001] or ""
    old_cap = vc.disk_capacities(VM, s1)[2001]
    with pytest.raises(ValueError, match="snapshots"):
        estate.vms[VM].disks[2001].grow(old_cap * 2)
    vc.remove_snapshot(VM, s1)
    estate.resize_disk(VM, 2001, old_cap * 2)
    s2 = vc.create_snapshot(VM, "b")
    assert vc.disk_capacities(VM, s2)[2001] == old_cap * 2
    assert (vc.inventory().vm(VM) or pytest.fail("VM missing")).disks[1].capacity_bytes == old_cap * 2
    res = vc.changed_areas(VM, s2, 2001, old_id, previous_capacity=old_cap)
    assert res.reset and "resized" in (res.reason or "")
    same = vc.changed_areas(VM, s2, 2001, old_id, previous_capacity=old_cap * 2)
    assert not same.reset
    src = vc.open_disk(VM, s2, 2001)
    assert src.size == old_cap * 2 and src.read(old_cap, 4096) == bytes(4096)
    vc.remove_snapshot(VM, s2)


def test_injected_faults_leave_nothing_behind(vc: FakeVCenter, estate: FakeEstate) -> None:
    estate.inject_fault("create_snapshot", VM, "SnapshotFault", "insufficient disk space on datastore")
    with pytest.raises(SourceOperationError, match=rf"{VM}: create snapshot: SnapshotFault: insufficient disk space"):
        vc.create_snapshot(VM, "scmt-1")
    assert vc.list_snapshots(VM) == []  # nothing half-done
    snap = vc.create_snapshot(VM, "scmt-1")  # the fault fired once
    estate.inject_fault("remove_snapshot", None, "InvalidState", "the VM is being migrated")
    with pytest.raises(SourceOperationError, match="InvalidState"):
        vc.remove_snapshot(VM, snap)
    assert [s.id for s in vc.list_snapshots(VM)] == [snap]
    estate.inject_fault("remove_snapshot", None, "TaskInProgress", "busy", times=2)  # transient: retried
    vc.remove_snapshot(VM, snap)
    assert vc.list_snapshots(VM) == []
