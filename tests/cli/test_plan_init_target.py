"""Issue 16 §5: ``scmt plan init --target dir|libvirt``; ``dir`` (what runs on a fresh machine) is the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scmt_cli.cli.main import main
from scmt_cli.domain.plan.model import METHODS


def _init(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["--json", "plan", "init", str(path), *extra])
    return code, json.loads(capsys.readouterr().out)


def test_the_default_target_is_a_directory_next_to_the_plan(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _init(capsys, tmp_path / "wave1.yaml")
    assert code == 0 and doc["target"] == "dir"
    target = yaml.safe_load((tmp_path / "wave1.yaml").read_text())["target"]
    assert target["type"] == "dir" and not Path(target["path"]).is_absolute()  # no root-owned directory needed
    assert "uri" not in target


@pytest.mark.parametrize("target", ["dir", "libvirt"])
@pytest.mark.parametrize("method", METHODS)
def test_every_starter_plan_validates_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str,
                                                 target: str) -> None:
    plan = tmp_path / "p.yaml"
    code, doc = _init(capsys, plan, "--method", method, "--target", target)
    assert (code, doc["target"], doc["method"]) == (0, target, method)
    assert yaml.safe_load(plan.read_text())["target"]["type"] == target
    assert main(["plan", "validate", str(plan)]) == 0
    assert f"{plan}: valid" in capsys.readouterr().out


def test_an_unknown_target_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _init(capsys, tmp_path / "p.yaml", "--target", "kvm")
    assert code == 2 and "dir, libvirt" in doc["message"]
    assert not (tmp_path / "p.yaml").exists()
