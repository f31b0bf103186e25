"""failover, rollback, finalize, migrate and status on the in-process fake vCenter and the dir platform."""

from __future__ import annotations

import pytest

from scmt_cli.errors import InvalidStateError, TargetPlatformError, UsageError
from scmt_cli.lab.workload import Workload
from scmt_cli.services.migration.context import MigrationContext, open_context
from scmt_cli.services.migration.failover import FailoverRequest, run_failover
from scmt_cli.services.migration.finalize import FinalizeRequest, run_finalize
from scmt_cli.services.migration.migrate import MigrateRequest, run_migrate
from scmt_cli.services.migration.rollback import RollbackRequest, run_rollback
from scmt_cli.services.migration.snapshots import SnapshotOwner
from scmt_cli.services.migration.status import StatusRequest, status_service
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from tests.migration.conftest import Lab


def _nics(lab: Lab, vm: str) -> list[bool]:
    return [n.connected for n in lab.estate.vm(vm).nics]


def test_failover_quiesces_syncs_the_final_delta_and_starts_the_target(lab: Lab, ctx: MigrationContext) -> None:
    with Workload(lab.estate, "db01", rate=4 * 1024 * 1024, seed=3):
        run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
        run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    lab.write("db01", 7 * 1024 * 1024, b"final-delta" * 100)  # written after the last sync: only the final pass has it
    res = run_failover(FailoverRequest(lab.plan, vms=("db01",)), ctx)
    out = res.outcomes[0]
    assert out.ok and out.state == "cut-over", out.error
    assert out.data["final_sync"]["bytes_read"] >= 1024 * 1024
    assert out.data["downtime_seconds"] is not None and 0 <= out.data["downtime_seconds"] < 60
    assert out.data["source_before"] == {"power": "poweredOn", "nics_connected": True}
    assert _nics(lab, "db01") == [False]
    assert lab.target_digests("db01") == lab.source_digests("db01")
    target = ctx.platform.state("db01")
    assert target.defined and target.power == "running"
    assert lab.tool_snapshots("db01") == []
    assert [g.kind for g in ctx.store.generations("demo", "db01")][-1] == "final"
    again = run_failover(FailoverRequest(lab.plan, vms=("db01",)), ctx)
    assert again.outcomes[0].ok and again.outcomes[0].action == "already cut over"


def test_failover_refuses_a_vm_that_is_not_in_sync(lab: Lab, ctx: MigrationContext) -> None:
    res = run_failover(FailoverRequest(lab.plan, vms=("web01",)), ctx)
    assert res.exit_code == InvalidStateError.exit_code and "needs 'syncing'" in (res.outcomes[0].error or "")
    assert _nics(lab, "web01") == [True]


def test_a_group_fails_over_only_when_every_member_is_in_sync(lab: Lab, ctx: MigrationContext) -> None:
    run_sync(SyncRequest(lab.plan, vms=("redis-a",)), ctx)
    res = run_failover(FailoverRequest(lab.plan, group="redis"), ctx)
    assert not any(o.ok for o in res.outcomes) and res.exit_code == 42
    assert "redis-b" in (res.outcomes[0].error or "") and ctx.status("redis-a")[0].state == "syncing"
    run_sync(SyncRequest(lab.plan, vms=("redis-b",)), ctx)
    res = run_failover(FailoverRequest(lab.plan, group="redis", target_state="off"), ctx)
    assert [o.state for o in res.outcomes] == ["cut-over", "cut-over"]
    assert all(o.data.get("target_left_off") for o in res.outcomes)
    assert _nics(lab, "redis-a") == [True]  # the group's source action is none
    assert ctx.platform.state("redis-a").power == "shutoff"


def test_a_failed_step_is_resumed_without_repeating_the_done_ones(
        lab: Lab, ctx: MigrationContext, monkeypatch: pytest.MonkeyPatch) -> None:
    run_sync(SyncRequest(lab.plan, vms=("redis-b",)), ctx)
    platform = ctx.platform
    real_define = platform.define
    calls = {"n": 0}

    def flaky_define(spec):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise TargetPlatformError("redis-b: define: simulated libvirt failure")
        return real_define(spec)

    monkeypatch.setattr(platform, "define", flaky_define)
    res = run_failover(FailoverRequest(lab.plan, vms=("redis-b",)), ctx)
    out = res.outcomes[0]
    assert not out.ok and out.error_code == 50 and out.state == "failed"
    assert out.data["steps_done"] == ["source-quiesced", "final-sync-done", "converted"]
    res = run_failover(FailoverRequest(lab.plan, vms=("redis-b",)), ctx)
    assert res.outcomes[0].ok and res.outcomes[0].state == "cut-over"
    assert [g.kind for g in ctx.store.generations("demo", "redis-b")].count("final") == 1


