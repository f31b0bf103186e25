"""``scmt boot`` and ``scmt failover --test`` refuse what they cannot do, with one line and their exit code."""

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
                                  user=estate.lab.user, vms=("db01",))
    finally:
        stop_estate(estate)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_boot_needs_a_vm_that_failed_over(plan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _run(capsys, "--state", str(tmp_path / "s.db"), "boot", str(plan), "--vm", "db01")
    assert code == 42 and "needs a VM that failed over" in doc["message"]
    assert "--test" in doc["hint"]


def test_test_failover_needs_a_vm_in_sync(plan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _run(capsys, "--state", str(tmp_path / "s.db"), "failover", str(plan), "--vm", "db01", "--test")
    assert code == 42 and "needs a VM in sync" in doc["message"] and doc["hint"] == "run scmt sync first"


def test_cleanup_goes_with_test(plan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _run(capsys, "--state", str(tmp_path / "s.db"), "failover", str(plan), "--vm", "db01", "--cleanup")
    assert code == 2 and "--cleanup goes with --test" in doc["message"]


def test_real_failover_refuses_while_a_test_copy_exists(plan: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path / "s.db")
    assert main(["--state", state, "sync", str(plan)]) in (0, 1)
    capsys.readouterr()
    folder = tmp_path / "lab" / "target" / "db01"
    (folder / "test-failover").mkdir()
    (folder / "test-failover.json").write_text("{}")
    code, doc = _run(capsys, "--state", state, "failover", str(plan), "--vm", "db01")
    assert code == 42 and "a test failover copy exists" in doc["vms"][0]["error"]
    code, doc = _run(capsys, "--state", state, "failover", str(plan), "--vm", "db01", "--test", "--cleanup")
    assert code == 0 and str(folder / "test-failover") in doc["removed"]
    assert not (folder / "test-failover.json").exists()
    code, doc = _run(capsys, "--state", state, "failover", str(plan), "--vm", "db01", "--direct")
    assert code in (0, 1) and doc["vms"][0]["state"] == "cut-over"


def test_status_shows_the_recorded_boot_next_to_the_downtime(plan: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from scmt_cli.events import RecordingReporter
    from scmt_cli.services.migration.context import open_context
    from scmt_cli.state import StateStore

    state = tmp_path / "s.db"
    assert main(["--state", str(state), "sync", str(plan)]) in (0, 1)
    with StateStore.open(state) as store:
        ctx = open_context(plan, store, RecordingReporter())
        ctx.update_data("db01", boot={"seconds": 31.4, "data_verified": True})
        ctx.close()
    capsys.readouterr()
    code, doc = _run(capsys, "--state", str(state), "status", str(plan))
    assert doc["vms"][0]["boot_seconds"] == 31.4 and doc["vms"][0]["boot_data_verified"] is True
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["--no-color", "--state", str(state), "status", str(plan)]) in (0, 1)
    assert "booted in 31.4s (data verified)" in capsys.readouterr().out
