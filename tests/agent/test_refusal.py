"""A method without a wired source is refused (exit 4), never copied through vCenter snapshots."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from scmt_cli.errors import NotAvailableError, UsageError
from scmt_cli.events import RecordingReporter
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.services.migration import source
from scmt_cli.services.migration.context import open_context
from scmt_cli.services.migration.failover import FailoverRequest, run_failover
from scmt_cli.services.migration.migrate import MigrateRequest, run_migrate
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from scmt_cli.state import StateStore
from tests.agent.conftest import lab_plan


def test_unwired_method_is_refused_by_sync_failover_and_migrate(tmp_path: Path, estate: FakeEstate,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # hot-backup is wired now; pretend it is not to check the guard every command goes through.
    monkeypatch.setattr(source, "WIRED_METHODS", frozenset({"managed", "agentless", "agent"}))
    plan = lab_plan(tmp_path, estate, ("web01", "db01"), {"db01": "hot-backup"})
    store = StateStore.open(tmp_path / "state.db")
    ctx = open_context(plan, store, RecordingReporter())
    try:
        res = run_sync(SyncRequest(plan), ctx)
        out = res.last
        assert out["web01"].ok and out["web01"].state == "syncing"
        assert not out["db01"].ok and out["db01"].error_code == 4
        assert "db01" in (out["db01"].error or "") and "hot-backup" in (out["db01"].error or "")
        assert out["db01"].state == "planned"  # a refusal changes nothing
        assert not [s for s in estate.vm("db01").snapshots if s.name.startswith("scmt-")]
        assert res.exit_code == 60
        only = run_sync(SyncRequest(plan, vms=("db01",)), ctx)
        assert only.exit_code == 4
        fo = run_failover(FailoverRequest(plan, vms=("db01",)), ctx)
        assert fo.exit_code == 4 and "hot-backup" in (fo.outcomes[0].error or "")
        with pytest.raises(UsageError, match="managed method only"):  # migrate refuses every unmanaged VM first
            run_migrate(MigrateRequest(plan, vms=("db01",)), ctx)
        assert ctx.status("db01")[0].state == "planned"
    finally:
        ctx.close()
        store.close()


def test_every_plan_method_is_wired() -> None:
    from scmt_cli.domain.plan.model import METHODS

    eff = dataclasses.make_dataclass("E", [("name", str), ("method", str)])
    for m in METHODS:
        source.require_wired_method(eff("vm", m), "sync")  # type: ignore[arg-type]
    with pytest.raises(NotAvailableError):
        source.require_wired_method(eff("vm", "teleport"), "sync")  # type: ignore[arg-type]
