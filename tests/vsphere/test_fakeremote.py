"""The fake vCenter as a separate process, used through RemoteFakeVCenter."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.errors import SourceOperationError, TLSVerificationError
from scmt_cli.lab.remote import RemoteFakeVCenter
from scmt_cli.vsphere.settings import ConnectionSettings

from .conftest import EXAMPLE_LAB

VM = "win2019-app01"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("fakevc")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scmt_cli.lab", "--lab", str(EXAMPLE_LAB), "--workdir", str(work)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        info = json.loads(line)
        yield info
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def settings(info: dict[str, Any], **over: Any) -> ConnectionSettings:
    host, port = info["url"].split("://")[1].split("/")[0].rsplit(":", 1)
    kw: dict[str, Any] = {"host": host, "port": int(port), "user": info["user"], "password": "lab-password",
                          "thumbprint": info["thumbprint"]}  # fmt: skip
    kw.update(over)
    return ConnectionSettings(**kw)


def test_remote_fake_runs_the_port(server: dict[str, Any]) -> None:
    with pytest.raises(TLSVerificationError):
        RemoteFakeVCenter(server["rpc"], settings(server, thumbprint=":".join(["01"] * 32))).connect()
    vc = RemoteFakeVCenter(server["rpc"], settings(server))
    vc.connect()
    try:
        inv = vc.inventory()
        assert (inv.vm(VM) or pytest.fail("VM missing")).disks[0].capacity_bytes == 64 * 1024 * 1024
        s1 = vc.create_snapshot(VM, "scmt-r1")
        ids = vc.disk_change_ids(VM, s1)
        assert set(ids) == {2000, 2001} and all(ids.values())
        src = vc.open_disk(VM, s1, 2000)
        head = src.read(0, 4096)
        assert head.startswith(b"win2019-app01/disk0 sector 0\n")
        wid = vc.control("workload_start", VM, rate=8 * 1024 * 1024, max_bytes=1024 * 1024, disk_keys=[2000])
        import time

        time.sleep(0.5)
        assert vc.control("workload_stop", wid) > 0
        assert src.read(0, 4096) == head  # the snapshot stays frozen
        vc.remove_snapshot(VM, s1)
        s2 = vc.create_snapshot(VM, "scmt-r2")
        areas = vc.changed_areas(VM, s2, 2000, ids[2000] or "")
        assert not areas.reset and areas.extents
        vc.remove_snapshot(VM, s2)
        with pytest.raises(SourceOperationError, match="InvalidPowerState"):
            vc.power_on(VM)
        assert vc.shutdown_guest(VM, 10) == "guest"
        vc.power_on(VM)
        assert [s.name for s in vc.list_snapshots("rhel8-db01")] == ["before-kernel-update", "before-app-upgrade"]
    finally:
        vc.close()


def test_main_rejects_a_bad_lab(tmp_path: Path) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text("version: 1\nhosts: []\ndatastores: []\nvms: []\nextra: 1\n")
    proc = subprocess.run([sys.executable, "-m", "scmt_cli.lab", "--lab", str(bad)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 3 and "unknown key 'extra'" in proc.stderr and "lab.yaml:5" in proc.stderr
