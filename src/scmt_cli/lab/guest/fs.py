"""Files inside the guest's root file system, read and written with ``debugfs`` (no mount, no root).

The file system starts at :data:`~scmt_cli.lab.guest.recipe.PART_OFFSET` of the
disk file; ``debugfs`` reaches it as ``DISK?offset=N``.  Writing is only safe on
a file that no one else writes meanwhile (the lab writes a private copy, then
applies the blocks that changed through the fake disk, so CBT sees them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import scmt_cli.lab.guest.recipe as recipe
from scmt_cli.errors import ConfigError, TargetPlatformError

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _debugfs(disk: Path, requests: list[str], *, write: bool = False, offset: int = recipe.PART_OFFSET) -> bytes:
    """Run ``requests``: one with ``-R`` (its output is the command's own), several with ``-f``."""
    exe = shutil.which("debugfs") or ("/sbin/debugfs" if Path("/sbin/debugfs").exists() else None)
    if exe is None:
        raise ConfigError("debugfs is not installed (apt-get install e2fsprogs)")
    with tempfile.NamedTemporaryFile("w", suffix=".cmds") as cmds:
        cmds.write("\n".join(requests) + "\n")
        cmds.flush()
        how = ["-R", requests[0]] if len(requests) == 1 else ["-f", cmds.name]
        argv = [exe, *(["-w"] if write else []), *how, f"{disk}?offset={offset}"]
        proc = subprocess.run(argv, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise TargetPlatformError(f"debugfs on {disk} failed: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    return proc.stdout


def list_data(disk: Path, directory: str = recipe.DATA_DIR) -> list[str]:
    """Names of the regular files in ``directory`` of the guest."""
    out = _debugfs(disk, [f"ls -p {directory}"]).decode(errors="replace")
    names = []
    for line in out.splitlines():
        parts = line.strip().split("/")
        # /inode/mode/uid/gid/name/size/
        if len(parts) >= 7 and parts[2].startswith("10"):
            names.append(parts[5])
    return sorted(names)


def read_file(disk: Path, path: str) -> bytes:
    return _debugfs(disk, [f"cat {path}"])


def read_data(disk: Path, directory: str = recipe.DATA_DIR) -> dict[str, bytes]:
    return {name: read_file(disk, f"{directory}/{name}") for name in list_data(disk, directory)}


def data_digest_of(disk: Path) -> str:
    """What the guest would print for this disk (:func:`recipe.data_digest` of its data files)."""
    return recipe.data_digest(read_data(disk))


def write_files(disk: Path, files: dict[str, bytes], directory: str = recipe.DATA_DIR) -> None:
    """Create or replace files in ``directory`` of the guest's file system, in one ``debugfs -w`` run."""
    with tempfile.TemporaryDirectory(prefix="scmt-guestfs-") as tmp:
        reqs = [f"cd {directory}"]
        for i, (name, data) in enumerate(sorted(files.items())):
            if not _NAME.match(name):
                raise ValueError(f"guest data file name {name!r}: expected [A-Za-z0-9._-]+")
            src = Path(tmp) / f"f{i}"
            src.write_bytes(data)
            src.chmod(0o644)
            reqs += [f"rm {name}", f"write {src} {name}"]
        _debugfs(disk, reqs, write=True)
