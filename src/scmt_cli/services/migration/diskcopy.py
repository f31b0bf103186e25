"""Copy one disk from a vCenter snapshot into its target, resumably, with CBT.

Invariant kept in the state store for every (plan, VM, disk), checkpoint
``sync/<plan>/<vm>/disk<key>``::

    {"change_id": C, "stale": [[offset, length], ...], "fresh": bool, "size": S, "target": URL}

"The target equals the source as of CBT change id ``C``, except possibly in
the ``stale`` byte ranges".  ``C`` null means no complete copy yet: the whole
disk is stale (and ``fresh`` says the target still reads as zeroes, so a seed
may skip zero chunks).  A copy from a snapshot whose change id is ``N`` then
needs exactly ``stale`` + the areas CBT reports changed between ``C`` and the
snapshot - unless the disk's size is no longer ``S``: CBT's answer across a
disk extension is not trustworthy (VMware KB 2090639), so a resize is a reset.
The invariant is about the file ``URL``: a target file that is new this pass,
or a disk that now maps to another file, voids it (the disk is seeded again).

One attempt:

1. an attempt record (``.../attempt``: the snapshot's change id, the planned
   chunks, the engine checkpoint key) and an empty engine checkpoint are
   written in ONE transaction;
2. the engine copies the planned chunks, checkpointing its watermark (keyed
   per plan/VM/disk/generation) and deleting it on success;
3. the invariant becomes ``(N, [])`` and the attempt record is deleted, in one
   transaction.

If the process dies anywhere, the next attempt first folds the dead attempt
into the invariant: the chunks at or above the engine's watermark are stale
relative to ``N`` (no engine checkpoint left means the copy had finished).
So nothing below a watermark is ever copied twice, and the result is exact.
A CBT reset (or CBT off) makes a full copy of the whole disk, said as a warning.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from scmt_cli.blocks.checkpoint import Checkpointer
from scmt_cli.blocks.engine import REMOTE_IN_FLIGHT, CopyOptions, copy_chunks
from scmt_cli.blocks.plan import Chunk, ExtentMapError, plan_changed
from scmt_cli.errors import NoSpaceError, SourceOperationError, free_bytes, no_space
from scmt_cli.events import Reporter
from scmt_cli.services.migration.source import SourceDisk
from scmt_cli.state import StateStore
from scmt_cli.state.locks import VmLock
from scmt_cli.targets.disklock import file_url_path, lock_target_url
from scmt_cli.transports import base as transports
from scmt_cli.transports.base import BlockSource, Extent
from scmt_cli.transports.wrappers import GuardedTarget
from scmt_cli.vsphere.api import VCenter, merge_areas

#: Chunk size of sync copies: CBT deltas are small and scattered, 1 MiB keeps them tight.
SYNC_CHUNK_SIZE = 1024 * 1024

#: What a copy stopped early says after its final checkpoint: a fact, not an instruction (the
#: Interrupted error's hint is the one instruction, see cli/contract.py).
KEPT = "the checkpoint is kept in the state store"


def progress_key(plan: str, vm: str, key: int) -> str:
    return f"sync/{plan}/{vm}/disk{key}"


def attempt_key(plan: str, vm: str, key: int) -> str:
    return f"sync/{plan}/{vm}/disk{key}/attempt"


def engine_key(plan: str, vm: str, key: int, gen: int) -> str:
    return f"sync/{plan}/{vm}/disk{key}/gen{gen}"


@dataclass
class DiskResult:
    """What one disk's copy did."""

    key: int
    label: str
    index: int
    mode: str  # seed | incremental | full-resync
    size: int
    planned_bytes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    bytes_zero: int = 0
    seconds: float = 0.0
    recovered: bool = False  # an interrupted attempt was folded in
    reason: str | None = None  # why a full resync was needed
    change_id: str | None = None
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "label": self.label, "index": self.index, "mode": self.mode, "size": self.size,
            "planned_bytes": self.planned_bytes, "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written, "bytes_zero": self.bytes_zero,
            "seconds": round(self.seconds, 3), "recovered": self.recovered, "reason": self.reason,
            "change_id": self.change_id, "target": self.target,
        }  # fmt: skip


