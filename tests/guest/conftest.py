"""Fixtures for the real lab guest: the cached image (built once, about a minute), a lab serving it, and a
private libvirt daemon.

A missing tool skips these tests, except under ``SCMT_REQUIRE_GUEST=1`` (set by ``.ci/run``), where it
fails them: CI must never pass by skipping the proof that a migrated VM boots.  A failed image build or a
daemon that does not start is always a failure.
"""

from __future__ import annotations

import os
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
from tests.guest import libvirtd as private_libvirtd
from tests.guest.libvirtd import PrivateLibvirtd

VM = demo_lab.GUEST_VM


def required() -> bool:
    return os.environ.get("SCMT_REQUIRE_GUEST", "").strip().lower() in ("1", "true", "yes")


def lacking(what: str) -> None:
    """Skip for ``what`` is missing; under SCMT_REQUIRE_GUEST=1 fail instead."""
    if required():
        pytest.fail(f"SCMT_REQUIRE_GUEST=1 but {what} (.ci/run installs it)", pytrace=False)
    pytest.skip(what)


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        lacking(f"needs {', '.join(missing)}")


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The lab guest (the cache in ~/.cache/scmt/guest or $SCMT_GUEST_CACHE makes this instant after once)."""
    missing = missing_tools()
    if missing or shutil.which("debugfs") is None:
        lacking("cannot build the lab guest: missing " + ", ".join(missing or ["debugfs"]))
    return ensure_image()  # a failed build raises: an error, never a skip


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


@pytest.fixture
def libvirtd(tmp_path: Path) -> Iterator[PrivateLibvirtd]:
    """A private libvirt daemon with the QEMU driver (see tests/guest/libvirtd.py), stopped with its domains."""
    missing = private_libvirtd.missing()
    if missing:
        lacking("a private libvirtd needs " + ", ".join(missing))
    daemon = private_libvirtd.start(tmp_path / "libvirtd")
    try:
        yield daemon
    finally:
        daemon.stop()
