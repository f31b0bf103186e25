"""The migration commands through the real pyvmomi adapter against govmomi's vcsim.

vcsim's disks are empty and it has neither QueryChangedDiskAreas nor change
ids, so: the test PUTs the disk content first, the seed copies it, and every
later pass (a second sync, failover's final sync) must be a full resync that
says why.  Secrets (the password, the vmware_soap_session cookie) must not
reach stdout, stderr (``--log-json``), ``--json`` or any byte of the state store.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.cli.main import main

from . import vcsim as vcsim_mod
from . import vcsimplan
from .vcsimplan import VM

pytestmark = pytest.mark.vcsim


@pytest.fixture(scope="module")
def sim() -> Iterator[vcsim_mod.Vcsim]:
    yield from vcsimplan.sim_fixture()


def _state_bytes(db: Path) -> bytes:
    """Every row of every table, plus the raw bytes of the database and its -wal/-shm files."""
    out = []
    for suffix in ("", "-wal", "-shm", "-journal"):
        f = Path(f"{db}{suffix}")
        if f.exists():
            out.append(f.read_bytes())
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert tables, "the state store has no tables"
        for t in tables:
            out.append(repr(con.execute(f'SELECT * FROM "{t}"').fetchall()).encode())  # noqa: S608
    finally:
        con.close()
    return b"\n".join(out)


def test_sync_resync_failover_finalize_through_the_adapter_and_nothing_leaks(
    sim: vcsim_mod.Vcsim, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from scmt_cli.vsphere.adapter import PyVmomiVCenter

    cookies: list[str] = []
    login = PyVmomiVCenter._login

    def spying_login(self: Any) -> None:
        login(self)
        cookies.append(self._cookie().split("=", 1)[1].strip('"'))

    monkeypatch.setattr(PyVmomiVCenter, "_login", spying_login)
    data = vcsimplan.upload_disk(sim)
    plan = vcsimplan.write_plan(tmp_path / "lab", sim)
    db = tmp_path / "state.db"
    seen: list[str] = []
    state_dumps: list[bytes] = []

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        code = main(["--json", "--log-json", "-v", "--state", str(db), *args])
        out, err = capsys.readouterr()
        seen.extend((out, err))
        state_dumps.append(_state_bytes(db))
        return code, json.loads(out)

    code, doc = run("sync", str(plan))
    assert code == 0, doc
    vm = doc["vms"][0]
    assert vm["state"] == "syncing" and vm["action"] == "seed" and vm["disks"][0]["mode"] == "seed"
    target = tmp_path / "lab" / "target" / VM / "disk0.raw"
    assert target.read_bytes() == data

    code, doc = run("sync", str(plan))  # vcsim has no change ids: a full resync, said as a warning
    vm = doc["vms"][0]
    assert code == 1 and vm["ok"] and vm["action"] == "incremental", doc
    assert vm["disks"][0]["mode"] == "full-resync" and "no CBT change id" in vm["disks"][0]["reason"]
    assert any("no CBT change id" in w and "copied again" in w for w in doc["warnings"])
    assert vm["bytes_read"] == len(data)
    logs = [json.loads(line) for line in seen[-1].splitlines() if line.strip()]
    assert any(r.get("level") == "warning" and "no CBT change id" in r.get("message", "") for r in logs)

    code, doc = run("failover", str(plan), "--direct")
    assert code in (0, 1), doc
    assert doc["vms"][0]["state"] == "cut-over"
    assert target.read_bytes() == data
    assert vcsimplan.snapshots(sim) == []  # no tool snapshot left on the vCenter

    code, doc = run("finalize", str(plan), "--disable-cbt")
    assert code in (0, 1), doc
    assert doc["vms"][0]["state"] == "committed"
    vc = vcsimplan.adapter(sim)
    try:
        inv_vm = vc.inventory().vm(VM)
        assert inv_vm is not None and inv_vm.cbt_enabled is False and inv_vm.power_state == "poweredOff"
        assert [n.connected for n in inv_vm.nics] == [False] * len(inv_vm.nics)
        vc.power_on(VM)  # leave the shared simulator as other tests expect it
        vc.set_nics_connected(VM, True)
    finally:
        vc.close()

    assert len(cookies) >= 4 and all(len(c) >= 16 for c in cookies)  # one session per command at least
    texts = "\n".join(seen)
    blobs = b"\n".join(state_dumps)
    for secret in (sim.password, *cookies):
        assert secret not in texts, "a secret reached stdout/stderr"
        assert secret.encode() not in blobs, "a secret reached the state store"
