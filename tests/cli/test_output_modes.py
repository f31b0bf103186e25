"""Success paths under the three machine-facing modes: ``--json``, ``--log-json``, ``--quiet``.

Runs offline commands in-process: ``--json`` prints exactly one JSON document on
stdout (no table, no stray line), ``--log-json`` makes every stderr line a JSON
object with a ``type``, ``--quiet`` prints nothing on success (exit 0) and, otherwise, only the
warning and error lines that say why (a blocked VM is an error line).  Global
options are written after the subcommand, as README promises they may be.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scmt_cli.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
LAB = str(ROOT / "examples" / "lab.yaml")
PLAN = str(ROOT / "plans" / "managed.yaml")
TYPES = {"log", "progress", "event", "exit_error"}

COMMANDS: list[tuple[str, list[str]]] = [
    ("version", ["version"]),
    ("plan-schema", ["plan", "schema"]),
    ("plan-validate", ["plan", "validate", PLAN]),
    ("plan-show", ["plan", "show", PLAN]),
    ("plan-init", ["plan", "init", "{d}/new.yaml", "--method", "agent"]),
    ("plan-estimate", ["plan", "estimate", "--data", "500GiB", "--compression", "0.6", "--bandwidth", "300Mbit"]),
    ("plan-estimate-plan", ["plan", "estimate", PLAN, "-i", LAB]),
    ("assess", ["assess", "--lab", LAB, "--no-network"]),
    ("status", ["status", PLAN]),
    ("copy", ["copy", "file://{d}/src.img", "file://{d}/dst.img", "--verify", "--manifest", "{d}/m.json"]),
]


@pytest.fixture
def area(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCMT_STATE", str(tmp_path / "state.db"))
    with open(tmp_path / "src.img", "wb") as fh:
        fh.write(b"scmt" * 300_000)
        fh.truncate(4 * 1024 * 1024)
    return tmp_path


def _argv(template: list[str], area: Path) -> list[str]:
    return [a.replace("{d}", str(area)) for a in template]


@pytest.mark.parametrize("argv", [c[1] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_json_is_one_document_and_log_json_is_json_lines(area: Path, capsys: pytest.CaptureFixture[str],
                                                         argv: list[str]) -> None:
    code = main([*_argv(argv, area), "--json", "--log-json"])
    out, err = capsys.readouterr()
    assert code in (0, 1, 20), err
    doc = json.loads(out)  # refuses anything after the document
    assert isinstance(doc, dict)
    if argv[:2] != ["plan", "schema"]:
        assert isinstance(doc.get("warnings"), list)
    for line in err.splitlines():
        rec = json.loads(line)
        assert rec["type"] in TYPES, line


@pytest.mark.parametrize("argv", [c[1] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_quiet_prints_nothing_on_success(area: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code = main([*_argv(argv, area), "-q"])
    out, err = capsys.readouterr()
    if code == 0:
        assert out == "" and err == "", (out, err)
    else:  # warnings or blocked VMs: only those lines, on stderr, and at least one that says why
        assert out == ""
        lines = err.splitlines()
        assert lines, f"exit {code} under --quiet, and not a word on why"
        assert all(line.startswith(("warning: ", "error: ")) for line in lines), err
        if code >= 2:  # a failure (a blocked VM: exit 20) is at least one error line
            assert any(line.startswith("error: ") for line in lines), err


def test_human_output_without_flags_is_not_json(area: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The negative control: the human view of the same command is not a JSON document."""
    assert main(_argv(["plan", "validate", PLAN], area)) == 0
    out, _ = capsys.readouterr()
    assert "valid" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