def test_a_failing_pre_hook_stops_the_step_before_the_source_is_touched(lab: Lab, ctx: MigrationContext) -> None:
    from scmt_cli.services.migration.context import open_context

    lab.write_plan(group_hooks={"redis-a": [["false"]]})
    ctx = open_context(lab.plan, ctx.store, lab.reporter)
    run_sync(SyncRequest(lab.plan, vms=("redis-a", "redis-b")), ctx)
    res = run_failover(FailoverRequest(lab.plan, vms=("redis-a",), source_action="disconnect-network"), ctx)
    out = res.outcomes[0]
    assert not out.ok and out.error_code == 51
    assert _nics(lab, "redis-a") == [True]


def test_rollback_restores_the_source_in_under_a_minute_and_leaves_it_as_it_was(
        lab: Lab, ctx: MigrationContext) -> None:
    run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    before = lab.source_digests("db01")
    res = run_failover(FailoverRequest(lab.plan, vms=("db01",), source_action="shutdown"), ctx)
    assert res.outcomes[0].ok and lab.estate.vm("db01").power == "poweredOff"
    rb = run_rollback(RollbackRequest(lab.plan, vms=("db01",)), ctx)
    out = rb.outcomes[0]
    assert out.ok and out.state == "rolled-back"
    assert out.data["rollback_seconds"] < 60
    assert lab.estate.vm("db01").power == "poweredOn" and _nics(lab, "db01") == [True]
    assert lab.source_digests("db01") == before
    target = ctx.platform.state("db01")
    assert target.power == "shutoff" and not target.network_connected
    assert run_rollback(RollbackRequest(lab.plan, vms=("db01",)), ctx).outcomes[0].action == "already rolled back"
    # the target ran: the next sync seeds again, whole disks, and ends identical
    lab.write("db01", 0, b"after rollback" * 10)
    again = run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx).last["db01"]
    assert again.data["kind"] == "seed" and again.state == "syncing"
    assert lab.target_digests("db01") == lab.source_digests("db01")


def test_rollback_refuses_when_there_is_nothing_to_roll_back(lab: Lab, ctx: MigrationContext) -> None:
    with pytest.raises(InvalidStateError) as err:
        run_rollback(RollbackRequest(lab.plan), ctx)
    assert err.value.exit_code == 42 and "nothing to roll back" in err.value.message
    run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx)
    with pytest.raises(InvalidStateError) as err:
        run_rollback(RollbackRequest(lab.plan, vms=("web01",)), ctx)
    assert "nothing to roll back" in err.value.message


def test_finalize_commits_removes_tool_snapshots_and_keeps_the_source_off(lab: Lab, ctx: MigrationContext) -> None:
    run_sync(SyncRequest(lab.plan, vms=("redis-a",)), ctx)
    run_failover(FailoverRequest(lab.plan, vms=("redis-a",)), ctx)
    lab.estate.create_snapshot("redis-a", "scmt-sync-demo-g77", False,
                               SnapshotOwner(ctx.store.store_id, "0123456789ab").tag)
    res = run_finalize(FinalizeRequest(lab.plan, vms=("redis-a",), disable_cbt=True), ctx)
    out = res.outcomes[0]
    assert out.ok and out.state == "committed"
    assert lab.tool_snapshots("redis-a") == [] and out.data["snapshots_removed"]
    assert lab.estate.vm("redis-a").power == "poweredOff"
    assert out.data["cbt_disabled"] is True and lab.estate.vm("redis-a").cbt_config is False
    with pytest.raises(InvalidStateError):
        run_rollback(RollbackRequest(lab.plan, vms=("redis-a",)), ctx)


def _managed(lab: Lab, *vms: str) -> None:
    """Make ``vms`` of the lab's plan ``method: managed`` (the others stay agentless)."""
    text = lab.plan.read_text()
    for vm in vms:
        text = text.replace(f"  - name: {vm}\n", f"  - name: {vm}\n    method: managed\n", 1)
        assert f"name: {vm}\n    method: managed" in text
    lab.plan.write_text(text)


def test_migrate_runs_the_managed_method_unattended(lab: Lab) -> None:
    _managed(lab, "web01", "redis-b")
    store = lab.store()
    ctx = open_context(lab.plan, store, lab.reporter)
    try:
        with Workload(lab.estate, "web01", rate=1024 * 1024, seed=5):
            res = run_migrate(MigrateRequest(lab.plan, vms=("web01", "redis-b")), ctx)
        assert all(o.ok for o in res.outcomes), [o.error for o in res.outcomes]
        for o in res.outcomes:
            assert o.state == "cut-over" and o.data["passes"][0]["kind"] == "seed"
            assert lab.estate.vm(o.vm).power == "poweredOff"
            assert lab.target_digests(o.vm) == lab.source_digests(o.vm)
            assert ctx.platform.state(o.vm).power == "running"
        assert run_migrate(MigrateRequest(lab.plan, vms=("web01",)), ctx).outcomes[0].action == "already cut over"
    finally:
        ctx.close()
        store.close()


