"""A full target file system during sync: exit 30 with sizes and a real command, never exit 13."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.faultlab import start_remote_lab


def test_sync_onto_a_full_file_system(tmp_path: Path) -> None:
    lab = start_remote_lab(tmp_path)
    target = tmp_path / "lab" / "target"
    target.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(target)],
                      capture_output=True).returncode != 0:
        lab.stop()
        pytest.skip("needs mount -t tmpfs (root)")
    try:
        for _ in range(2):  # the first run and the rerun both name the target problem
            r = lab.run("sync", str(lab.plan), "--vm", "web01")
            assert r.returncode == 30, r.stderr
            assert "no space left on device: " in r.stderr and "free)" in r.stderr
            assert f"scmt sync {lab.plan} --vm web01" in r.stderr
            assert "OSError" not in r.stderr and "--resume" not in r.stderr
    finally:
        subprocess.run(["umount", str(target)])
        lab.stop()
