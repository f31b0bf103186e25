"""Issue 16 §9: one list of warnings per run, the same in text, JSON and the exit code.

A warning a service logs (a plan warning from ``open_context``, a skipped
conversion) and the warnings of the result are one list: the ``--json``
document carries all of them (an error document too), the exit code is at
least 1, and the human view prints each one once, on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.cli.main import main
from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.vcenter import start_estate, stop_estate

INSECURE = "insecure: true"


@pytest.fixture
def insecure_plan(tmp_path: Path) -> Iterator[Path]:
    """The demo plan without a pinned thumbprint: loading it warns that TLS is not verified."""
    estate = start_estate(demo_lab.write_lab(tmp_path / "lab"), tmp_path / "vcenter")
    try:
        yield demo_lab.write_plan(tmp_path / "lab", url=estate.base_url + "/sdk", thumbprint=None,
                                  user=estate.lab.user, vms=("db01", "web01"))
    finally:
        stop_estate(estate)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _plan_warnings(warnings: list[str]) -> list[str]:
    return [w for w in warnings if INSECURE in w]


def test_a_plan_warning_logged_while_opening_the_plan_is_in_every_document(
        insecure_plan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state", str(tmp_path / "s.db")]
    code, out, err = _run(capsys, *state, "--json", "sync", str(insecure_plan), "--vm", "db01")
    doc = json.loads(out)
    assert len(_plan_warnings(doc["warnings"])) == 1, doc["warnings"]
    assert code == doc["exit_code"] == 1
    assert err.count(INSECURE) == 1
    code, out, err = _run(capsys, *state, "--json", "failover", str(insecure_plan), "--vm", "db01", "--direct")
    assert code == 1 and json.loads(out)["vms"][0]["state"] == "cut-over"
    code, out, err = _run(capsys, *state, "--json", "finalize", str(insecure_plan), "--vm", "db01")
    doc = json.loads(out)
    assert doc["vms"][0]["state"] == "committed"
    assert len(_plan_warnings(doc["warnings"])) == 1 and err.count(INSECURE) == 1
    assert code == doc["exit_code"] == 1
    # An error document carries the warnings of the run up to the error.
    code, out, err = _run(capsys, *state, "--json", "rollback", str(insecure_plan), "--vm", "web01")
    doc = json.loads(out)
    assert code == doc["exit_code"] == doc["code"] == 42 and doc["type"] == "exit_error"
    assert len(_plan_warnings(doc["warnings"])) == 1


def test_human_view_prints_each_warning_once_on_stderr(insecure_plan: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--state", str(tmp_path / "s.db"), "sync", str(insecure_plan), "--vm", "db01")
    assert code == 1
    assert INSECURE not in out
    assert [line for line in err.splitlines() if INSECURE in line][0].startswith("warning: ")
    assert err.count(INSECURE) == 1


def test_a_skipped_conversion_is_one_warning_in_text_json_and_exit_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from scmt_cli.targets import convert

    real_which = shutil.which
    monkeypatch.setattr(convert.shutil, "which", lambda cmd, *a, **k: None if cmd == "virt-v2v-in-place"
                        else real_which(cmd, *a, **k))
    estate = start_estate(demo_lab.write_lab(tmp_path / "lab"), tmp_path / "vcenter")
    try:
        plan = demo_lab.write_plan(tmp_path / "lab", url=estate.base_url + "/sdk",
                                   thumbprint=estate.http.thumbprint, user=estate.lab.user, vms=("db01", "web01"))
        state = ["--state", str(tmp_path / "s.db")]
        assert main([*state, "sync", str(plan)]) == 0
        capsys.readouterr()
        code, out, err = _run(capsys, *state, "failover", str(plan), "--vm", "db01")
        assert code == 1
        assert (out + err).count("guest conversion skipped") == 1, out + err
        code, out, err = _run(capsys, *state, "--json", "failover", str(plan), "--vm", "web01")
    finally:
        stop_estate(estate)
    doc = json.loads(out)
    skipped = [w for w in doc["warnings"] if "guest conversion skipped" in w]
    assert len(skipped) == 1 and code == doc["exit_code"] == 1
    assert "--direct" not in skipped[0]  # migrate reaches this warning too, and has no --direct


def test_quiet_prints_only_the_warnings(insecure_plan: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "-q", "--state", str(tmp_path / "s.db"), "sync", str(insecure_plan),
                          "--vm", "db01")
    assert code == 1 and out == ""
    assert err.count(INSECURE) == 1 and all(line.startswith("warning: ") for line in err.splitlines())