def test_migrate_never_applies_its_cutover_to_a_vm_of_another_method(lab: Lab, ctx: MigrationContext) -> None:
    """An agentless VM whose plan says disconnect-network is never shut down by migrate."""
    with pytest.raises(UsageError) as info:
        run_migrate(MigrateRequest(lab.plan, vms=("db01",)), ctx)
    msg = info.value.message
    assert "method agentless" in msg and "disconnect-network" in msg and "managed method only" in msg
    assert f"scmt sync {lab.plan} --vm db01" in msg and f"scmt failover {lab.plan} --vm db01" in msg
    with pytest.raises(UsageError, match="no VM with method managed"):
        run_migrate(MigrateRequest(lab.plan), ctx)
    vm = lab.estate.vm("db01")
    assert vm.power == "poweredOn" and all(n.connected for n in vm.nics)
    assert ctx.store.generations("demo", "db01") == []  # not even synced
    status = status_service(StatusRequest(lab.plan, vms=("db01",)), ctx.store, lab.reporter)
    assert "migrate" not in status.vms[0].next_commands and "sync" in status.vms[0].next_commands


def test_migrate_of_a_mixed_plan_migrates_the_managed_vms_and_skips_the_others(lab: Lab) -> None:
    _managed(lab, "redis-b")
    store = lab.store()
    ctx = open_context(lab.plan, store, lab.reporter)
    try:
        res = run_migrate(MigrateRequest(lab.plan), ctx)
        assert [o.vm for o in res.outcomes] == ["redis-b"] and res.outcomes[0].ok
        skipped = [w for w in res.warnings if w.startswith("skipped ")]
        assert len(skipped) == 3 and all("managed method only" in w for w in skipped)
        assert res.exit_code == 1
        for vm in ("web01", "db01", "redis-a"):
            assert lab.estate.vm(vm).power == "poweredOn"
        status = status_service(StatusRequest(lab.plan, vms=("redis-b",)), ctx.store, lab.reporter)
        assert status.vms[0].state == "cut-over"
    finally:
        ctx.close()
        store.close()


def test_status_reports_state_lag_estimates_and_warnings(lab: Lab, ctx: MigrationContext) -> None:
    lab.estate.delete_vm("web01")
    run_sync(SyncRequest(lab.plan), ctx)
    lab.write("db01", 0, b"q" * 65536)
    run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    res = status_service(StatusRequest(lab.plan), ctx.store, lab.reporter)
    views = {v.vm: v for v in res.vms}
    db = views["db01"]
    assert db.state == "syncing" and db.last_sync_kind == "incremental" and db.last_sync_bytes == 1024 * 1024
    assert db.lag_seconds is not None and db.lag_seconds >= 0
    assert db.est_downtime_seconds is not None and db.est_downtime_seconds >= 30
    assert db.plan_downtime_minutes is not None and "failover" in db.next_commands
    assert views["web01"].state == "failed" and any("failed while planned" in w for w in views["web01"].warnings)
    assert res.exit_code == 1
    data = res.to_dict()
    assert data["vms"][1]["vm"] == "db01" and data["vms"][1]["last_sync_at"].endswith("Z")


def test_libvirt_target_fails_over_and_rolls_back(lab: Lab, ctx: MigrationContext) -> None:
    pytest.importorskip("libvirt")
    import yaml

    from scmt_cli.services.migration.context import open_context

    doc = yaml.safe_load(lab.plan.read_text())
    doc["target"] = {"type": "libvirt", "uri": "test:///default", "storage": {"*": str(lab.root / "pool")},
                     "disk_format": "raw", "networks": doc["target"]["networks"]}
    lab.plan.write_text(yaml.safe_dump(doc))
    lv = open_context(lab.plan, ctx.store, lab.reporter)
    try:
        run_sync(SyncRequest(lab.plan, vms=("redis-b",)), lv)
        out = run_failover(FailoverRequest(lab.plan, vms=("redis-b",), direct=True), lv).outcomes[0]
        assert out.ok and out.state == "cut-over", out.error
        state = lv.platform.state("redis-b")
        assert state.defined and state.power == "running" and state.platform == "libvirt"
        assert (lab.root / "pool" / "redis-b" / "disk0.raw").exists()
        back = run_rollback(RollbackRequest(lab.plan, vms=("redis-b",)), lv).outcomes[0]
        assert back.ok and lv.platform.state("redis-b").power == "shutoff"
    finally:
        lv.close()


def test_an_unmapped_network_stops_failover_before_the_source_is_touched(lab: Lab, ctx: MigrationContext) -> None:
    run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    text = lab.plan.read_text()
    unmapped = text.replace('"VM Network": default', '"Other Network": default').replace("App-VLAN20: vlan20",
                                                                                        "Other-VLAN: vlan20")
    assert unmapped != text
    lab.plan.write_text(unmapped)
    fresh = ctx.store
    from scmt_cli.services.migration.context import open_context

    ctx2 = open_context(lab.plan, fresh, ctx.reporter)
    try:
        res = run_failover(FailoverRequest(lab.plan, vms=("db01",)), ctx2)
    finally:
        ctx2.close()
    out = res.outcomes[0]
    assert not out.ok and "target.networks does not map" in (out.error or "")
    assert _nics(lab, "db01") == [True]  # the source was never disconnected
    assert lab.estate.vm("db01").power == "poweredOn"
    assert ctx.status("db01")[0].steps_done == ()
