"""The cached lab guest image: one file per recipe key, built at most once at a time.

Location: ``$SCMT_GUEST_CACHE``, else ``$XDG_CACHE_HOME/scmt/guest``, else
``~/.cache/scmt/guest``; the image is ``<key>/disk.raw`` (``key`` =
:func:`~scmt_cli.lab.guest.recipe.recipe_key`) with ``build.json`` (timings,
sizes) and ``build.log`` beside it.  An exclusive ``flock`` on ``<key>/.lock``
serialises builders: a second process waits for the first and then reuses
its image.  Callers never write the cached file: they copy it
(:func:`copy_sparse`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import scmt_cli.lab.guest.recipe as recipe


def cache_root() -> Path:
    env = os.environ.get("SCMT_GUEST_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scmt" / "guest"


@dataclass(frozen=True)
class GuestImage:
    path: Path
    key: str
    info: dict[str, object]

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def allocated(self) -> int:
        return self.path.stat().st_blocks * 512


def cached_image(root: Path | None = None) -> GuestImage | None:
    """The image for the current recipe if it was built already (no build, no lock)."""
    key = recipe.recipe_key()
    d = (root or cache_root()) / key
    disk = d / "disk.raw"
    if not disk.is_file():
        return None
    try:
        info = json.loads((d / "build.json").read_text())
    except (OSError, ValueError):
        info = {}
    return GuestImage(disk, key, info)


def ensure_image(root: Path | None = None, *, progress: Callable[[str], None] = lambda _m: None) -> GuestImage:
    """The cached image, built first when missing (holding the cache lock while building)."""
    found = cached_image(root)
    if found is not None:
        return found
    from scmt_cli.lab.guest.build import build_image

    key = recipe.recipe_key()
    d = (root or cache_root()) / key
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = cached_image(root)  # another process built it while we waited
        if found is not None:
            return found
        times = build_image(d / "disk.raw", progress=progress)
        st = (d / "disk.raw").stat()
        info = {"key": key, **{k: round(v, 1) for k, v in times.items()}, "size": st.st_size,
                "allocated": st.st_blocks * 512}  # fmt: skip
        (d / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    return GuestImage(d / "disk.raw", key, info)


def copy_sparse(src: Path, dst: Path) -> None:
    """Copy a disk file keeping its holes (``cp --sparse=always``, reflinked where the file system can)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("cp"):
        subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(src), str(dst)], check=True)
    else:  # pragma: no cover - every Debian has coreutils
        shutil.copyfile(src, dst)