@pytest.mark.parametrize("argv", [["plan"], ["agent"], ["plan", "--no-color"]], ids=lambda a: " ".join(a))
def test_group_without_subcommand_still_gives_one_json_document(capsys: pytest.CaptureFixture[str],
                                                                argv: list[str]) -> None:
    code = main(["--json", *argv])
    out, _ = capsys.readouterr()
    assert code == 2
    doc = json.loads(out)
    assert doc["type"] == "exit_error" and doc["error"] == "usage" and "missing command" in doc["message"]
    code = main(["--log-json", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    records = [json.loads(line) for line in err.splitlines()]
    assert [r["type"] for r in records] == ["exit_error"]


def test_sync_view_does_not_tell_to_rerun_a_vm_blocked_by_assessment() -> None:
    import io

    from rich.console import Console

    from scmt_cli.cli.sync import render
    from scmt_cli.services.migration.context import VmOutcome
    from scmt_cli.services.migration.sync import SyncResult

    result = SyncResult("p", rounds=[[
        VmOutcome("legacy", ok=False, state="planned", action="sync", error="blocked: disk.rdm.physical",
                  error_code=20),
        VmOutcome("web", ok=False, state="syncing", action="sync", error="connection refused", error_code=10),
        VmOutcome("ghost", ok=False, state="failed", action="sync", error="not in vCenter", error_code=2),
    ]])
    buf = io.StringIO()
    render(Console(file=buf, width=200, color_system=None), result)
    text = buf.getvalue()
    assert "1 VM(s) blocked by assessment: legacy; 'scmt assess PLAN' lists the remedies" in text
    assert "1 VM(s) failed: web; run 'scmt sync PLAN' again to resume them" in text
    assert "1 VM(s) failed: ghost; fix the error shown, then run 'scmt sync PLAN' again" in text


def test_quiet_does_not_repeat_a_warning_already_logged(capsys: pytest.CaptureFixture[str]) -> None:
    from scmt_cli.cli.context import GlobalOptions, Ui

    class Done:
        exit_code = 1

        def to_dict(self) -> dict[str, object]:
            return {"warnings": ["conversion skipped", "only in the result"]}

    ui = Ui(GlobalOptions(quiet=True, no_color=True))
    ui.reporter.log("info", "not shown under --quiet")
    ui.reporter.log("warning", "conversion skipped")
    ui.finish(Done(), lambda console, r: console.print("table"))  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["warning: conversion skipped", "warning: only in the result"]


def test_a_problem_repeating_the_headline_is_printed_once(capsys: pytest.CaptureFixture[str]) -> None:
    from scmt_cli import errors
    from scmt_cli.cli.context import GlobalOptions, Ui

    ui = Ui(GlobalOptions(no_color=True))
    ui.report_error(errors.InputError("bad.yaml:2:1: not valid YAML: unexpected end",
                                      problems=[errors.Problem("bad.yaml", "not valid YAML: unexpected end", "", 2, 1)]))
    ui.report_error(errors.PlanError("p.yaml is not a valid plan (1 problem)",
                                     problems=[errors.Problem("p.yaml", "unknown key 'cpu'", "vms[0]", 4, 5)]))
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: bad.yaml:2:1: not valid YAML: unexpected end",
                   "error: p.yaml is not a valid plan (1 problem)",
                   "p.yaml:4:5: vms[0]: unknown key 'cpu'"]


def test_views_print_data_literally_not_as_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """A datastore path '[ds1] vm/vm.vmdk' must survive; an error text with '[/]' must not crash the view."""
    from scmt_cli.cli._migration_view import render_outcomes
    from scmt_cli.cli.context import GlobalOptions, Ui
    from scmt_cli.services.migration.context import VmOutcome
    from scmt_cli.services.migration.units import MigrationResult

    result = MigrationResult("failover", "p", outcomes=[
        VmOutcome("web[01]", ok=False, state="syncing", action="failover", error_code=13,
                  error="cannot read [ds1] web01/web01-flat.vmdk: closing [/] tag"),
    ])
    ui = Ui(GlobalOptions(no_color=True))
    ui.console.width = 200
    render_outcomes(ui.console, result, title="failover of plan p", columns=[])
    out = capsys.readouterr().out
    assert "web[01]" in out
    assert "failed (cannot read [ds1] web01/web01-flat.vmdk: closing [/] tag)" in out
