"""The assessment gate: sync refuses a VM that assessment blocks for its method."""

from __future__ import annotations

from scmt_cli.services.migration.context import MigrationContext
from scmt_cli.services.migration.snapshots import SnapshotOwner
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from tests.migration.conftest import Lab


def test_a_user_snapshot_blocks_the_agentless_seed(lab: Lab, ctx: MigrationContext) -> None:
    lab.estate.create_snapshot("web01", "before-patch", False, "")
    res = run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx)
    out = res.last["web01"]
    assert not out.ok
    assert res.exit_code == 20
    assert "snapshot.existing" in (out.error or "")
    # nothing was started on the vCenter: only the user's snapshot exists
    assert [s.name for s in lab.estate.vm("web01").snapshots] == ["before-patch"]
    assert lab.tool_snapshots("web01") == []


def test_the_tools_own_leftover_snapshot_does_not_block(lab: Lab, ctx: MigrationContext) -> None:
    lab.estate.create_snapshot("web01", "scmt-sync-demo-g9", False,
                               SnapshotOwner(ctx.store.store_id, "0123456789ab").tag)
    res = run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx)
    out = res.last["web01"]
    assert out.ok, out.error
    assert lab.tool_snapshots("web01") == []
    assert [s.split(" ")[0] for s in out.data["leftover_snapshots_removed"]] == ["scmt-sync-demo-g9"]


def test_assessment_refusing_a_resumed_cutover_fails_the_vm_instead_of_blocking_it(ctx: MigrationContext) -> None:
    """A failover rerun whose final pass assessment refuses (e.g. consolidation needed) must not strand the
    VM: it stays resumable by failover and rollback ('failed' while 'cutting-over'), with the rule named."""
    from scmt_cli.domain.vmstate import VmStatus, commands_allowed
    from scmt_cli.errors import BlockedByAssessmentError

    vm = ctx.plan.vms[0].name
    cutting = VmStatus(vm, "cutting-over", steps_done=("source-quiesced",))
    for status in (cutting, cutting.move("failed", error="earlier")):
        out = ctx.fail(status, BlockedByAssessmentError(f"{vm}: blocked by assessment: snapshot.consolidate"))
        assert (out.state, out.failed_from, out.steps_done) == ("failed", "cutting-over", ("source-quiesced",))
        assert "snapshot.consolidate" in (out.error or "")
        assert {"failover", "rollback"} <= set(commands_allowed(out.state, failed_from=out.failed_from))
    syncing = VmStatus(vm, "syncing")
    assert ctx.fail(syncing, BlockedByAssessmentError("blocked")).state == "blocked"
