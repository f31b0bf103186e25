"""Issue 16 §3: ``scmt demo`` keeps the exit-code contract.

* a demo that warns exits 1 and prints each warning once; a normal demo on a fresh machine has no
  warning and exits 0;
* a missing external tool (``openssl``; with ``--boot`` QEMU too) is exit 5 naming the tool and its
  package, before anything is built;
* an interrupted ``demo --keep DIR`` says what is true (the demo starts over) and its rerun works in
  the same DIR; a finished demo, or a directory with other files, is never overwritten.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.cli.main import main
from scmt_cli.lab import demo as demo_lab


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_normal_demo_has_no_warning_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--json", "demo")
    doc = json.loads(out)
    assert code == doc["exit_code"] == 0 and doc["ok"] is True, err
    assert doc["warnings"] == []
    assert "warning:" not in err


def test_a_demo_that_warns_exits_1_and_prints_each_warning_once(capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's plan without a pinned thumbprint: every load of it warns that TLS is not verified."""
    real = demo_lab.write_plan

    def insecure(directory: Path, **kw: Any) -> Path:
        return real(directory, **{**kw, "thumbprint": None})

    monkeypatch.setattr(demo_lab, "write_plan", insecure)
    code, out, err = _run(capsys, "demo")
    assert code == 1, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert any("insecure" in w for w in warnings), err
    assert [w for w, n in Counter(warnings).items() if n > 1] == [], warnings
    assert "warning:" not in out and "verifications passed" in out
    code, out, err = _run(capsys, "--json", "demo")
    doc = json.loads(out)
    assert code == doc["exit_code"] == 1 and doc["ok"] is True  # every step passed; it warned
    assert len(doc["warnings"]) == len(set(doc["warnings"])) >= 1


def _scmt(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scmt_cli", *argv], capture_output=True, text=True, timeout=300,
                          **kw)


def test_a_missing_tool_is_exit_5_naming_it_and_its_package(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}  # python is started by its full path; no tool is found
    done = _scmt(["demo"], env=env)
    assert done.returncode == 5, done.stderr
    assert "openssl (apt-get install openssl)" in done.stderr
    done = _scmt(["--json", "demo", "--boot"], env=env)
    doc = json.loads(done.stdout)
    assert done.returncode == doc["code"] == 5
    assert "openssl (apt-get install openssl)" in doc["message"]
    assert "qemu-system-x86_64 (apt-get install qemu-system-x86)" in doc["message"]


def test_an_interrupted_demo_keep_starts_over_when_run_again(tmp_path: Path) -> None:
    keep = tmp_path / "lab"
    argv = [sys.executable, "-m", "scmt_cli", "demo", "--keep", str(keep)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 60
        while not (keep / "state.db").exists() and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    [hint] = [line for line in err.splitlines() if line.startswith("hint: ")]
    assert hint == f"hint: run the same command again: it starts over in {keep}: scmt demo --keep {keep}"
    assert "does not continue where it stopped" in err
    assert not [line for line in err.splitlines() if "again" in line and line != hint], err
    assert json.loads((keep / ".scmt-demo.json").read_text())["status"] == "running"
    again = _scmt(["demo", "--keep", str(keep)])
    assert again.returncode == 0, again.stderr
    assert "holds an unfinished demo (interrupted or failed): starting it over" in again.stderr
    assert "verifications passed" in again.stdout
    assert json.loads((keep / ".scmt-demo.json").read_text())["status"] == "finished"
    # a finished demo is kept: refused, the hint names a command that works
    refused = _scmt(["demo", "--keep", str(keep)])
    assert refused.returncode == 2 and "a finished demo is kept there" in refused.stderr
    assert f"'scmt demo --keep {keep}-2'" in refused.stderr


def test_a_directory_with_other_files_is_never_taken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, "demo", "--keep", str(keep))
    assert code == 2 and "holds no unfinished demo" in err
    assert [p.name for p in keep.iterdir()] == ["notes.txt"]


def test_a_demo_running_in_that_directory_now_is_never_removed(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    keep = tmp_path / "lab"
    keep.mkdir()
    (keep / "state.db").write_bytes(b"a running demo's store")
    other = subprocess.Popen(["sleep", "60"])  # stands for the other demo's process
    try:
        (keep / ".scmt-demo.json").write_text(json.dumps({"status": "running", "pid": other.pid, "at": time.time()}))
        code, _, err = _run(capsys, "demo", "--keep", str(keep))
    finally:
        other.kill()
        other.wait()
    assert code == 2 and f"a demo is running there now (process {other.pid})" in err
    assert (keep / "state.db").read_bytes() == b"a running demo's store"