class _FreshStartReporter:
    """Passes everything on except the engine's "resuming from chunk 0" line (our pre-saved start)."""

    def __init__(self, inner: Reporter) -> None:
        self._inner = inner

    def log(self, level: Any, message: str, **fields: Any) -> None:
        if level == "info" and message.startswith("resuming from chunk 0 of"):
            return
        self._inner.log(level, message, **fields)

    def progress(self, task: str, done: int, total: int | None, **fields: Any) -> None:
        self._inner.progress(task, done, total, **fields)

    def event(self, kind: str, **fields: Any) -> None:
        self._inner.event(kind, **fields)


class _LockedCheckpointer(Checkpointer):
    """A checkpointer that re-checks the VM's lease (and the cancel flag) before every save."""

    def __init__(self, store: StateStore, key: str, params: dict[str, Any], lock: VmLock | None) -> None:
        super().__init__(store, key, params)
        self._lock = lock

    def save(self, watermark: int, digests: dict[int, str | None], fresh: bool) -> None:
        if self._lock is not None:
            self._lock.check()
        super().save(watermark, digests, fresh)


def index_map_key(plan: str, vm: str, space: str) -> str:
    """Where the VM's source-disk -> target-index map lives (``space``: ``vsphere`` keys or ``agent`` names)."""
    return f"indexes/{plan}/{vm}/{space}"


def stable_indexes(store: StateStore, plan: str, vm: str, names: Sequence[str], *, space: str) -> list[int]:
    """The target index of each included disk ``names`` (in the included order), stable across syncs.

    The first pass records ``name -> index`` in the included order; later
    passes keep every recorded index, so excluding or removing a disk never
    moves the disks after it onto another target file, and a disk included
    again gets its old index (and file) back.  A disk never seen before takes
    the lowest index no recorded disk uses.
    """
    key = index_map_key(plan, vm, space)
    rec = store.get_checkpoint(key)
    old: dict[str, int] = {str(k): int(v) for k, v in (rec or {}).get("indexes", {}).items()}
    mapping = dict(old) if rec is not None else {n: i for i, n in enumerate(names)}
    used = set(mapping.values())
    for name in names:
        if name not in mapping:
            index = next(i for i in range(len(used) + 1) if i not in used)
            mapping[name] = index
            used.add(index)
    if rec is None or mapping != old:
        store.put_checkpoint(key, {"indexes": mapping})
    return [mapping[n] for n in names]


def with_stable_indexes(store: StateStore, plan: str, vm: str, disks: Sequence[SourceDisk]) -> list[SourceDisk]:
    """``disks`` (from :func:`included_disks`) with their target indexes from :func:`stable_indexes`."""
    indexes = stable_indexes(store, plan, vm, [str(d.key) for d in disks], space="vsphere")
    return [replace(d, index=i) for d, i in zip(disks, indexes, strict=True)]


def _ranges(chunks: Sequence[Chunk]) -> list[list[int]]:
    return [[e.offset, e.length] for e in merge_areas([(c.offset, c.length) for c in chunks], 1 << 62)]


def _extents(pairs: Sequence[Sequence[int]], size: int) -> list[Extent]:
    return merge_areas([(int(o), int(n)) for o, n in pairs], size)


def reset_progress(store: StateStore, plan: str, vm: str, key: int, *, fresh: bool = False) -> None:
    """Forget what the target holds (a rolled-back target ran and wrote): the next copy is full."""
    with store.atomic():
        store.put_checkpoint(progress_key(plan, vm, key), {"change_id": None, "stale": [], "fresh": fresh})
        store.delete_checkpoint(attempt_key(plan, vm, key))


def recover_attempt(store: StateStore, plan: str, vm: str, key: int) -> bool:
    """Fold an interrupted attempt into the invariant (see the module doc); True if there was one."""
    att = store.get_checkpoint(attempt_key(plan, vm, key))
    if att is None:
        return False
    ckpt = store.get_checkpoint(att["engine_key"])
    chunks = [Chunk(int(i), int(o), int(n), "data") for i, o, n in att["chunks"]]
    watermark = int(ckpt.get("watermark", 0)) if ckpt is not None else 1 << 62
    stale = _ranges([c for c in chunks if c.index >= watermark])
    with store.atomic():
        store.put_checkpoint(progress_key(plan, vm, key),
                             {"change_id": att["change_id"], "stale": stale, "fresh": False,
                              "size": att["size"], "target": att["target"]})
        store.delete_checkpoint(attempt_key(plan, vm, key))
        Checkpointer(store, att["engine_key"], {}).clear()
    return True


