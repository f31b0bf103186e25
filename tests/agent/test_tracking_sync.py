"""Sync passes on the tracked path (a loop device): lost events fall back to a scan, loudly; rounds read the changes."""

from __future__ import annotations

import datetime as dt
import json
import mmap
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from scmt_cli.agent import tracking
from scmt_cli.events import RecordingReporter
from scmt_cli.services.migration.context import open_context
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from scmt_cli.state import StateStore
from tests.agent.kernel import ensure_tracefs, loop_device
from tests.agent.servers import free_port, running_agent

MiB = 1024 * 1024

PLAN = """\
version: 1
name: kernel
target:
  type: dir
  path: target
defaults:
  method: {method}
  source_action: disconnect-network
vms:
  - name: web01
    agent:
      address: 127.0.0.1:{port}
      token_file: {token}
      plaintext: true
"""


def write_plan(directory: Path, port: int, method: str = "agent") -> Path:
    plan = directory / "plan.yaml"
    plan.write_text(PLAN.format(method=method, port=port, token=directory / "agent.token"), encoding="utf-8")
    return plan


def write_dev(dev: Path, offset: int, data: bytes) -> None:
    """Write through the device and wait until the write completed (its tracking event is recorded)."""
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def plaintext_only(code: int, out: dict[str, object]) -> bool:
    """Exit 1 for no warning but the plaintext agent's (these tests serve without TLS, loudly)."""
    warnings = out.get("warnings") or []
    return code == 1 and bool(warnings) and all("PLAINTEXT" in str(w) for w in warnings)  # type: ignore[union-attr]


def scmt_json(*args: str) -> tuple[int, dict[str, object], str]:
    res = subprocess.run([sys.executable, "-m", "scmt_cli", "--json", *args], capture_output=True, text=True,
                         timeout=300)
    return res.returncode, json.loads(res.stdout), res.stderr


def test_an_agent_restart_between_passes_falls_back_to_a_scan_with_a_warning(tmp_path: Path) -> None:
    ensure_tracefs()
    image = tmp_path / "d.img"
    with loop_device(image, 32 * MiB) as dev:
        write_dev(dev, 0, os.urandom(3 * MiB))
        port = free_port()
        plan = write_plan(tmp_path, port)
        state = ["--state", str(tmp_path / "state.db")]
        target = tmp_path / "target" / "web01" / "disk0.raw"
        with running_agent({"sda": dev}, tmp_path, port=port, plaintext=True) as agent:
            assert "sda" in agent.server.tracking.trackers, agent.server.tracking.reasons
            code, out, err = scmt_json(*state, "sync", str(plan))
            assert plaintext_only(code, out), err
            assert out["vms"][0]["disks"][0]["mode"] == "seed"  # type: ignore[index]
        write_dev(dev, 5 * MiB + 10, b"written while no agent ran")
        with running_agent({"sda": dev}, tmp_path, port=port, plaintext=True):  # a new agent: a new epoch
            code, out, err = scmt_json(*state, "sync", str(plan))
            vm = out["vms"][0]  # type: ignore[index]
            disk = vm["disks"][0]
            assert disk["tracking"] == "scan" and "restarted" in disk["tracking_reason"], disk
            assert disk["mode"] == "incremental" and vm["bytes_read"] == MiB  # only the changed chunk copied
            assert disk["source_bytes_read"] == 32 * MiB + MiB  # the scan read the disk once, then the chunk
            assert code == 1 and any("restarted" in w and "sda" in w for w in out["warnings"]), out  # type: ignore
            assert "no reliable kernel change tracking" in err
            assert target.read_bytes() == image.read_bytes()
            # The scan took a new cursor: the next pass is tracked again and reads only what changed.
            write_dev(dev, 9 * MiB, b"tracked again")
            code, out, err = scmt_json(*state, "sync", str(plan))
            disk = out["vms"][0]["disks"][0]  # type: ignore[index]
            assert plaintext_only(code, out), err
            assert disk["tracking"] == "kernel" and disk["mode"] == "tracked"
            assert disk["source_bytes_read"] == MiB and "tracking_reason" not in disk
            assert target.read_bytes() == image.read_bytes()


