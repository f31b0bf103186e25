"""Adversarial data-integrity checks of agent syncs: a live source, hard kills, resized disks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scmt_cli.events import RecordingReporter
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.services.migration import agentsync
from scmt_cli.services.migration.context import open_context
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from scmt_cli.state import StateStore
from tests.agent.conftest import lab_plan
from tests.agent.servers import TOKEN, running_agent
from tests.agent.test_migration import make_disk

MiB = 1024 * 1024


def _killed_after_copy(real: Any) -> Any:
    """``copy_chunks`` that copies everything, but only its first checkpoint was durable: a SIGKILL."""

    def run(*args: Any, **kw: Any) -> Any:
        ck = kw["checkpointer"]
        real_save, saves = ck.save, []

        def save(*a: Any) -> None:
            saves.append(a)
            if len(saves) == 1:
                real_save(*a)

        ck.save, ck.clear = save, (lambda: None)
        real(*args, **kw)
        raise KeyboardInterrupt

    return run


def test_a_seed_killed_then_resumed_on_a_live_disk_ends_identical(tmp_path: Path, estate: FakeEstate,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed wrote chunk 2 but died before checkpointing it; the guest then zeroed chunk 2."""
    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", TOKEN)
    d0 = tmp_path / "sda.raw"
    make_disk(d0, 6 * MiB, [(0, 4 * MiB)])
    with running_agent({"sda": d0}, tmp_path) as agent:
        plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "agent"}, address=f"127.0.0.1:{agent.port}", fingerprint=agent.fingerprint)
        store = StateStore.open(tmp_path / "state.db")
        ctx = open_context(plan, store, RecordingReporter())
        target = tmp_path / "lab" / "target" / "web01" / "disk0.raw"
        try:
            real = agentsync.copy_chunks
            monkeypatch.setattr(agentsync, "copy_chunks", _killed_after_copy(real))
            with pytest.raises(KeyboardInterrupt):
                run_sync(SyncRequest(plan), ctx)
            monkeypatch.setattr(agentsync, "copy_chunks", real)
            with open(d0, "r+b") as fh:
                fh.seek(2 * MiB)
                fh.write(bytes(MiB))  # the guest zeroes a chunk the dead seed had copied
            out = run_sync(SyncRequest(plan), ctx).last["web01"]
            assert out.ok, out.error
            assert target.read_bytes() == d0.read_bytes()
        finally:
            ctx.close()
            store.close()


def test_a_seed_interrupted_before_the_disk_grew_restarts_instead_of_failing(
        tmp_path: Path, estate: FakeEstate, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed checkpoint of the old size cannot be resumed; the pass must start over, not fail forever."""
    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", TOKEN)
    d0 = tmp_path / "sda.raw"
    make_disk(d0, 4 * MiB, [(0, 3 * MiB)])
    with running_agent({"sda": d0}, tmp_path) as agent:
        plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "agent"}, address=f"127.0.0.1:{agent.port}", fingerprint=agent.fingerprint)
        store = StateStore.open(tmp_path / "state.db")
        ctx = open_context(plan, store, RecordingReporter())
        target = tmp_path / "lab" / "target" / "web01" / "disk0.raw"
        try:
            real = agentsync.copy_chunks
            monkeypatch.setattr(agentsync, "copy_chunks", _killed_after_copy(real))
            with pytest.raises(KeyboardInterrupt):
                run_sync(SyncRequest(plan), ctx)
            monkeypatch.setattr(agentsync, "copy_chunks", real)
            with open(d0, "r+b") as fh:
                fh.truncate(6 * MiB)
                fh.seek(5 * MiB)
                fh.write(b"grown" * 1000)
        finally:
            ctx.close()
            store.close()
    with running_agent({"sda": d0}, tmp_path) as agent:  # the agent restarts and serves the grown disk
        plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "agent"}, address=f"127.0.0.1:{agent.port}", fingerprint=agent.fingerprint)
        store = StateStore.open(tmp_path / "state.db")
        ctx = open_context(plan, store, RecordingReporter())
        try:
            out = run_sync(SyncRequest(plan), ctx).last["web01"]
            assert out.ok, out.error
            assert target.read_bytes() == d0.read_bytes()
        finally:
            ctx.close()
            store.close()


def test_a_disk_the_agent_no_longer_serves_does_not_shift_another_disk_onto_its_target(
        tmp_path: Path, estate: FakeEstate, monkeypatch: pytest.MonkeyPatch) -> None:
    """Target indexes are recorded per agent disk name: sdb keeps disk1 once sda is gone, and its manifest
    (which describes disk1) stays valid, so the pass is incremental, not a reseed onto sda's file."""
    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", TOKEN)
    d0, d1 = tmp_path / "sda.raw", tmp_path / "sdb.raw"
    make_disk(d0, 4 * MiB, [(0, 3 * MiB)], seed=1)
    make_disk(d1, 4 * MiB, [(0, 3 * MiB)], seed=2)
    target = tmp_path / "lab" / "target" / "web01"
    for served in ({"sda": d0, "sdb": d1}, {"sdb": d1}):
        with running_agent(served, tmp_path) as agent:
            plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "agent"}, address=f"127.0.0.1:{agent.port}", fingerprint=agent.fingerprint)
            store = StateStore.open(tmp_path / "state.db")
            ctx = open_context(plan, store, RecordingReporter())
            try:
                out = run_sync(SyncRequest(plan), ctx).last["web01"]
                assert out.ok, out.error
            finally:
                ctx.close()
                store.close()
    assert [(d["label"], d["index"]) for d in out.data["disks"]] == [("sdb", 1)]
    # No warning beyond the scan of an image file (the kernel cannot track it): no reseed, no remap.
    assert out.data["disks"][0]["mode"] != "seed", out
    assert [w for w in out.warnings if "no reliable kernel change tracking" not in w] == [], out.warnings
    assert (target / "disk1.raw").read_bytes() == d1.read_bytes()
    assert (target / "disk0.raw").read_bytes() == d0.read_bytes()  # sda's copy was not overwritten
