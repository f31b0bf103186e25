"""The commands end to end through ``scmt_cli.cli.main`` (in process: the fake vCenter runs here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.cli.main import main
from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.vcenter import start_estate, stop_estate


@pytest.fixture
def plan(tmp_path: Path) -> Iterator[Path]:
    estate = start_estate(demo_lab.write_lab(tmp_path / "lab"), tmp_path / "vcenter")
    try:
        yield demo_lab.write_plan(tmp_path / "lab", url=estate.base_url + "/sdk", thumbprint=estate.http.thumbprint,
                                  user=estate.lab.user)
    finally:
        stop_estate(estate)


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_sync_failover_status_rollback_through_the_cli(plan: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state", str(tmp_path / "s.db")]
    code, doc = _json(capsys, *state, "rollback", str(plan))
    assert code == 42 and doc["error"] == "invalid_state" and "nothing to roll back" in doc["message"]
    code, doc = _json(capsys, *state, "sync", str(plan), "--vm", "db01", "--vm", "redis-a")
    assert code == 0 and [v["state"] for v in doc["vms"]] == ["syncing", "syncing"]
    assert doc["vms"][0]["bytes_read"] > 0 and doc["vms"][0]["throughput_bytes_per_s"] > 0
    code, doc = _json(capsys, *state, "failover", str(plan), "--group", "redis")
    assert code == 42 and "redis-b" in doc["vms"][0]["error"]
    code, doc = _json(capsys, *state, "failover", str(plan), "--vm", "db01", "--direct")
    assert code == 0 and doc["vms"][0]["state"] == "cut-over" and doc["vms"][0]["downtime_seconds"] >= 0
    code, doc = _json(capsys, *state, "status", str(plan))
    assert code == 0
    states = {v["vm"]: v["state"] for v in doc["vms"]}
    assert states == {"web01": "planned", "db01": "cut-over", "redis-a": "syncing", "redis-b": "planned"}
    code, doc = _json(capsys, *state, "rollback", str(plan))
    assert code == 0 and [v["vm"] for v in doc["vms"]] == ["db01"] and doc["vms"][0]["rollback_seconds"] < 60
    code = main([*state, "status", str(plan)])
    out = capsys.readouterr().out
    assert code == 0 and "rolled-back" in out and "db01" in out


def test_bad_options_are_usage_errors(plan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state", str(tmp_path / "s.db")]
    assert main([*state, "sync", str(plan), "--every", "soon"]) == 2
    assert main([*state, "failover", str(plan), "--source-action", "reboot"]) == 2
    assert main([*state, "failover", str(plan), "--at", "someday"]) == 2
    assert main([*state, "sync", str(plan), "--vm", "ghost"]) == 2
    err = capsys.readouterr().err
    assert "ghost" in err and "Traceback" not in err


def test_demo_runs_offline_and_every_verification_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _json(capsys, "demo", "--keep", str(tmp_path / "demo"))
    assert code == 0 and doc["ok"] is True
    assert [s["step"] for s in doc["steps"]][:4] == ["build the lab", "assess", "write a plan", "sync: seed"]
    assert all(s["ok"] for s in doc["steps"])
    assert len([v for v in doc["verifications"] if v["ok"]]) == len(doc["verifications"]) >= 5
    assert (tmp_path / "demo" / "state.db").exists() and (tmp_path / "demo" / "lab" / "plan.yaml").exists()
    assert doc["seconds"] < 60
    assert main(["demo", "--keep", str(tmp_path / "demo")]) == 2  # refuses a non-empty directory
