"""`scmt demo` on a host with a converter installed: the lab's disks hold no OS, so it is never started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scmt_cli.cli.main import main
from tests.conversion import fakev2v


def test_demo_never_waits_on_the_converter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bindir = tmp_path / "bin"
    fakev2v.install(bindir)
    for k, v in fakev2v.env_with(bindir, {}, tmp_path / "v2v.pids", "silent").items():
        monkeypatch.setenv(k, v)
    code = main(["--json", "demo", "--keep", str(tmp_path / "demo")])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["ok"] is True
    assert not (tmp_path / "v2v.pids").exists()  # never started
    assert "no disk holds a partition table" in json.dumps(doc) or doc["seconds"] < 60
