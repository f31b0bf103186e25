"""Issue 16 §9: an RVTools export without a tab whose rules could block a VM is ``incomplete``.

What was not assessed makes the verdict ``incomplete`` (exit 22), never ``warnings``
or ``ready``: the disks, RDMs and snapshots of such an export were never checked.
A known blocker still outranks it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.assess.rvfixtures import tabs, write_xlsx

from scmt_cli.cli.main import main


def _assess(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["--json", "assess", "-i", str(path), *extra])
    return code, json.loads(capsys.readouterr().out)


def test_an_export_without_its_vdisk_tab_is_incomplete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, full = _assess(capsys, write_xlsx(tmp_path / "full.xlsx", tabs()))
    assert {v["verdict"] for v in full["vms"]} <= {"ready", "warnings"} and code == 1
    code, doc = _assess(capsys, write_xlsx(tmp_path / "nodisk.xlsx", tabs(drop=("vDisk",))))
    assert code == doc["exit_code"] == 22
    assert [v["verdict"] for v in doc["vms"]] == ["incomplete", "incomplete"]
    assert doc["summary"]["incomplete"] == 2 and doc["summary"]["ready"] == 0
    web = doc["vms"][0]
    assert any("no vDisk tab" in gap and "disk.rdm.physical" in gap for gap in web["not_assessed"])
    assert all(v == "incomplete" for v in web["verdicts_by_method"].values())
    assert main(["assess", "-i", str(tmp_path / "nodisk.xlsx")]) == 22
    out = capsys.readouterr().out
    assert "incomplete" in out and "2 incomplete" in out


def test_a_missing_tab_only_counts_for_the_methods_its_rules_apply_to(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_xlsx(tmp_path / "nosnap.xlsx", tabs(drop=("vSnapshot",)))
    code, doc = _assess(capsys, path, "--method", "agentless")
    verdicts = {v["vm"]: v["verdict"] for v in doc["vms"]}
    assert verdicts == {"web01": "incomplete", "db01": "blocked"}  # db01's physical RDM is a known blocker
    assert code == 20  # blocked outranks incomplete
    code, doc = _assess(capsys, path, "--method", "agent")  # existing snapshots do not block the agent methods
    assert "incomplete" not in {v["verdict"] for v in doc["vms"]} and code != 22


def test_a_known_blocker_outranks_incomplete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tabs(drop=("vDisk",))
    code, doc = _assess(capsys, write_xlsx(tmp_path / "x.xlsx", data), "--method", "agent")
    blocked = [v for v in doc["vms"] if v["blockers"]]
    assert all(v["verdict"] == "blocked" for v in blocked)
