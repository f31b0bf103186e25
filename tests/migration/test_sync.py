"""scmt sync: seed, CBT incrementals, snapshots, CBT off/reset, failures, resumption."""

from __future__ import annotations

import threading
import time

import pytest

from scmt_cli.errors import InvalidStateError, ScmtError
from scmt_cli.services.migration import sync as sync_mod
from scmt_cli.services.migration.context import MigrationContext
from scmt_cli.services.migration.snapshots import SnapshotOwner
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from tests.migration.conftest import Lab

MIB = 1024 * 1024


def test_seed_copies_every_allocated_byte_then_incrementals_copy_only_changes(lab: Lab, ctx: MigrationContext) -> None:
    first = run_sync(SyncRequest(lab.plan), ctx)
    assert first.exit_code in (0, 1) and not first.failed
    for vm in ("web01", "db01", "redis-a", "redis-b"):
        out = first.last[vm]
        assert out.state == "syncing" and out.data["kind"] == "seed"
        assert lab.target_digests(vm) == lab.source_digests(vm)
        assert lab.tool_snapshots(vm) == []
    # db01's layout allocates 6.5 MiB + 12 MiB + 1 MiB: only allocated chunks are read
    assert first.last["db01"].data["bytes_read"] <= 21 * MIB

    lab.write("db01", 5 * MIB + 4096, b"x" * 4096)
    second = run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    out = second.last["db01"]
    assert out.data["kind"] == "incremental"
    assert out.data["bytes_read"] == MIB  # one 1 MiB chunk around the 4 KiB write
    assert lab.target_digests("db01") == lab.source_digests("db01")
    third = run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    assert third.last["db01"].data["bytes_read"] == 0
    assert lab.tool_snapshots("db01") == []
    gens = ctx.store.generations("demo", "db01")
    assert [g.kind for g in gens] == ["seed", "incremental", "incremental"] and all(g.ok for g in gens)


def test_cbt_off_is_turned_on_and_a_reset_forces_a_full_resync(lab: Lab, ctx: MigrationContext) -> None:
    res = run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx)
    assert res.last["web01"].data.get("cbt_enabled") is True
    assert [e["change"] for e in lab.reporter.of_type("event") if e.get("kind") == "source_changed"] == ["cbt_enabled"]
    assert run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx).last["web01"].data["bytes_read"] == 0
    lab.estate.reset_cbt("web01")
    lab.write("web01", 0, b"y" * 512)
    res = run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx)
    out = res.last["web01"]
    assert out.data["disks"][0]["mode"] == "full-resync"
    assert out.data["bytes_read"] == 24 * MIB
    assert any("full" in w or "whole disk" in w for w in out.warnings)
    assert res.exit_code == 1
    assert lab.target_digests("web01") == lab.source_digests("web01")


def test_leftover_tool_snapshots_are_removed_and_reported(lab: Lab, ctx: MigrationContext) -> None:
    dead_run = SnapshotOwner(ctx.store.store_id, "0123456789ab")  # a run of this store that was killed
    lab.estate.create_snapshot("redis-a", "scmt-sync-demo-g99", False, f"left by a killed run {dead_run.tag}")
    res = run_sync(SyncRequest(lab.plan, vms=("redis-a",)), ctx)
    out = res.last["redis-a"]
    assert out.ok and out.data["leftover_snapshots_removed"]
    assert "scmt-sync-demo-g99" in out.data["leftover_snapshots_removed"][0]
    assert lab.tool_snapshots("redis-a") == []


def test_one_failing_vm_does_not_stop_the_others_and_exit_is_60(lab: Lab, ctx: MigrationContext) -> None:
    lab.estate.delete_vm("web01")
    res = run_sync(SyncRequest(lab.plan), ctx)
    assert res.failed == ["web01"] and res.exit_code == 60
    assert res.last["db01"].ok and res.last["db01"].state == "syncing"
    status, _ = ctx.status("web01")
    assert status.state == "failed" and status.failed_from == "planned"  # it never started seeding
    assert res.to_dict()["failed"] == ["web01"]


