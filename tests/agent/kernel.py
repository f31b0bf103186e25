"""Loop devices and tracefs for the change-tracking tests (skipped, with the reason, where the kernel lacks them)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.agent.tracking import find_tracefs


def ensure_tracefs() -> Path:
    """tracefs, mounted here if it is not (CI runs as root on the same kind of machine); else skip."""
    root = find_tracefs()
    if root is None and os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], capture_output=True, check=False)
        root = find_tracefs()
    if root is None:
        pytest.skip("no tracefs with block events on this kernel (CONFIG_FTRACE/EVENT_TRACING) or not root")
    return root


@contextlib.contextmanager
def loop_device(image: Path, size: int) -> Iterator[Path]:
    """A loop device over a new sparse ``image`` of ``size`` bytes; detached on exit."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("loop devices need root and losetup")
    with open(image, "wb") as fh:
        fh.truncate(size)
    res = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot attach a loop device: {res.stderr.strip()}")
    dev = Path(res.stdout.strip())
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", str(dev)], capture_output=True, check=False)


@contextlib.contextmanager
def mounted(dev: Path, where: Path, *, mkfs: bool = True) -> Iterator[Path]:
    """``dev`` formatted ext4 (unless ``mkfs`` is False) and mounted on ``where``; unmounted on exit."""
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 (e2fsprogs) is not installed")
    if mkfs:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(dev)],
                       check=True, capture_output=True)
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", str(dev), str(where)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["fsfreeze", "-u", str(where)], capture_output=True, check=False)
        subprocess.run(["umount", str(where)], capture_output=True, check=False)