def test_a_trace_buffer_overrun_falls_back_to_a_scan_with_a_warning(tmp_path: Path) -> None:
    ensure_tracefs()
    image = tmp_path / "d.img"
    with loop_device(image, 32 * MiB) as dev:
        write_dev(dev, 0, os.urandom(2 * MiB))
        # A 4 KiB trace buffer read only at each pass: the writes below overflow it.
        with running_agent({"sda": dev}, tmp_path, plaintext=True,
                           config={"track_buffer_kb": 4, "track_reader": False}) as agent:
            plan = write_plan(tmp_path, agent.port)
            store = StateStore.open(tmp_path / "state.db")
            rep = RecordingReporter()
            ctx = open_context(plan, store, rep)
            target = tmp_path / "target" / "web01" / "disk0.raw"
            try:
                assert run_sync(SyncRequest(plan), ctx).last["web01"].ok
                buf = mmap.mmap(-1, 4096)
                buf.write(b"x" * 4096)
                fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
                try:
                    for i in range(3000):  # one completion event each, far more than the buffer holds
                        os.pwritev(fd, [buf], (i * 4096 * 7) % (32 * MiB))
                finally:
                    os.close(fd)
                out = run_sync(SyncRequest(plan), ctx).last["web01"]
                assert out.ok, out.error
                disk = out.data["disks"][0]
                assert disk["tracking"] == "scan" and "overflowed" in disk["tracking_reason"], disk
                assert any("overflowed" in w for w in out.warnings)
                assert any(r.data.get("kind") == "agent_tracking_fallback" for r in rep.records)
                assert target.read_bytes() == image.read_bytes()
                write_dev(dev, 30 * MiB, b"after the overrun")
                again = run_sync(SyncRequest(plan), ctx).last["web01"]
                assert again.data["disks"][0]["mode"] == "tracked" and not again.warnings
                assert again.data["source_bytes_read"] == MiB
                assert target.read_bytes() == image.read_bytes()
            finally:
                ctx.close()
                store.close()


def test_hot_backup_rounds_read_only_the_chunks_written_since_the_last_round(tmp_path: Path) -> None:
    """``scmt sync --every`` on a tracked disk: each round reads the chunks written since the one before."""
    ensure_tracefs()
    size = 256 * MiB
    image = tmp_path / "d.img"
    rnd = random.Random(5)
    with loop_device(image, size) as dev:
        write_dev(dev, 0, os.urandom(8 * MiB))
        with running_agent({"sda": dev}, tmp_path, plaintext=True) as agent:
            plan = write_plan(tmp_path, agent.port, method="hot-backup")
            store = StateStore.open(tmp_path / "state.db")
            rep = RecordingReporter()
            ctx = open_context(plan, store, rep)
            changed: dict[int, set[int]] = {}  # round -> chunks written after it

            def now() -> dt.datetime:
                """The clock run_sync asks after each round: writes the next burst once per round."""
                rounds = sum(1 for e in rep.of_type("event") if e["kind"] == "sync_round")
                if rounds not in changed and rounds < 6:
                    chunks: set[int] = set()
                    for _ in range(3 * rounds):
                        n = rnd.choice([1, 4096, 300_000, 2 * MiB])
                        off = rnd.randrange(0, size - n)
                        write_dev(dev, off, os.urandom(n))
                        chunks.update(range(off // MiB, (off + n - 1) // MiB + 1))
                    changed[rounds] = chunks
                return dt.datetime.now(dt.UTC) + dt.timedelta(days=1 if rounds >= 6 else 0)

            try:
                res = run_sync(SyncRequest(plan, every=0.1, until=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)),
                               ctx, now=now)
            finally:
                ctx.close()
                store.close()
        assert len(res.rounds) == 6 and res.stopped == "--until reached"
        assert res.rounds[0][0].data["disks"][0]["mode"] == "seed"
        for k, rnd_out in enumerate(res.rounds[1:], start=1):
            out = rnd_out[0]
            assert out.ok, out.error
            disk = out.data["disks"][0]
            want = len(changed[k]) * MiB
            assert disk["mode"] == "tracked" and disk["tracking"] == "kernel", disk
            # What the agent read from the source: the changed chunks, nothing to find them.
            assert disk["source_bytes_read"] == want and out.data["agent"]["disk_bytes_read"] == want, (k, disk)
            assert out.data["bytes_journaled"] == want  # the undo journal keeps what those chunks held
            assert want < size // 10
        assert (tmp_path / "target" / "web01" / "disk0.raw").read_bytes() == image.read_bytes()


def test_a_source_without_tracing_works_through_the_scan_loudly(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracefs on the source: the agent says so when it starts, every pass says so, and the copy is exact."""
    monkeypatch.setattr(tracking, "find_tracefs", lambda: None)
    image = tmp_path / "d.img"
    with loop_device(image, 32 * MiB) as dev:
        write_dev(dev, 0, os.urandom(2 * MiB))
        with running_agent({"sda": dev}, tmp_path, plaintext=True) as agent:
            started = [r["message"] for r in agent.reporter.of_type("log") if r["level"] == "warning"]
            assert any("sda: no kernel change tracking (tracefs is not mounted" in m and
                       "read and hash the whole disk" in m for m in started), started
            plan = write_plan(tmp_path, agent.port)
            store = StateStore.open(tmp_path / "state.db")
            ctx = open_context(plan, store, RecordingReporter())
            try:
                assert run_sync(SyncRequest(plan), ctx).last["web01"].ok
                write_dev(dev, 17 * MiB, b"untracked write")
                out = run_sync(SyncRequest(plan), ctx).last["web01"]
            finally:
                ctx.close()
                store.close()
        disk = out.data["disks"][0]
        assert disk["tracking"] == "scan" and "tracefs is not mounted" in disk["tracking_reason"]
        assert disk["mode"] == "incremental" and out.data["bytes_read"] == MiB
        assert any("tracefs is not mounted" in w for w in out.warnings), out.warnings
        assert (tmp_path / "target" / "web01" / "disk0.raw").read_bytes() == image.read_bytes()
