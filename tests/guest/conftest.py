"""Fixtures for the real lab guest: the cached image (built once, about a minute) and a lab serving it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.lab.guest import GuestImage, ensure_image
from scmt_cli.lab.guest.build import missing_tools
from scmt_cli.lab.guestfiles import GuestFiles
from scmt_cli.lab.vcenter import start_estate, stop_estate

VM = demo_lab.GUEST_VM


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The lab guest (the cache in ~/.cache/scmt/guest or $SCMT_GUEST_CACHE makes this instant after once)."""
    missing = missing_tools()
    if missing or shutil.which("debugfs") is None:
        pytest.skip("cannot build the lab guest: missing " + ", ".join(missing or ["debugfs"]))
    return ensure_image()


@dataclass
class GuestLab:
    root: Path
    estate: FakeEstate
    plan: Path
    files: GuestFiles

    @property
    def target_disk(self) -> Path:
        return self.root / "lab" / "target" / VM / "disk0.raw"

    @property
    def source_disk(self) -> Path:
        with self.estate.lock:
            return self.estate.disk(self.estate.vm(VM), 2000).path


@pytest.fixture
def guest_lab(tmp_path: Path, guest_image: GuestImage) -> Iterator[GuestLab]:
    lab_file = demo_lab.write_lab(tmp_path / "lab", guest=True)
    estate = start_estate(lab_file, tmp_path / "vcenter")
    try:
        plan = demo_lab.write_plan(tmp_path / "lab", url=estate.base_url + "/sdk",
                                   thumbprint=estate.http.thumbprint, user=estate.lab.user, vms=(VM,))
        yield GuestLab(tmp_path, estate, plan, GuestFiles(estate, VM, seed=7))
    finally:
        stop_estate(estate)