def test_interrupted_seed_resumes_without_recopying_and_ends_identical(
        lab: Lab, ctx: MigrationContext, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = {"n": 0}
    real_readinto = sync_mod._CancellableSource.readinto

    def dying_readinto(self: sync_mod._CancellableSource, offset: int, buf: memoryview) -> None:
        reads["n"] += 1
        if reads["n"] == 12:
            raise KeyboardInterrupt  # as a Ctrl-C in the middle of the copy
        time.sleep(0.01)
        real_readinto(self, offset, buf)

    monkeypatch.setattr(sync_mod._CancellableSource, "readinto", dying_readinto)
    with pytest.raises(KeyboardInterrupt):
        run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    monkeypatch.setattr(sync_mod._CancellableSource, "readinto", real_readinto)
    assert lab.tool_snapshots("db01") == []  # removed even when interrupted
    lab.write("db01", 0, b"z" * 4096)  # the guest keeps writing meanwhile
    res = run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    out = res.last["db01"]
    assert out.ok and out.state == "syncing" and out.data["kind"] == "seed"
    assert any(d["recovered"] for d in out.data["disks"])
    assert out.data["bytes_read"] < 20 * MIB  # what was checkpointed before the stop is not read again
    assert lab.target_digests("db01") == lab.source_digests("db01")


def test_a_vm_locked_by_another_run_is_refused_without_changing_it(lab: Lab, ctx: MigrationContext) -> None:
    other = lab.store()
    try:
        with other.lock("vm:demo/redis-b"):
            res = run_sync(SyncRequest(lab.plan, vms=("redis-b",)), ctx)
    finally:
        other.close()
    out = res.last["redis-b"]
    assert not out.ok and out.error_code == 40 and out.state == "planned"


def test_sync_refuses_a_vm_that_was_cut_over(lab: Lab, ctx: MigrationContext) -> None:
    from scmt_cli.domain.vmstate import VmStatus

    run_sync(SyncRequest(lab.plan, vms=("redis-a",)), ctx)
    ctx.save_status(VmStatus("redis-a", "cut-over"))
    res = run_sync(SyncRequest(lab.plan, vms=("redis-a",)), ctx)
    assert res.last["redis-a"].error_code == InvalidStateError.exit_code
    assert ctx.status("redis-a")[0].state == "cut-over"


def test_pool_runs_at_most_the_plan_concurrency(ctx: MigrationContext) -> None:
    active, peak = 0, 0
    lock = threading.Lock()

    def work(item: str) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return item

    assert ctx.run_pool(["a", "b", "c", "d", "e"], work, workers=2) == ["a", "b", "c", "d", "e"]
    assert peak == 2


def test_unknown_vm_is_a_usage_error(lab: Lab, ctx: MigrationContext) -> None:
    with pytest.raises(ScmtError) as err:
        run_sync(SyncRequest(lab.plan, vms=("nope",)), ctx)
    assert err.value.exit_code == 2 and "nope" in err.value.message


def test_every_repeats_until_the_deadline(lab: Lab, ctx: MigrationContext) -> None:
    import datetime as dt

    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.6)
    res = run_sync(SyncRequest(lab.plan, vms=("redis-b",), every=0.2, until=until), ctx)
    assert len(res.rounds) >= 2 and res.stopped == "--until reached"
    assert [o.data["kind"] for o in (r[0] for r in res.rounds)][:2] == ["seed", "incremental"]


def test_until_ready_stops_once_every_vm_is_in_sync(lab: Lab, ctx: MigrationContext) -> None:
    res = run_sync(SyncRequest(lab.plan, vms=("redis-a", "redis-b"), every=30, until_ready=True), ctx)
    assert len(res.rounds) == 1 and "ready" in res.stopped


def test_sync_hooks_run_around_each_vm_and_a_failing_pre_hook_stops_it(lab: Lab, ctx: MigrationContext) -> None:
    import sys

    import yaml

    from scmt_cli.services.migration.context import open_context

    doc = yaml.safe_load(lab.plan.read_text())
    marker = lab.root / "post-hook.txt"
    record = "import os,sys; open(sys.argv[1],'a').write(os.environ['SCMT_VM']+' '+os.environ['SCMT_STEP']+'\\n')"
    doc["defaults"]["hooks"] = {"sync": {"pre": [["false"]], "post": [[sys.executable, "-c", record, str(marker)]]}}
    lab.plan.write_text(yaml.safe_dump(doc))
    failing = open_context(lab.plan, ctx.store, lab.reporter)
    res = run_sync(SyncRequest(lab.plan, vms=("redis-a",)), failing)
    out = res.last["redis-a"]
    assert not out.ok and out.error_code == 51 and res.exit_code == 51
    assert lab.estate.vm("redis-a").snapshots == [] and not marker.exists()
    doc["defaults"]["hooks"]["sync"]["pre"] = [["true"]]
    lab.plan.write_text(yaml.safe_dump(doc))
    fixed = open_context(lab.plan, ctx.store, lab.reporter)
    res = run_sync(SyncRequest(lab.plan, vms=("redis-a",)), fixed)
    assert res.last["redis-a"].ok and marker.read_text() == "redis-a seed\n"


