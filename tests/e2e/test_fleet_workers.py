"""Three worker processes ("hosts") sync one 12-VM plan against one PostgreSQL store; one is kill -9'd mid-copy.

Everything is checked from the store's event log: each VM synced exactly once
per pass, no two hosts ever held one VM, the killed host's VM finished by the
others after its lease expired (resumed from its checkpoint, not copied
again), the plan's concurrency and per-ESXi-host limits never exceeded.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.state import StateStore
from tests.e2e.fleetlab import MIB, FleetLab, check_leases, start_fleet_lab, vm_names

pytestmark = pytest.mark.slow

N = 12
HOSTS = ("host-1", "host-2", "host-3")
VICTIM = "host-2"


@pytest.fixture(params=["postgresql", "sqlite"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "postgresql":
        state = request.getfixturevalue("pg_cluster").new_schema()
    else:  # several processes on one host sharing the SQLite file (--fleet)
        state = str(tmp_path / "state.db")
    lab = start_fleet_lab(tmp_path, state, n=N)
    try:
        yield lab, request.param
    finally:
        lab.stop()


def _finish(proc: Any, timeout: float = 240) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode in (0, 1), f"worker exit {proc.returncode}\n{out}\n{err}"
    return json.loads(out)


def _victim_mid_copy(store: StateStore, deadline: float) -> str:
    """Wait until the victim host has a VM with a checkpoint past chunk 0; return that VM."""
    while time.monotonic() < deadline:
        held = {e.vm: e for e in store.events(kinds=["lease_acquired"]) if e.data["host"] == VICTIM}
        for vm in held:
            for key in store.checkpoint_keys(f"sync/fleet/{vm}/disk2000/gen"):
                data = store.get_checkpoint(key) or {}
                if "/seg/" not in key and int(data.get("watermark", 0)) > 0:
                    return str(vm)
        time.sleep(0.1)
    raise AssertionError("the victim host never got a VM past its first checkpoint")


def test_three_hosts_split_the_plan_survive_a_kill_and_hold_the_limits(fleet: tuple[FleetLab, str]) -> None:
    lab, backend = fleet
    extra = ("--fleet",) if backend == "sqlite" else ()
    procs = {h: lab.worker(h, *extra) for h in HOSTS}
    with StateStore.open(lab.state) as store:
        victim_vm = _victim_mid_copy(store, time.monotonic() + 120)
        os.kill(procs[VICTIM].pid, signal.SIGKILL)
        procs[VICTIM].communicate(timeout=30)
        results = {h: _finish(procs[h]) for h in HOSTS if h != VICTIM}
        events = store.events(plan="fleet")
        replay = check_leases(events)  # raises when two hosts ever held one VM

        # pass 1: every VM seeded exactly once (the killed VM's generation resumed, finished once)
        seeds = Counter(e.vm for e in events if e.kind == "generation_finished" and e.data["ok"])
        assert seeds == Counter({vm: 1 for vm in vm_names(N)})
        for i in range(N):
            assert lab.target_digest(i) == lab.source_digest(i), vm_names(N)[i]
        # the killed host's VM was taken over after its lease expired, by a live host, and resumed
        assert (victim_vm, VICTIM) in replay.expired
        assert replay.drivers[victim_vm][0] == VICTIM and replay.drivers[victim_vm][-1] != VICTIM
        gens = store.generations("fleet", victim_vm)
        assert [g.status for g in gens] == ["ok"]
        assert gens[0].bytes_read < 8 * MIB  # chunks recorded as copied before the kill were not read again
        # the limits held across all hosts; the work really was split
        assert replay.max_held <= 3 and replay.max_per_esxi <= 2
        assert replay.max_held == 3
        drove = Counter(h for hosts in replay.drivers.values() for h in hosts)
        assert all(drove[h] >= 1 for h in HOSTS), drove
        assert {r["host"] for r in results.values()} == {"host-1", "host-3"}

        # pass 2: three hosts again, each VM exactly one incremental
        since = events[-1].id
        procs2 = {h: lab.worker(h, *extra) for h in HOSTS}
        for h in HOSTS:
            _finish(procs2[h])
        later = store.events(plan="fleet", since_id=since)
        check_leases(later)
        incs = Counter(e.vm for e in later if e.kind == "generation_finished" and e.data["ok"])
        assert incs == Counter({vm: 1 for vm in vm_names(N)})
        assert {e.data["kind"] for e in later if e.kind == "generation_finished"} == {"incremental"}
        rounds = [e.data["round"] for e in store.events(plan="fleet", kinds=["fleet_round"])]
        assert rounds == [1, 2]
