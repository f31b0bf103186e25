"""Loop devices, file systems and tracefs for the kernel tests of the agent.

Where the machine lacks them (not root, no tracefs, no losetup, no mkfs.ext4) the
tests skip with the reason; under ``SCMT_REQUIRE_KERNEL=1`` (set by .ci/run) they
fail instead, so CI cannot pass by skipping them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from scmt_cli.agent.tracking import find_tracefs


def kernel_required() -> bool:
    return os.environ.get("SCMT_REQUIRE_KERNEL", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip (or fail under SCMT_REQUIRE_KERNEL=1) because the kernel facility ``reason`` names is missing."""
    if kernel_required():
        pytest.fail(f"SCMT_REQUIRE_KERNEL=1 but {reason}")
    pytest.skip(reason)


def ensure_tracefs() -> Path:
    """tracefs, mounted here if it is not (CI runs as root on the same kind of machine); else skip."""
    root = find_tracefs()
    if root is None and os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], capture_output=True, check=False)
        root = find_tracefs()
    if root is None:
        unavailable("no tracefs with block events on this kernel (CONFIG_FTRACE/EVENT_TRACING) or not root")
    return root


@contextlib.contextmanager
def loop_device(image: Path, size: int) -> Iterator[Path]:
    """A loop device over a new sparse ``image`` of ``size`` bytes; detached on exit."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        unavailable("loop devices need root and losetup")
    with open(image, "wb") as fh:
        fh.truncate(size)
    res = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        unavailable(f"cannot attach a loop device: {res.stderr.strip()}")
    dev = Path(res.stdout.strip())
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", str(dev)], capture_output=True, check=False)


def mkfs_ext4(dev: Path) -> None:
    if shutil.which("mkfs.ext4") is None:
        unavailable("mkfs.ext4 (e2fsprogs) is not installed")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    str(dev)], check=True, capture_output=True)


@contextlib.contextmanager
def mounted(dev: Path, where: Path, *, mkfs: bool = True, options: str = "") -> Iterator[Path]:
    """``dev`` formatted ext4 (unless ``mkfs`` is False) and mounted on ``where``; thawed and unmounted on exit."""
    if mkfs:
        mkfs_ext4(dev)
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", *(["-o", options] if options else []), str(dev), str(where)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        unavailable(f"cannot mount a loop device here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["fsfreeze", "-u", str(where)], capture_output=True, check=False)
        subprocess.run(["umount", str(where)], capture_output=True, check=False)


def chunk_digests(path: Path, chunk: int) -> list[str]:
    """SHA-256 of every ``chunk`` of ``path`` (a loop device's backing file: what the device holds)."""
    out = []
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            out.append(hashlib.sha256(block).hexdigest())
    return out


def fsck_clean(image: Path) -> tuple[bool, str]:
    """``e2fsck -fn`` of an ext4 image: (clean, its output)."""
    res = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True, check=False)
    return res.returncode == 0, res.stdout + res.stderr