def test_a_pass_whose_lease_lapsed_writes_nothing_more_and_says_so(lab: Lab, ctx: MigrationContext,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A host cut off from the store must not write after another host could have taken the VM over."""
    from scmt_cli.state.locks import VmLock

    fenced: list[str] = []
    real_fence = VmLock.fence

    def fence(self: VmLock) -> None:
        fenced.append(self.resource)
        if len(fenced) > 3:  # the lease could not be renewed from the fourth write on
            self._expires = self._store.clock()  # noqa: SLF001 - what a missed renewal leaves behind
        real_fence(self)

    monkeypatch.setattr(VmLock, "fence", fence)
    res = run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    out = res.last["db01"]
    assert not out.ok and out.error_code == 40 and "could not be renewed in time" in (out.error or "")
    assert set(fenced) == {"vm:demo/db01"}
    assert out.data.get("bytes_written", 0) <= 3 * MIB  # at most the three writes let through


def test_cbt_is_turned_on_only_when_the_plan_allows_it_and_the_result_says_so(lab: Lab,
                                                                             ctx: MigrationContext) -> None:
    assert lab.estate.vm("web01").cbt_config is False  # the lab's web01 starts without CBT
    res = run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx)
    out = res.last["web01"]
    assert out.ok and out.data["cbt_enabled"] is True and res.exit_code == 0  # a decision the plan made
    assert any("turned on (it was off; source.enable_cbt: true" in c for c in out.data["source_changes"])


def test_enable_cbt_false_blocks_a_vm_without_cbt_and_leaves_it_untouched(lab: Lab) -> None:
    from scmt_cli.services.migration.context import open_context

    lab.plan.write_text(lab.plan.read_text().replace("source:\n", "source:\n  enable_cbt: false\n", 1))
    store = lab.store()
    ctx = open_context(lab.plan, store, lab.reporter)
    try:
        res = run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx)
    finally:
        ctx.close()
        store.close()
    out = res.last["web01"]
    assert not out.ok and out.error_code == 20 and "cbt.disabled" in (out.error or "")
    assert "source.enable_cbt is false" in (out.error or "")
    assert lab.estate.vm("web01").cbt_config is False and lab.tool_snapshots("web01") == []


def test_a_vm_assessment_blocks_is_blocked_with_its_rule_ids_not_failed(lab: Lab, ctx: MigrationContext) -> None:
    from scmt_cli.services.migration.failover import FailoverRequest, run_failover
    from scmt_cli.services.migration.status import StatusRequest, status_service

    assert run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx).last["db01"].state == "syncing"
    snap = lab.estate.create_snapshot("db01", "before-patching", False, "an admin's snapshot")
    res = run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    out = res.last["db01"]
    assert not out.ok and out.error_code == 20 and out.state == "blocked" and res.exit_code == 20
    status, _ = ctx.status("db01")
    assert status.state == "blocked" and status.failed_from == "syncing" and "snapshot" in (status.error or "")
    view = status_service(StatusRequest(lab.plan, vms=("db01",)), ctx.store, lab.reporter).vms[0]
    assert view.state == "blocked" and view.next_commands == ["sync"]
    assert any("blocked by assessment" in w and "scmt assess PLAN" in w for w in view.warnings)
    fo = run_failover(FailoverRequest(lab.plan, vms=("db01",)), ctx)
    assert fo.exit_code == 42 and "'blocked' by assessment (while 'syncing')" in (fo.outcomes[0].error or "")
    assert lab.estate.vm("db01").power == "poweredOn" and all(n.connected for n in lab.estate.vm("db01").nics)
    lab.estate.remove_snapshot("db01", snap)  # the cause is gone: the next sync carries on where it was
    again = run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx).last["db01"]
    assert again.ok and again.state == "syncing" and again.data["kind"] == "incremental"


def test_a_blocked_vm_that_never_seeded_is_blocked_while_planned(lab: Lab, ctx: MigrationContext) -> None:
    lab.estate.create_snapshot("redis-a", "someone-elses", False, "")
    out = run_sync(SyncRequest(lab.plan, vms=("redis-a",)), ctx).last["redis-a"]
    assert out.state == "blocked" and ctx.status("redis-a")[0].failed_from == "planned"
    assert ctx.store.generations("demo", "redis-a") == []
