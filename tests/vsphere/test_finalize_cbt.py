"""``scmt finalize --disable-cbt`` really turns CBT off on the source (fake vCenter, through the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scmt_cli.cli.main import main
from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.vcenter import start_estate, stop_estate


def test_finalize_disable_cbt_turns_tracking_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    estate = start_estate(demo_lab.write_lab(tmp_path / "lab"), tmp_path / "vcenter")
    try:
        plan = demo_lab.write_plan(tmp_path / "lab", url=estate.base_url + "/sdk",
                                   thumbprint=estate.http.thumbprint, user=estate.lab.user)  # fmt: skip
        state = ["--json", "--state", str(tmp_path / "s.db")]
        vm = "db01"
        other = estate.vm("web01").cbt_config

        def run(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
            code = main([*state, *args])
            return code, json.loads(capsys.readouterr().out)

        assert run("sync", str(plan), "--vm", vm)[0] == 0
        assert estate.vm(vm).cbt_config is True  # sync turned it on
        code, doc = run("failover", str(plan), "--vm", vm, "--direct")
        assert code in (0, 1) and doc["vms"][0]["state"] == "cut-over", doc
        code, doc = run("finalize", str(plan), "--vm", vm, "--disable-cbt")
        out = doc["vms"][0]
        assert code == 0 and out["state"] == "committed" and out["cbt_disabled"] is True, doc
        fvm = estate.vm(vm)
        assert fvm.cbt_config is False and not any(d.cbt_active for d in fvm.disks.values())
        assert [s.name for s in fvm.snapshots if s.name.startswith("scmt-")] == []  # no stun snapshot left
        assert fvm.power == "poweredOff"
        assert estate.vm("web01").cbt_config is other  # other VMs untouched
    finally:
        stop_estate(estate)
