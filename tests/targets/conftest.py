"""Shared fixtures for the target platform tests."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from scmt_cli.events import RecordingReporter
from scmt_cli.targets.base import DiskRequest, PreparedDisk, TargetDisk, TargetNic, TargetVmSpec


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


@pytest.fixture
def vm_name() -> str:
    """A name unique per test (libvirt's test driver shares its domains within one process)."""
    return f"web-{uuid.uuid4().hex[:8]}"


def spec_for(name: str, disks: list[PreparedDisk], **kw: object) -> TargetVmSpec:
    base: dict[str, object] = {
        "name": name,
        "cpus": 2,
        "memory_mib": 1024,
        "disks": tuple(TargetDisk(d.path, d.format) for d in disks),
        "nics": (TargetNic("default", "00:50:56:AA:BB:01"), TargetNic("bridge:br0")),
    }
    base.update(kw)
    return TargetVmSpec(**base)  # type: ignore[arg-type]


TWO_DISKS = [DiskRequest(0, 1 << 20), DiskRequest(1, 3 << 20)]


@pytest.fixture
def fake_v2v(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake virt-v2v-in-place on PATH that records its argv (and fails when FAKE_V2V_FAIL is set)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "v2v.argv"
    script = bindir / "virt-v2v-in-place"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import os, sys, time\n"
        f"open({str(log)!r}, 'w').write('\\n'.join(sys.argv[1:]))\n"
        "print('converting guest')\n"
        "if os.environ.get('FAKE_V2V_SLEEP'): time.sleep(float(os.environ['FAKE_V2V_SLEEP']))\n"
        "if os.environ.get('FAKE_V2V_FAIL'):\n"
        "    print('virt-v2v-in-place: error: inspection could not detect the source guest', file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log
