"""Hot backup: agent syncs at a short interval with an undo journal per generation; point-in-time restore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scmt_cli.errors import InvalidStateError
from scmt_cli.events import RecordingReporter
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.services.migration import agentsync, agentwatch, journal
from scmt_cli.services.migration.context import open_context
from scmt_cli.services.migration.failover import FailoverRequest, run_failover
from scmt_cli.services.migration.restore import RestoreRequest, restore_service
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from scmt_cli.state import StateStore
from tests.agent.conftest import lab_plan
from tests.agent.servers import TOKEN, running_agent

MiB = 1024 * 1024


def _write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def test_every_generation_can_be_restored_and_failover_works(tmp_path: Path, estate: FakeEstate,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", TOKEN)
    # Each round compares digests here (pushes are tested below): every round sees the writes before it.
    monkeypatch.setattr(agentsync, "pushed_changes", lambda *a, **k: None)
    disk = tmp_path / "sda.raw"
    with open(disk, "wb") as fh:
        fh.truncate(16 * MiB)
        fh.write(os.urandom(2 * MiB))
    states: dict[int, bytes] = {}
    with running_agent({"sda": disk}, tmp_path) as agent:
        plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "hot-backup"}, address=f"127.0.0.1:{agent.port}", fingerprint=agent.fingerprint)
        store = StateStore.open(tmp_path / "state.db")
        ctx = open_context(plan, store, RecordingReporter())
        try:
            gens = []
            for step in range(4):
                if step:
                    _write(disk, step * 3 * MiB + 10, os.urandom(5000))
                    _write(disk, 100, f"step {step}".encode())
                out = run_sync(SyncRequest(plan), ctx).last["web01"]
                assert out.ok, out.error
                gens.append(out.data["generation"])
                states[out.data["generation"]] = disk.read_bytes()
                if step:
                    assert out.data["bytes_journaled"] == 2 * MiB  # the old bytes of the 2 changed chunks
            rep = RecordingReporter()
            listing = restore_service(RestoreRequest(plan, "web01"), store, rep)
            assert [p["generation"] for p in listing.points] == gens
            for g in gens:
                res = restore_service(RestoreRequest(plan, "web01", g, tmp_path / f"r{g}"), store, rep)
                assert Path(res.files[0]).read_bytes() == states[g], f"generation {g}"
            target = tmp_path / "lab" / "target" / "web01" / "disk0.raw"
            assert target.read_bytes() == states[gens[-1]]  # restore never touches the target

            # Retention: with only 2 journals kept, the seed and the first incremental are gone.
            journal.prune(journal.journal_root(target.parent), keep=2)
            listing = restore_service(RestoreRequest(plan, "web01"), store, rep)
            assert [p["generation"] for p in listing.points] == gens[1:]
            with pytest.raises(InvalidStateError, match="not a restore point"):
                restore_service(RestoreRequest(plan, "web01", gens[0], tmp_path / "old"), store, rep)

            _write(disk, 15 * MiB, b"last write before cutover")
            fo = run_failover(FailoverRequest(plan), ctx).outcomes[0]
            assert fo.ok, fo.error
            assert target.read_bytes() == disk.read_bytes()
            assert not estate.vm("web01").snapshots
        finally:
            ctx.close()
            store.close()


def test_scmt_agent_restore_cli(tmp_path: Path, estate: FakeEstate, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", TOKEN)
    disk = tmp_path / "sda.raw"
    with open(disk, "wb") as fh:
        fh.truncate(4 * MiB)
        fh.write(b"first")
    with running_agent({"sda": disk}, tmp_path) as agent:
        plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "hot-backup"}, address=f"127.0.0.1:{agent.port}", fingerprint=agent.fingerprint)
        store = StateStore.open(tmp_path / "state.db")
        ctx = open_context(plan, store, RecordingReporter())
        try:
            g1 = run_sync(SyncRequest(plan), ctx).last["web01"].data["generation"]
            _write(disk, 0, b"later")
            run_sync(SyncRequest(plan), ctx)
        finally:
            ctx.close()
            store.close()
    cmd = [sys.executable, "-m", "scmt_cli", "--state", str(tmp_path / "state.db"), "--json", "agent", "restore",
           str(plan), "--vm", "web01"]
    res = subprocess.run([*cmd, "--generation", str(g1), "--out", str(tmp_path / "pit")], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    restored = Path(json.loads(res.stdout)["files"][0]).read_bytes()
    assert restored[:5] == b"first" and len(restored) == 4 * MiB
    res = subprocess.run(cmd + ["--generation", "999999", "--out", str(tmp_path / "x")], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 42 and "not a restore point" in res.stdout


def _wait_for_push(ctx: object, vm: str, disk: str) -> None:
    """Until the agent has pushed something on the stream of ``disk`` (without consuming it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stream = agentwatch._STREAMS.get(ctx, {}).get((vm, disk))  # type: ignore[call-overload]
        if stream is not None and not stream._q.empty():
            return
        time.sleep(0.05)
    raise AssertionError("the agent pushed nothing")


def test_rounds_copy_what_the_agent_pushed(tmp_path: Path, estate: FakeEstate,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCMT_TEST_AGENT_TOKEN", TOKEN)
    monkeypatch.setattr(agentwatch, "WATCH_INTERVAL", 0.2)
    disk = tmp_path / "sda.raw"
    with open(disk, "wb") as fh:
        fh.truncate(16 * MiB)
        fh.write(os.urandom(3 * MiB))
    with running_agent({"sda": disk}, tmp_path) as agent:
        plan = lab_plan(tmp_path, estate, ("web01",), {"web01": "hot-backup"}, address=f"127.0.0.1:{agent.port}", fingerprint=agent.fingerprint)
        store = StateStore.open(tmp_path / "state.db")
        ctx = open_context(plan, store, RecordingReporter())
        target = tmp_path / "lab" / "target" / "web01" / "disk0.raw"
        try:
            seed = run_sync(SyncRequest(plan), ctx).last["web01"]
            assert seed.ok and seed.data["disks"][0]["mode"] == "seed"
            _write(disk, 9 * MiB + 77, b"pushed change")
            _wait_for_push(ctx, "web01", "sda")
            out = run_sync(SyncRequest(plan), ctx).last["web01"]
            assert out.ok, out.error
            assert out.data["disks"][0]["mode"] == "pushed"
            assert out.data["bytes_read"] == MiB and out.data["bytes_journaled"] == MiB
            assert target.read_bytes() == disk.read_bytes()
            quiet = run_sync(SyncRequest(plan), ctx).last["web01"]
            assert quiet.data["disks"][0]["mode"] == "pushed" and quiet.data["bytes_read"] == 0

            _write(disk, 14 * MiB, b"written just before the cutover")  # maybe not pushed yet: final is exact
            fo = run_failover(FailoverRequest(plan), ctx).outcomes[0]
            assert fo.ok, fo.error
            assert target.read_bytes() == disk.read_bytes()
        finally:
            ctx.close()
            store.close()
        assert not agentwatch._STREAMS.get(ctx)  # closed with the context
