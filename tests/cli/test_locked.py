"""A VM locked by another run: exit 40, the holder named, one JSON document, JSON-only stderr."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.cli.main import main
from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.vcenter import start_estate, stop_estate
from scmt_cli.state import StateStore


@pytest.fixture
def plan(tmp_path: Path) -> Iterator[Path]:
    estate = start_estate(demo_lab.write_lab(tmp_path / "lab"), tmp_path / "vcenter")
    try:
        yield demo_lab.write_plan(tmp_path / "lab", url=estate.base_url + "/sdk", thumbprint=estate.http.thumbprint,
                                  user=estate.lab.user)
    finally:
        stop_estate(estate)


@pytest.mark.parametrize("command", ["sync", "failover"])
def test_locked_vm(plan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    db = tmp_path / "s.db"
    with StateStore.open(db) as other, other.lock("vm:demo/web01"):
        code = main([command, str(plan), "--vm", "web01", "--state", str(db), "--json", "--log-json"])
        out, err = capsys.readouterr()
        assert code == 40
        doc = json.loads(out)
        assert doc["failed"] == ["web01"] and doc["vms"][0]["error_code"] == 40
        assert "locked by another run" in doc["vms"][0]["error"] and "pid" in doc["vms"][0]["error"]
        assert all(json.loads(line)["type"] in {"log", "progress", "event", "exit_error"} for line in err.splitlines())
        code = main([command, str(plan), "--vm", "web01", "--state", str(db)])
        out, err = capsys.readouterr()
        assert code == 40 and "Traceback" not in out + err
        assert "locked by another run" in err