def _forget_stale_progress(store: StateStore, plan: str, vm: str, key: int, target_url: str,
                           fresh_target: bool) -> str | None:
    """Drop progress that does not describe ``target_url`` as it is now; return why (None: it does).

    The progress of a disk says what its target file holds.  It is void when that file did not exist
    at the start of this pass (deleted or replaced: prepare_disks just created it empty), or when the
    disk now maps to another target file (a disk before it was excluded or removed, so the target
    indexes shifted).  It is then reset to "nothing copied" (``fresh`` when the file is new).
    """
    prog = store.get_checkpoint(progress_key(plan, vm, key))
    att = store.get_checkpoint(attempt_key(plan, vm, key))
    copied = att is not None or (prog is not None and (prog.get("change_id") is not None or prog.get("stale")
                                                       or prog.get("untracked")))
    if not copied:
        return None
    recorded = (prog or {}).get("target") or (att or {}).get("target")
    if fresh_target:
        reason = "the target disk did not exist any more (deleted or replaced since the last copy)"
    elif recorded is not None and recorded != target_url:
        reason = f"the disk now maps to target {target_url} (it was copied to {recorded})"
    else:
        return None
    with store.atomic():
        store.put_checkpoint(progress_key(plan, vm, key), {"change_id": None, "stale": [], "fresh": fresh_target})
        store.delete_checkpoint(attempt_key(plan, vm, key))
        if att is not None:
            Checkpointer(store, att["engine_key"], {}).clear()
    return reason


