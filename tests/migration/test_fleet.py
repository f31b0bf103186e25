"""Fleet mode of scmt sync in one process: rounds, leases, limits from the plan, status, group failover."""

from __future__ import annotations

import pytest

from scmt_cli.services.migration.context import MigrationContext
from scmt_cli.services.migration.failover import FailoverRequest, run_failover
from scmt_cli.services.migration.fleet import fleet_mode, plan_limits, round_key
from scmt_cli.services.migration.status import StatusRequest, status_service
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from scmt_cli.state import vm_resource
from scmt_cli.state.leases import claim
from tests.migration.conftest import Lab

VMS = ("web01", "db01", "redis-a", "redis-b")


def _finished_ok(ctx: MigrationContext) -> dict[str, int]:
    counts = dict.fromkeys(VMS, 0)
    for e in ctx.store.events(kinds=["generation_finished"]):
        if e.data["ok"]:
            counts[e.vm] += 1  # type: ignore[index]
    return counts


def test_one_shot_fleet_sync_is_one_round_each_vm_once(lab: Lab, ctx: MigrationContext,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCMT_HOST_ID", "host-a")
    req = SyncRequest(lab.plan, fleet=True)
    assert fleet_mode(req, ctx) and not fleet_mode(SyncRequest(lab.plan), ctx)
    first = run_sync(req, ctx)
    assert not first.failed and first.host == "host-a" and first.to_dict()["host"] == "host-a"
    assert sorted(first.last) == sorted(VMS)
    assert all(o.data["kind"] == "seed" for o in first.last.values())
    assert _finished_ok(ctx) == dict.fromkeys(VMS, 1)
    assert ctx.store.get_checkpoint(round_key("demo"))["round"] == 1  # type: ignore[index]
    for vm in VMS:
        assert lab.target_digests(vm) == lab.source_digests(vm)
    acquired = ctx.store.events(kinds=["lease_acquired"])
    released = ctx.store.events(kinds=["lease_released"])
    assert sorted(e.vm for e in acquired) == sorted(VMS) == sorted(e.vm for e in released)
    assert max(e.data["held"] for e in acquired) <= plan_limits(ctx).concurrency == 2
    # a second one-shot run finds round 1 complete and starts round 2: incrementals, again once each
    second = run_sync(req, ctx)
    assert all(o.data["kind"] == "incremental" for o in second.last.values())
    assert _finished_ok(ctx) == dict.fromkeys(VMS, 2)
    assert ctx.store.get_checkpoint(round_key("demo"))["round"] == 2  # type: ignore[index]


def test_vm_leased_by_another_host_is_left_to_it_and_status_names_the_host(
        lab: Lab, ctx: MigrationContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCMT_HOST_ID", "host-b")
    other, _ = claim(ctx.store, "demo", ["db01"], limits=plan_limits(ctx), lease_seconds=60)
    assert other is not None
    view = {v.vm: v for v in status_service(StatusRequest(lab.plan), ctx.store, lab.reporter).vms}
    assert view["db01"].host == "host-b" and view["web01"].host is None
    assert view["db01"].to_dict()["host"] == "host-b"
    monkeypatch.setenv("SCMT_HOST_ID", "host-a")
    # a run --until that host lets go: with db01 held elsewhere, the round cannot complete
    ctx.cancel.event.clear()
    import threading

    timer = threading.Timer(3.0, other.release)
    timer.start()
    try:
        res = run_sync(SyncRequest(lab.plan, fleet=True), ctx)
    finally:
        timer.cancel()
    assert not res.failed
    assert sorted(res.last) == sorted(VMS)  # db01 was synced here once host-b released it
    holders = {e.vm: e.data["host"] for e in ctx.store.events(kinds=["lease_acquired"])}
    assert holders["web01"] == "host-a"


def test_group_failover_is_all_or_nothing_while_a_host_drives_a_member(
        lab: Lab, ctx: MigrationContext, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not run_sync(SyncRequest(lab.plan, fleet=True), ctx).failed
    monkeypatch.setenv("SCMT_HOST_ID", "host-b")
    held, _ = claim(ctx.store, "demo", ["redis-b"], limits=plan_limits(ctx), lease_seconds=60, heartbeat=False)
    assert held is not None
    before = {vm: ctx.store.get_vm("demo", vm).state for vm in ("redis-a", "redis-b")}  # type: ignore[union-attr]
    monkeypatch.setenv("SCMT_HOST_ID", "host-a")
    res = run_failover(FailoverRequest(lab.plan, group="redis"), ctx)
    assert res.exit_code == 40
    after = {vm: ctx.store.get_vm("demo", vm).state for vm in ("redis-a", "redis-b")}  # type: ignore[union-attr]
    assert after == before == {"redis-a": "syncing", "redis-b": "syncing"}
    assert ctx.store.lock_holder(vm_resource("demo", "redis-a")) is None  # nothing left held by the failed try
    held.release()


def test_no_vm_is_started_while_a_per_host_limit_cannot_be_checked(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """vCenter cannot say where the VMs live: with a per-ESXi-host limit, nothing is claimed until it can."""
    from scmt_cli.services.migration import fleet
    from scmt_cli.services.migration.context import open_context

    text = lab.plan.read_text().replace("  concurrency: 2\n", "  concurrency: 4\n  concurrency_per_esxi_host: 1\n")
    lab.plan.write_text(text)
    real = fleet.placements
    answers: list[bool] = []

    def flaky(ctx: MigrationContext, names: list[str]) -> object:
        answers.append(len(answers) >= 2)  # the first two reads fail
        if not answers[-1]:
            return None
        assert ctx.store.events(kinds=["lease_acquired"]) == []  # nothing was claimed meanwhile
        return real(ctx, names)

    monkeypatch.setattr(fleet, "placements", flaky)
    monkeypatch.setattr(fleet._Placements, "RETRY_SECONDS", 0.05)  # noqa: SLF001
    store = lab.store()
    ctx = open_context(lab.plan, store, lab.reporter)
    try:
        res = run_sync(SyncRequest(lab.plan, fleet=True), ctx)
        assert not res.failed and sorted(res.last) == sorted(VMS)
        acquired = ctx.store.events(kinds=["lease_acquired"])
    finally:
        ctx.close()
        store.close()
    assert answers[:3] == [False, False, True]
    warned = [r["message"] for r in lab.reporter.of_type("log")
              if r["level"] == "warning" and "per-ESXi-host" in r["message"]]
    assert len(warned) == 1  # once per outage, not at every retry
    # all lab VMs share one ESXi host: with the limit enforced, never two at once
    assert max(e.data["held"] for e in acquired) == 1


@pytest.mark.timeout(300)
def test_a_vm_refused_for_another_stores_snapshot_ends_its_round_instead_of_being_claimed_forever(
        lab: Lab, ctx: MigrationContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal is exit 40 like a lost lease, but the lease is still this host's: the VM is done (failed)
    for this round, and the round ends; the other VMs are synced."""
    from scmt_cli.services.migration.snapshots import SnapshotOwner

    monkeypatch.setenv("SCMT_HOST_ID", "host-a")
    other = SnapshotOwner("f" * 32, "a1b2c3d4e5f6")
    lab.estate.create_snapshot("redis-a", "scmt-sync-demo-g1-a1b2c3d4", False,
                               f"scmt plan demo: seed sync, generation 1 {other.tag}")
    res = run_sync(SyncRequest(lab.plan, fleet=True), ctx)
    assert res.last["redis-a"].error_code == 40 and "--remove-foreign-snapshots" in (res.last["redis-a"].error or "")
    assert all(res.last[vm].ok for vm in VMS if vm != "redis-a")
    assert ctx.store.get_checkpoint(round_key("demo"))["round"] == 1  # type: ignore[index]
    claims = [e for e in ctx.store.events(kinds=["lease_acquired"]) if e.vm == "redis-a"]
    assert len(claims) == 1, claims  # claimed once in the round, not again and again
    assert ctx.status("redis-a")[0].state == "planned"
