"""Snapshots carry their owner (issue 15.4): a store removes only its own leftovers."""

from __future__ import annotations

from scmt_cli.services.migration.context import MigrationContext
from scmt_cli.services.migration.snapshots import (
    STUN_SNAPSHOT_NAME,
    SnapshotOwner,
    owner_of,
    stun_key,
    stun_started,
)
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from tests.migration.conftest import Lab

OTHER = SnapshotOwner("f" * 32, "a1b2c3d4e5f6")  # another state store, e.g. another SCMT_STATE


def test_the_sync_snapshot_carries_this_store_and_this_run(lab: Lab, ctx: MigrationContext) -> None:
    seen: list[tuple[str, str]] = []
    original = lab.estate.create_snapshot

    def spy(vm: str, name: str, quiesce: bool, description: str) -> str:
        seen.append((name, description))
        return original(vm, name, quiesce, description)

    lab.estate.create_snapshot = spy  # type: ignore[method-assign]
    assert run_sync(SyncRequest(lab.plan, vms=("redis-a",)), ctx).last["redis-a"].ok
    [(name, description)] = [s for s in seen if s[0].startswith("scmt-sync-")]
    assert name == f"scmt-sync-demo-g1-{ctx.run_id[:8]}"
    assert f"[scmt store={ctx.store.store_id} run={ctx.run_id}]" in description


def test_another_stores_snapshot_is_reported_left_alone_and_the_vm_refused(lab: Lab, ctx: MigrationContext) -> None:
    """Its own snapshot would be a delta on the other store's (which a run may be reading): exit 40."""
    snap = lab.estate.create_snapshot("redis-a", "scmt-sync-demo-g1-a1b2c3d4", False,
                                      f"scmt plan demo: seed sync, generation 1 {OTHER.tag}")
    res = run_sync(SyncRequest(lab.plan, vms=("redis-a",)), ctx)
    out = res.last["redis-a"]
    assert [s.id for s in lab.estate.vm("redis-a").snapshots] == [snap]  # untouched, and none of ours
    assert not out.ok and out.error_code == 40 and res.exit_code == 40
    assert out.error == (f"redis-a: snapshot scmt-sync-demo-g1-a1b2c3d4 ({snap}) made by another scmt state store "
                         f"(state store {OTHER.store}, run {OTHER.run}) is on the VM: another scmt run may be "
                         f"migrating it; let it finish, or if it is gone run 'scmt sync {lab.plan} --vm redis-a "
                         "--remove-foreign-snapshots'")
    assert out.state == "planned"  # a refusal: the VM's state is not "failed"
    assert ctx.status("redis-a")[0].state == "planned"  # nor "seeding" in the store: the pass never began
    warnings = [r["message"] for r in lab.reporter.of_type("log") if r["level"] == "warning"]
    assert any("left alone" in m and "--remove-foreign-snapshots" in m for m in warnings), warnings
    assert [e for e in lab.reporter.of_type("event") if e["kind"] == "foreign_snapshot"]


def test_remove_foreign_snapshots_removes_them_and_says_so(lab: Lab, ctx: MigrationContext) -> None:
    lab.estate.create_snapshot("redis-a", "scmt-sync-demo-g1-a1b2c3d4", False, OTHER.tag)
    lab.estate.create_snapshot("redis-a", "scmt-sync-old", False, "no tag at all")
    res = run_sync(SyncRequest(lab.plan, vms=("redis-a",), remove_foreign_snapshots=True), ctx)
    out = res.last["redis-a"]
    assert out.ok, out.error
    assert lab.tool_snapshots("redis-a") == []
    assert sorted(x.split(" ")[0] for x in out.data["leftover_snapshots_removed"]) == [
        "scmt-sync-demo-g1-a1b2c3d4", "scmt-sync-old"]
    assert any("without an scmt owner tag (--remove-foreign-snapshots)" in w for w in out.warnings)
    assert lab.target_digests("redis-a") == lab.source_digests("redis-a")


def test_an_untagged_tool_snapshot_is_not_taken_for_ours(lab: Lab, ctx: MigrationContext) -> None:
    lab.estate.create_snapshot("redis-a", "scmt-sync-demo-g5", False, "")
    out = run_sync(SyncRequest(lab.plan, vms=("redis-a",)), ctx).last["redis-a"]
    assert lab.tool_snapshots("redis-a") == ["scmt-sync-demo-g5"]
    assert out.error_code == 40 and "without an scmt owner tag" in (out.error or "")


def test_a_stun_snapshot_this_store_recorded_as_started_is_removed(lab: Lab, ctx: MigrationContext) -> None:
    """A run killed inside the CBT stun cycle leaves an unowned scmt-cbt-stun snapshot: the store knows."""
    lab.estate.create_snapshot("redis-a", STUN_SNAPSHOT_NAME, False, "stun cycle to activate CBT")
    stun_started(ctx.store, "demo", "redis-a", SnapshotOwner(ctx.store.store_id, "0123456789ab"))
    out = run_sync(SyncRequest(lab.plan, vms=("redis-a",)), ctx).last["redis-a"]
    assert out.ok, out.error
    assert lab.tool_snapshots("redis-a") == []
    assert [x.split(" ")[0] for x in out.data["leftover_snapshots_removed"]] == [STUN_SNAPSHOT_NAME]
    assert ctx.store.get_checkpoint(stun_key("demo", "redis-a")) is None


def test_a_stun_snapshot_this_store_did_not_start_is_reported(lab: Lab, ctx: MigrationContext) -> None:
    lab.estate.create_snapshot("redis-a", STUN_SNAPSHOT_NAME, False, "stun cycle to activate CBT")
    out = run_sync(SyncRequest(lab.plan, vms=("redis-a",)), ctx).last["redis-a"]
    assert lab.tool_snapshots("redis-a") == [STUN_SNAPSHOT_NAME]
    assert out.error_code == 40 and STUN_SNAPSHOT_NAME in (out.error or "")


def test_owner_tag_round_trip() -> None:
    from scmt_cli.vsphere.api import SnapshotInfo

    assert owner_of(SnapshotInfo("s-1", "scmt-x", description=f"anything {OTHER.tag}")) == OTHER
    assert owner_of(SnapshotInfo("s-1", "scmt-x", description="[scmt store=abc run=def]")) is None
    assert owner_of(SnapshotInfo("s-1", "scmt-x")) is None