def copy_disk(
    *,
    store: StateStore,
    vc: VCenter,
    plan: str,
    vm: str,
    snapshot: str,
    disk_key: int,
    label: str,
    index: int,
    size: int,
    change_id: str | None,
    target_url: str,
    generation: int,
    fresh_target: bool,
    lock: VmLock | None,
    reporter: Reporter,
    wrap_source: Callable[[BlockSource], BlockSource] | None = None,
    chunk_size: int = SYNC_CHUNK_SIZE,
) -> DiskResult:
    """Bring one target disk to the content of ``snapshot`` (whose change id for the disk is ``change_id``)."""
    t0 = time.monotonic()
    lost = _forget_stale_progress(store, plan, vm, disk_key, target_url, fresh_target)
    recovered = recover_attempt(store, plan, vm, disk_key)
    prog = store.get_checkpoint(progress_key(plan, vm, disk_key))
    if prog is None:
        prog = {"change_id": None, "stale": [], "fresh": fresh_target}
    base: str | None = prog.get("change_id")
    stale = _extents(prog.get("stale", []), size)
    result = DiskResult(disk_key, label, index, "incremental", size, recovered=recovered, change_id=change_id,
                        target=target_url)
    fresh = False
    whole = [Extent(0, size)]
    if lost is not None:
        result.reason = lost
        reporter.log("warning", f"{vm}: {label}: {lost}; copying the whole disk again", vm=vm)
    if base is None and prog.get("untracked"):  # the last full copy had no change id to diff against
        result.mode, result.reason = "full-resync", "the source reports no CBT change id for this disk"
        reporter.log("warning", f"{vm}: {label}: {result.reason}; copying the whole disk again", vm=vm)
        reporter.event("cbt_reset", vm=vm, disk=disk_key, reason=result.reason)
        extents = whole
    elif base is None:
        result.mode = "seed"
        fresh = bool(prog.get("fresh")) and not recovered
        if fresh and change_id is not None:
            areas = vc.changed_areas(vm, snapshot, disk_key, "*")
            extents = list(areas.extents) if not areas.reset else whole
        else:
            extents = whole
    else:
        areas = vc.changed_areas(vm, snapshot, disk_key, base, previous_capacity=int(prog["size"]))
        if areas.reset:
            result.mode, result.reason = "full-resync", areas.reason or "changed block tracking was reset"
            reporter.log("warning", f"{vm}: {label}: {result.reason}; copying the whole disk again", vm=vm)
            reporter.event("cbt_reset", vm=vm, disk=disk_key, reason=result.reason)
            extents = whole
        else:
            extents = merge_areas([(e.offset, e.length) for e in (*areas.extents, *stale)], size)
    try:
        chunks = plan_changed(extents, size, chunk_size) if size else []
    except ExtentMapError as exc:  # vSphere's QueryChangedDiskAreas answer does not fit the disk
        raise SourceOperationError(
            f"{vm}: {label}: the changed-block (CBT) answer for disk {disk_key} is invalid: {exc}",
            hint="nothing was copied; if this repeats, reset CBT on the VM so the next sync copies the whole disk",
        ) from None
    result.planned_bytes = sum(c.length for c in chunks)
    ekey = engine_key(plan, vm, disk_key, generation)
    params = {"vm": vm, "disk": disk_key, "generation": generation, "size": size, "chunk_size": chunk_size,
              "change_id": change_id, "snapshot": snapshot}
    ckpt = _LockedCheckpointer(store, ekey, params, lock)
    with store.atomic():
        Checkpointer(store, ekey, {}).clear()
        store.put_checkpoint(attempt_key(plan, vm, disk_key), {
            "generation": generation, "change_id": change_id, "engine_key": ekey, "size": size,
            "target": target_url,
            "chunks": [[c.index, c.offset, c.length] for c in chunks],
        })
        ckpt.save(0, {}, fresh)
    path = file_url_path(target_url)
    allocated0 = allocated_bytes(path)
    if path is not None and result.mode in ("seed", "full-resync"):
        check_room(path, result.planned_bytes - allocated0)
    disk_lock = lock_target_url(target_url, what=f"scmt sync of {vm}")
    try:
        src: BlockSource = vc.open_disk(vm, snapshot, disk_key)
        if wrap_source is not None:
            src = wrap_source(src)
        try:
            dst = transports.open_target(target_url)
        except BaseException:
            src.close()
            raise
        if lock is not None:  # no write once the lease may have gone to another host
            dst = GuardedTarget(dst, lock.fence)
        try:
            opts = CopyOptions(chunk_size=chunk_size, in_flight=REMOTE_IN_FLIGHT, checkpoint_seconds=1.0,
                               checkpoint_bytes=64 * chunk_size, task=f"{vm}/{label}",
                               resume_hint=KEPT)
            outcome = copy_chunks(src, dst, chunks, options=opts, fresh=fresh, checkpointer=ckpt, resume=True,
                                  reporter=_FreshStartReporter(reporter))
        finally:
            dst.close()
            src.close()
    except NoSpaceError as exc:  # say how much more this pass needs, as far as we can tell
        if path is None:
            raise
        written = allocated_bytes(path) - allocated0
        raise no_space(exc.path or path, max(0, result.planned_bytes - allocated0 - max(written, 0))) from None
    finally:
        if disk_lock is not None:
            disk_lock.release()
    s = outcome.stats
    result.bytes_read, result.bytes_written, result.bytes_zero = s.bytes_read, s.bytes_written, s.bytes_zeroed
    with store.atomic():
        store.put_checkpoint(progress_key(plan, vm, disk_key), {"change_id": change_id, "stale": [], "fresh": False,
                                                                "size": size, "target": target_url,
                                                                **({"untracked": True} if change_id is None else {})})
        store.delete_checkpoint(attempt_key(plan, vm, disk_key))
        store.upsert_disk(plan, vm, disk_key, label=label, capacity_bytes=size, target=target_url,
                          change_id=change_id)
    result.seconds = time.monotonic() - t0
    return result


def allocated_bytes(path: str | None) -> int:
    """Bytes the file system holds for ``path`` (0 when absent or not a file)."""
    if path is None:
        return 0
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def check_room(path: str, needs: int) -> None:
    """Refuse a full copy before it starts when the target's file system cannot take ``needs`` more bytes."""
    free = free_bytes(path)
    if free is not None and needs > free:
        raise no_space(path, needs, hint="free space on that file system (or point target.path elsewhere), then "
                                         "run the sync again; nothing was copied")
