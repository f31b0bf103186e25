"""Issue 16 §7: tables fit the terminal without splitting a name, a rule id or a header.

At 80 columns (and narrower) the assess and estimate tables keep every VM name and
rule id whole (a cell wraps only between words), drop low-value columns first
(``--json`` and ``--format csv`` keep all the data) and never cut a header.
``status`` flags a measured downtime that exceeds its estimate, in text and JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.cli.main import main
from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.vcenter import start_estate, stop_estate

ROOT = Path(__file__).resolve().parents[2]
LAB = str(ROOT / "examples" / "lab.yaml")


def _run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int,
         *argv: str) -> tuple[int, str]:
    monkeypatch.setenv("COLUMNS", str(width))
    code = main(["--no-color", *argv])
    return code, capsys.readouterr().out


def _cells(text: str) -> list[str]:
    """Every table cell's text, one entry per cell per line."""
    return [c.strip() for line in text.splitlines() for c in re.split(r"[│┃]", line)[1:-1]]


def _table_width(text: str) -> int:
    """The widest table line (message lines below a table are never wrapped off a terminal)."""
    return max(len(line) for line in text.splitlines() if line[:1] in "┏┃┡│└")


def _whole(text: str, word: str) -> bool:
    return any(re.search(rf"(^|[\s,(]){re.escape(word)}($|[\s,)])", line) for line in text.splitlines())


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_assess_never_splits_a_name_or_a_rule_id(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    main(["--json", "assess", "--lab", LAB, "--downtime", "5m"])
    doc = json.loads(capsys.readouterr().out)
    code, out = _run(capsys, monkeypatch, width, "assess", "--lab", LAB, "--downtime", "5m")
    assert code == doc["exit_code"] == 20
    assert width < 80 or _table_width(out) <= width, out
    assert "…" not in out
    for vm in doc["vms"]:
        assert _whole(out, vm["vm"]), f"{vm['vm']} split at {width} columns:\n{out}"
        for f in vm["findings"]:
            if f["severity"] != "info":
                assert _whole(out, f["id"]), f"{f['id']} split at {width} columns:\n{out}"
    assert "7 VM(s): 1 ready, 4 with warnings, 2 blocked, 0 skipped" in out


def test_assess_drops_low_value_columns_before_the_findings(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, wide = _run(capsys, monkeypatch, 200, "assess", "--lab", LAB)
    _, narrow = _run(capsys, monkeypatch, 80, "assess", "--lab", LAB)
    assert "OS" in _cells(wide) and "Windows Server 2019" in wide
    assert "OS" not in _cells(narrow)  # the OS is in --json, --format csv and --details
    assert {"VM", "verdict", "method"} <= set(_cells(narrow))
    # CSV keeps everything whatever the width
    _, csv_out = _run(capsys, monkeypatch, 40, "assess", "--lab", LAB, "--format", "csv")
    assert csv_out.splitlines()[0].startswith("vm,os,verdict,method,recommended_method")


@pytest.mark.parametrize("width", [60, 80])
def test_estimate_keeps_its_headers_and_numbers_whole(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    code, out = _run(capsys, monkeypatch, width, "plan", "estimate", "--data", "500GiB", "--compression", "0.6",
                     "--bandwidth", "300Mbit", "--redundancy", "1.2", "--switch", "5m")
    assert code == 0
    assert "…" not in out and _table_width(out) <= width
    cells = _cells(out)
    for header in ("VM", "transfer", "switch", "downtime", "total"):
        assert header in cells
    assert ["what-if", "164", "5", "5", "169"] == [c for c in cells if c in ("what-if", "164", "5", "169")]
    # what no longer fits is said below the table, whole
    assert re.search(r"^what-if: .*compressed 300\.00 GiB.*redundancy 1\.20$", out, re.M), out


@pytest.fixture
def synced(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    estate = start_estate(demo_lab.write_lab(tmp_path / "lab"), tmp_path / "vcenter")
    try:
        plan = demo_lab.write_plan(tmp_path / "lab", url=estate.base_url + "/sdk",
                                   thumbprint=estate.http.thumbprint, user=estate.lab.user, vms=("db01", "web01"))
        state = tmp_path / "s.db"
        assert main(["--state", str(state), "sync", str(plan)]) == 0
        yield plan, state
    finally:
        stop_estate(estate)


def _record_downtime(plan: Path, state: Path, vm: str, seconds: float) -> None:
    from scmt_cli.events import RecordingReporter
    from scmt_cli.services.migration.context import open_context
    from scmt_cli.state import StateStore

    with StateStore.open(state) as store:
        ctx = open_context(plan, store, RecordingReporter())
        ctx.update_data(vm, downtime_seconds=seconds)
        ctx.close()


def test_status_flags_a_measured_downtime_over_its_estimate(synced: tuple[Path, Path],
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    plan, state = synced
    _record_downtime(plan, state, "db01", 37 * 60.0)  # 37 minutes, as in the issue
    _record_downtime(plan, state, "web01", 0.6)
    capsys.readouterr()
    assert main(["--json", "--state", str(state), "status", str(plan)]) == 1
    doc = json.loads(capsys.readouterr().out)
    by = {v["vm"]: v for v in doc["vms"]}
    assert by["db01"]["downtime_over_estimate"] is True and by["web01"]["downtime_over_estimate"] is False
    assert by["db01"]["plan_downtime_minutes"] < 37
    assert [w for w in doc["warnings"] if "measured downtime 37m00s exceeded the estimate" in w]
    assert not [w for w in doc["warnings"] if w.startswith("web01: measured downtime")]
    code, out = _run(capsys, monkeypatch, 200, "--state", str(state), "status", str(plan))
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "over the estimate" in lines["db01"] and "over the estimate" not in lines["web01"]


def test_status_fits_80_columns(synced: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    plan, state = synced
    code, out = _run(capsys, monkeypatch, 80, "--state", str(state), "status", str(plan))
    assert code == 0 and _table_width(out) <= 80
    for word in ("db01", "web01", "syncing", "downtime"):
        assert _whole(out, word), out
