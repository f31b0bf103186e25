"""kill -9 at random points: ``scmt sync`` and ``scmt failover`` subprocesses against a fake vCenter
that lives in its own process.  Every rerun completes, nothing is copied twice below a checkpoint,
the target ends byte-identical, and no snapshot is leaked."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.state import StateStore
from tests.e2e.faultlab import RemoteLab, start_remote_lab

KILLS = 8
VMS = ("db01", "redis-a")
DISKS = {"db01": 2, "redis-a": 1}


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[RemoteLab]:
    lab = start_remote_lab(tmp_path, bandwidth="160Mbit")  # 20 MB/s: a seed takes long enough to be killed
    try:
        yield lab
    finally:
        lab.stop()


def _tool_snapshots(lab: RemoteLab, vm: str) -> list[str]:
    vc = lab.client()
    try:
        return [s.name for s in vc.list_snapshots(vm) if s.name.startswith("scmt-")]
    finally:
        vc.close()


def test_sync_killed_at_random_points_resumes_and_ends_byte_identical(remote: RemoteLab) -> None:
    rng = random.Random(20261126)
    vc = remote.client()
    wids = [vc.control("workload_start", vm, rate=256 * 1024, seed=i + 1, pattern="hotspot")
            for i, vm in enumerate(VMS)]
    args = ["sync", str(remote.plan), *(a for vm in VMS for a in ("--vm", vm))]
    kills = 0
    try:
        for _ in range(KILLS):
            kills += remote.kill_after(rng.uniform(0.4, 2.5), *args)
            done = remote.run(*args)
            assert done.returncode in (0, 1), done.stderr
            for vm in VMS:
                assert _tool_snapshots(remote, vm) == []
    finally:
        for wid in wids:
            vc.control("workload_stop", wid)
        vc.close()
    assert kills >= KILLS // 2, f"only {kills} runs were still running when killed"
    final = remote.run("--json", "sync", str(remote.plan), *(a for vm in VMS for a in ("--vm", vm)))
    assert final.returncode in (0, 1), final.stderr
    doc = json.loads(final.stdout)
    assert {v["vm"]: v["state"] for v in doc["vms"]} == {vm: "syncing" for vm in VMS}
    for vm in VMS:
        assert remote.target_digests(vm, DISKS[vm]) == remote.source_digests(vm, DISKS[vm])
        assert _tool_snapshots(remote, vm) == []
    status = json.loads(remote.run("--json", "status", str(remote.plan)).stdout)
    assert not [w for w in status["warnings"] if any(vm in w for vm in VMS)]


def test_failover_killed_at_random_points_resumes_and_ends_byte_identical(remote: RemoteLab) -> None:
    rng = random.Random(4242)
    vm = "db01"
    kills = cycles = mid_cutover = 0
    while kills < KILLS:
        assert remote.run("sync", str(remote.plan), "--vm", vm).returncode in (0, 1)  # (re)seed
        vc = remote.client()
        try:
            wid = vc.control("workload_start", vm, rate=2 * 1024 * 1024, seed=cycles + 1)
            time.sleep(1.0)
            vc.control("workload_stop", wid)  # the guest goes quiet; its last writes are the final delta
        finally:
            vc.close()
        killed = remote.kill_after(rng.uniform(0.3, 1.8), "failover", str(remote.plan), "--vm", vm)
        kills += killed
        with StateStore.open(remote.state) as store:
            rec = store.get_vm("demo", vm)
        if killed and rec is not None and rec.state == "cutting-over":
            mid_cutover += 1
        done = remote.run("--json", "failover", str(remote.plan), "--vm", vm)
        assert done.returncode in (0, 1), done.stderr
        out = json.loads(done.stdout)["vms"][0]
        assert out["state"] == "cut-over"
        assert remote.target_digests(vm, 2) == remote.source_digests(vm, 2)
        assert _tool_snapshots(remote, vm) == []
        back = remote.run("--json", "rollback", str(remote.plan), "--vm", vm)
        assert back.returncode == 0, back.stderr
        assert json.loads(back.stdout)["vms"][0]["rollback_seconds"] < 60
        cycles += 1
        assert cycles < 3 * KILLS, "the failover finished before the kill too often"
    assert mid_cutover >= 2, "no kill landed inside the cutover steps"
