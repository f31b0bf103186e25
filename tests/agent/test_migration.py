"""Sync and failover of ``method: agent`` VMs: disks through the agent, no snapshots, NIC through vCenter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scmt_cli.events import RecordingReporter
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.services.migration.context import open_context
from scmt_cli.services.migration.failover import FailoverRequest, run_failover
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from scmt_cli.state import StateStore
from tests.agent.conftest import lab_plan
from tests.agent.servers import TOKEN, running_agent

MiB = 1024 * 1024


def make_disk(path: Path, size: int, runs: list[tuple[int, int]], seed: int = 1) -> None:
    rnd = __import__("random").Random(seed)
    with open(path, "wb") as fh:
        fh.truncate(size)
        for off, n in runs:
            fh.seek(off)
            fh.write(rnd.randbytes(n // 2) + b"compressible text " * (n // 2 // 18) + bytes(n // 2 % 18))


def test_agent_vm_seeds_then_syncs_only_changes_then_fails_over(tmp_path: Path, estate: FakeEstate,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", TOKEN)
    d0, d1 = tmp_path / "web01-sda.raw", tmp_path / "web01-sdb.raw"
    make_disk(d0, 24 * MiB, [(0, MiB), (3 * MiB, 6 * MiB)])
    make_disk(d1, 8 * MiB, [(MiB, 2 * MiB)], seed=2)
    with running_agent({"sda": d0, "sdb": d1}, tmp_path) as agent:
        plan = lab_plan(tmp_path, estate, ("web01", "db01"), {"web01": "agent"},
                        address=f"127.0.0.1:{agent.port}", fingerprint=agent.fingerprint)
        store = StateStore.open(tmp_path / "state.db")
        rep = RecordingReporter()
        ctx = open_context(plan, store, rep)
        try:
            seed = run_sync(SyncRequest(plan, vms=("web01",)), ctx).last["web01"]
            assert seed.ok, seed.error
            assert seed.state == "syncing" and seed.data["source"] == "agent"
            assert [d["mode"] for d in seed.data["disks"]] == ["seed", "seed"]
            target = tmp_path / "lab" / "target" / "web01"
            assert (target / "disk0.raw").read_bytes() == d0.read_bytes()
            assert (target / "disk1.raw").read_bytes() == d1.read_bytes()
            assert not estate.vm("web01").snapshots  # the agent method takes no snapshot
            # Compression: the compressible half of each run shrinks on the wire.
            assert 0 < seed.data["bytes_on_wire"] < seed.data["bytes_read"]

            with open(d0, "r+b") as fh:  # the guest writes 3 scattered blocks
                for off in (5 * MiB + 100, 12 * MiB, 20 * MiB + 4096):
                    fh.seek(off)
                    fh.write(os.urandom(3000))
            inc = run_sync(SyncRequest(plan, vms=("web01",)), ctx).last["web01"]
            assert inc.ok and [d["mode"] for d in inc.data["disks"]] == ["incremental", "incremental"]
            assert inc.data["bytes_read"] == 3 * MiB  # 3 changed chunks of 1 MiB, nothing else
            assert inc.data["bytes_on_wire"] <= 3 * MiB + 4096
            assert (target / "disk0.raw").read_bytes() == d0.read_bytes()
            nothing = run_sync(SyncRequest(plan, vms=("web01",)), ctx).last["web01"]
            assert nothing.data["bytes_read"] == 0 and nothing.data["bytes_on_wire"] == 0

            with open(d1, "r+b") as fh:  # written after the last sync: only the final pass copies it
                fh.seek(6 * MiB)
                fh.write(b"late write" * 100)
            fo = run_failover(FailoverRequest(plan, vms=("web01",)), ctx)
            out = fo.outcomes[0]
            assert out.ok, out.error
            assert out.state == "cut-over"
            assert not any(n.connected for n in estate.vm("web01").nics)  # disconnected through vCenter
            assert (target / "disk1.raw").read_bytes() == d1.read_bytes()
            assert out.data["final_sync"]["bytes_read"] == MiB
            assert not estate.vm("web01").snapshots
        finally:
            ctx.close()
            store.close()
        logs = " ".join(str(r.data) for r in rep.records + agent.reporter.records)
        assert TOKEN not in logs


def test_wrong_token_in_plan_fails_the_vm_with_exit_11(tmp_path: Path, estate: FakeEstate,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", "not-the-right-token-at-all")
    d0 = tmp_path / "sda.raw"
    make_disk(d0, 4 * MiB, [(0, MiB)])
    with running_agent({"sda": d0}, tmp_path) as agent:
        plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "agent"}, address=f"127.0.0.1:{agent.port}", fingerprint=agent.fingerprint)
        store = StateStore.open(tmp_path / "state.db")
        ctx = open_context(plan, store, RecordingReporter())
        try:
            res = run_sync(SyncRequest(plan), ctx)
            assert res.exit_code == 11
            assert "not-the-right-token" not in str(res.to_dict())
        finally:
            ctx.close()
            store.close()
        assert agent.server.auth_failures == 1


def test_an_interrupted_incremental_never_leaves_stale_chunks(tmp_path: Path, estate: FakeEstate,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass killed after writing a chunk, then the guest writes the old bytes back: the chunk is recopied."""
    from scmt_cli.services.migration import agentsync

    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", TOKEN)
    d0 = tmp_path / "sda.raw"
    make_disk(d0, 8 * MiB, [(0, 4 * MiB)])
    original = d0.read_bytes()
    with running_agent({"sda": d0}, tmp_path) as agent:
        plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "agent"}, address=f"127.0.0.1:{agent.port}", fingerprint=agent.fingerprint)
        store = StateStore.open(tmp_path / "state.db")
        ctx = open_context(plan, store, RecordingReporter())
        target = tmp_path / "lab" / "target" / "web01" / "disk0.raw"
        try:
            assert run_sync(SyncRequest(plan), ctx).last["web01"].ok
            with open(d0, "r+b") as fh:
                fh.seek(2 * MiB)
                fh.write(b"X" * 1000)
            real = agentsync.changed_copy

            def crash_after_copy(*args: object, **kw: object) -> object:
                real(*args, **kw)  # type: ignore[arg-type]
                raise KeyboardInterrupt  # killed before the manifest is saved

            monkeypatch.setattr(agentsync, "changed_copy", crash_after_copy)
            with pytest.raises(KeyboardInterrupt):
                run_sync(SyncRequest(plan), ctx)
            monkeypatch.setattr(agentsync, "changed_copy", real)
            assert target.read_bytes() != original  # the new bytes reached the target
            d0.write_bytes(original)  # the guest restores the old content: digests equal the old manifest
            out = run_sync(SyncRequest(plan), ctx).last["web01"]
            assert out.ok, out.error
            assert out.data["bytes_read"] == MiB  # the chunk of the dead pass, copied again
            assert target.read_bytes() == original
        finally:
            ctx.close()
            store.close()
