"""Two state stores, one plan (issue 15.4): ``SCMT_STATE=a.db scmt sync plan.yaml &`` then
``SCMT_STATE=b.db scmt sync plan.yaml``, against a fake vCenter in its own process.  The second run
must not take the first run's live snapshot for its own leftover: the first run is not broken."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.state import StateStore
from tests.e2e.faultlab import RemoteLab, start_remote_lab

VM = "db01"


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[RemoteLab]:
    lab = start_remote_lab(tmp_path, bandwidth="32Mbit")  # 4 MB/s: the first seed lasts about 10 s
    try:
        yield lab
    finally:
        lab.stop()


def _sync(lab: RemoteLab, state: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**lab.env, "SCMT_STATE": str(state)}
    argv = [sys.executable, "-m", "scmt_cli", "--json", "sync", str(lab.plan), "--vm", VM, *extra]
    return lab.track(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      cwd=lab.root))


def _snapshots(lab: RemoteLab) -> list[tuple[str, str]]:
    vc = lab.client()
    try:
        return [(s.name, s.description or "") for s in vc.list_snapshots(VM) if s.name.startswith("scmt-sync-")]
    finally:
        vc.close()


def test_a_second_store_leaves_the_first_runs_snapshot_alone(remote: RemoteLab) -> None:
    a_state, b_state = remote.root / "a.db", remote.root / "b.db"
    first = _sync(remote, a_state)
    deadline = time.monotonic() + 60
    while not _snapshots(remote):  # the first run is copying from its snapshot now
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run never made its snapshot"
        time.sleep(0.05)
    [(name, description)] = _snapshots(remote)
    with StateStore.open(a_state) as store:
        assert f"[scmt store={store.store_id} run=" in description

    second = _sync(remote, b_state)  # starts while the first run's snapshot is live
    out_b, err_b = second.communicate(timeout=120)
    out_a, err_a = first.communicate(timeout=300)

    assert first.returncode in (0, 1), err_a  # before the fix: 13, its snapshot removed under it
    doc_a = json.loads(out_a)
    assert doc_a["vms"][0]["ok"] and doc_a["vms"][0]["state"] == "syncing", doc_a
    assert remote.target_digests(VM, 2) == remote.source_digests(VM, 2)

    assert second.returncode == 40, err_b
    doc_b = json.loads(out_b)
    assert f"snapshot {name} (" in doc_b["vms"][0]["error"] and "made by another scmt state store" in \
        doc_b["vms"][0]["error"], doc_b
    assert "Traceback" not in err_b
    assert _snapshots(remote) == []  # the first run removed its own snapshot; the second made none

    # Once the first run is done, the second store syncs the VM (seeding its own copy).
    again = _sync(remote, b_state)
    out, err = again.communicate(timeout=300)
    assert again.returncode in (0, 1), err
    assert json.loads(out)["vms"][0]["ok"]
