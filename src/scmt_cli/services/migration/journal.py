"""Hot backup (``method: hot-backup``): an undo journal per sync generation, for point-in-time restore.

The target disks always hold the newest synced state.  Before a hot-backup
pass overwrites a chunk of a target disk, the chunk's current bytes are
appended to that generation's undo log, on the migration host next to the
target disks::

    <target root>/<vm>/journal/g<generation>/index.json
    <target root>/<vm>/journal/g<generation>/disk<N>.undo

``index.json``: ``{"generation": G, "time": unix, "disks": {"N": [[offset,
length, undo_offset], ...]}}``, written before the copy starts (so a pass
killed half way is still undoable: its undo log holds every chunk it may have
overwritten, and restoring an untouched chunk's old bytes changes nothing).

The state "after generation G" is the current target with the undo logs of
every later generation applied, newest first (:func:`restore_point`).  The
newest :data:`RETENTION` journals are kept; older ones are deleted, so the
oldest restorable point is the generation just before the oldest journal
kept.  Memory stays bounded: chunks are copied one at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from scmt_cli.errors import InputError, InvalidStateError
from scmt_cli.transports.base import BlockTarget

#: Generations whose undo logs are kept (a 5 s interval keeps about 4 minutes of restore points).
RETENTION = 48


def journal_root(vm_folder: Path) -> Path:
    return vm_folder / "journal"


class UndoLog:
    """The undo log of one generation being written (one file per disk)."""

    def __init__(self, root: Path, generation: int) -> None:
        self.folder = root / f"g{generation}"
        self.generation = generation
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index: dict[str, Any] = {"generation": generation, "time": time.time(), "disks": {}}

    def save_old(self, disk_index: int, target: BlockTarget, extents: list[tuple[int, int]]) -> int:
        """Append the target's current bytes of ``extents`` to the disk's undo file; return bytes saved."""
        entries: list[list[int]] = []
        saved = 0
        with open(self.folder / f"disk{disk_index}.undo", "wb") as fh:
            for offset, length in extents:
                data = target.read(offset, length)
                entries.append([offset, length, fh.tell()])
                fh.write(data)
                saved += length
            fh.flush()
            os.fsync(fh.fileno())
        self.index["disks"][str(disk_index)] = entries
        self._write_index()
        return saved

    def mark_unrestorable(self, disk_index: int) -> None:
        """This pass wrote the disk without saving its old bytes (a full copy): no restore before it."""
        self.index["disks"][str(disk_index)] = None
        self._write_index()

    def _write_index(self) -> None:
        tmp = self.folder / "index.json.tmp"
        tmp.write_text(json.dumps(self.index), encoding="utf-8")
        os.replace(tmp, self.folder / "index.json")


def _journals(root: Path) -> list[tuple[int, Path]]:
    out: list[tuple[int, Path]] = []
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith("g") and entry.name[1:].isdigit() and (entry / "index.json").exists():
                out.append((int(entry.name[1:]), entry))
    return sorted(out)


def _index(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder}/index.json: unreadable journal index: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("disks"), dict):
        raise InputError(f"{folder}/index.json: not a journal index")
    return data


def prune(root: Path, keep: int = RETENTION) -> list[int]:
    """Delete all but the newest ``keep`` journals; return the generations removed."""
    journals = _journals(root)
    removed = []
    for gen, folder in journals[: max(0, len(journals) - keep)]:
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(gen)
    return removed


def restorable(root: Path, passes: list[int], generation: int) -> bool:
    """Whether the state after ``generation`` can be rebuilt: every later pass (``passes``: the ids of
    every pass of the VM, any status) has its undo journal."""
    kept = {g for g, f in _journals(root) if all(v is not None for v in _index(f)["disks"].values())}
    return all(g in kept for g in passes if g > generation)


def restore_point(root: Path, disks: list[Path], generation: int, out_dir: Path, passes: list[int]) -> list[Path]:
    """Write the disks as they were after ``generation`` into ``out_dir``; return the files written.

    ``disks`` are the current target disk files (index = position).  Raises
    InvalidStateError when a later pass's journal was pruned (or never written).
    """
    if not restorable(root, passes, generation):
        raise InvalidStateError(f"generation {generation} cannot be restored: the journal of a later pass was "
                                f"pruned (the newest {RETENTION} are kept) or never written")
    later = sorted(((g, f) for g, f in _journals(root) if g > generation), reverse=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for i, src in enumerate(disks):
        dst = out_dir / f"disk{i}.raw"
        _sparse_copy(src, dst)
        with open(dst, "r+b") as out:
            for _, folder in later:
                entries = _index(folder)["disks"].get(str(i), [])
                if entries is None:
                    raise InvalidStateError(f"generation {generation} cannot be restored: disk {i} was copied "
                                            f"in full by pass {folder.name[1:]} (no undo data)")
                if not entries:
                    continue
                with open(folder / f"disk{i}.undo", "rb") as undo:
                    for offset, length, at in entries:
                        undo.seek(at)
                        data = undo.read(length)
                        if len(data) != length:
                            raise InputError(f"{folder}/disk{i}.undo: truncated undo log")
                        out.seek(offset)
                        out.write(data)
        written.append(dst)
    return written


def _sparse_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` keeping holes (SEEK_DATA/SEEK_HOLE)."""
    size = src.stat().st_size
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.truncate(size)
        pos = 0
        fd = fin.fileno()
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
                hole = os.lseek(fd, data, os.SEEK_HOLE)
            except OSError:
                data, hole = (pos, size) if pos == 0 else (size, size)
            if data >= size:
                break
            fin.seek(data)
            left = hole - data
            fout.seek(data)
            while left > 0:
                buf = fin.read(min(left, 4 * 1024 * 1024))
                if not buf:
                    break
                fout.write(buf)
                left -= len(buf)
            pos = hole
