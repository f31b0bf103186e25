"""Adversarial data-integrity checks of the snapshot/CBT sync (resize, kill points, change ids)."""

from __future__ import annotations

import hashlib

import pytest

from scmt_cli.services.migration import diskcopy
from scmt_cli.services.migration import sync as sync_mod
from scmt_cli.services.migration.context import MigrationContext, VmOutcome, open_context
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from tests.migration.conftest import Lab

MIB = 1024 * 1024


def test_a_disk_resized_between_syncs_is_copied_whole_not_from_cbt(lab: Lab, ctx: MigrationContext) -> None:
    """vSphere's changed areas are not trustworthy across a disk extension (VMware KB 2090639).

    The VCenter contract says a ``previous_capacity`` makes a resize count as a CBT reset; the
    sync must pass the size it recorded so the grown disk is copied whole.
    """
    assert run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx).last["web01"].ok
    old = lab.estate.vm("web01").disks[2000].capacity
    lab.estate.resize_disk("web01", 2000, old + 8 * MIB)
    lab.write("web01", old + 3 * MIB, b"g" * 4096)
    res = run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx)
    out = res.last["web01"]
    assert out.ok, out.error
    disk = out.data["disks"][0]
    assert disk["mode"] == "full-resync" and "resized" in (disk["reason"] or "")
    assert disk["size"] == old + 8 * MIB
    assert lab.target_digests("web01") == lab.source_digests("web01")


def test_a_target_disk_deleted_between_syncs_is_seeded_again(lab: Lab, ctx: MigrationContext) -> None:
    """The progress record says "the target equals the source as of C": not true of a recreated (empty) file."""
    assert run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx).last["db01"].ok
    (lab.root / "lab" / "target" / "db01" / "disk1.raw").unlink()
    lab.write("db01", 4096, b"w" * 4096)
    out = run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx).last["db01"]
    assert out.ok, out.error
    assert lab.target_digests("db01") == lab.source_digests("db01")
    assert out.warnings, "recopying a whole disk is worth a warning"


class _Killed(BaseException):
    """A SIGKILL stand-in: nothing after it runs (no final checkpoint, no cleanup that we suppress)."""


def _hard_kill(monkeypatch: pytest.MonkeyPatch, ctx: MigrationContext) -> None:
    """Make the cleanup a dead process would not do impossible: snapshot removal and generation finish."""
    from scmt_cli.blocks import engine
    from scmt_cli.lab.vcenter import FakeVCenter

    monkeypatch.setattr(engine, "_final_checkpoint", lambda *a: None)
    monkeypatch.setattr(ctx.store, "finish_generation", lambda *a, **k: None)
    real_remove = FakeVCenter.remove_snapshot

    def remove(self: FakeVCenter, vm: str, snap: str) -> None:
        if not kill_state["dead"]:
            real_remove(self, vm, snap)

    kill_state["dead"] = True
    monkeypatch.setattr(FakeVCenter, "remove_snapshot", remove)


kill_state = {"dead": False}


@pytest.mark.parametrize("point", ["after-snapshot", "mid-copy", "after-copy"])
def test_a_hard_kill_at_any_point_of_a_seed_then_guest_writes_ends_identical(
        lab: Lab, ctx: MigrationContext, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """Kill the seed (no cleanup at all), let the guest write everywhere, then sync twice: exact copy."""
    real_copy_disk = sync_mod.copy_disk
    calls = {"n": 0}

    def killing_copy_disk(**kw: object) -> object:
        calls["n"] += 1
        if point == "after-snapshot":
            raise _Killed
        if point == "mid-copy" and calls["n"] == 2:  # db01's second disk, after the first finished
            from scmt_cli.services.migration import sync as s

            real_readinto = s._CancellableSource.readinto
            reads = {"n": 0}

            def dying(self: object, offset: int, buf: memoryview) -> None:
                reads["n"] += 1
                if reads["n"] == 5:
                    raise _Killed
                real_readinto(self, offset, buf)  # type: ignore[arg-type]

            monkeypatch.setattr(s._CancellableSource, "readinto", dying)
        out = real_copy_disk(**kw)
        if point == "after-copy" and calls["n"] == len(lab.estate.vm("db01").disks):
            raise _Killed
        return out

    kill_state["dead"] = False
    with monkeypatch.context() as m:
        m.setattr(sync_mod, "copy_disk", killing_copy_disk)
        _hard_kill(m, ctx)
        with pytest.raises(_Killed):
            run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    kill_state["dead"] = False
    keys = sorted(lab.estate.vm("db01").disks)
    for key in keys:  # the guest writes at the start, the middle and the end of every disk
        cap = lab.estate.vm("db01").disks[key].capacity
        for off in (0, cap // 2 + 4096, cap - 4096):
            lab.write("db01", off, bytes([key % 251 + 1]) * 4096, key=key)
    first = run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx).last["db01"]
    assert first.ok, first.error
    assert lab.target_digests("db01") == lab.source_digests("db01")
    assert lab.tool_snapshots("db01") == []
    for key in keys:  # changes made after the resumed seed's snapshot reach the target too
        lab.write("db01", 8192, b"after" * 800, key=key)
    second = run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx).last["db01"]
    assert second.ok and second.data["kind"] == "incremental"
    assert lab.target_digests("db01") == lab.source_digests("db01")


def _sync_with_plan(lab: Lab, ctx: MigrationContext, text: str) -> VmOutcome:
    lab.plan.write_text(text, encoding="utf-8")
    edited = open_context(lab.plan, ctx.store, lab.reporter)
    try:
        out = run_sync(SyncRequest(lab.plan, vms=("db01",)), edited).last["db01"]
    finally:
        edited.close()
    assert out.ok, out.error
    return out


def _target_matches(lab: Lab, key: int, index: int) -> bool:
    with lab.estate.lock:
        disk = lab.estate.vm("db01").disks[key]
        want = disk.read(0, disk.capacity)
    got = (lab.root / "lab" / "target" / "db01" / f"disk{index}.raw").read_bytes()[: len(want)]
    return hashlib.sha256(got).digest() == hashlib.sha256(want).digest()


def test_a_disk_excluded_between_syncs_keeps_the_others_on_their_target_files(
        lab: Lab, ctx: MigrationContext) -> None:
    """Target indexes are recorded per source disk key at the first seed: excluding a disk moves no other
    disk onto another file (no reseed), and including it again gives it its old file back, incrementally."""
    assert run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx).last["db01"].ok
    first, second = sorted(lab.estate.vm("db01").disks)
    text = lab.plan.read_text(encoding="utf-8")
    lab.write("db01", 4096, b"n" * 4096, key=second)
    out = _sync_with_plan(lab, ctx, text.replace("  - name: db01\n", f"  - name: db01\n    disks:\n"
                                                 f"      - {{key: {first}, include: false}}\n"))
    [disk] = out.data["disks"]
    assert disk["key"] == second and disk["index"] == 1 and disk["mode"] == "incremental", disk
    assert not out.warnings and disk["planned_bytes"] < disk["size"]
    assert _target_matches(lab, second, 1)
    lab.write("db01", 8192, b"f" * 4096, key=first)
    out = _sync_with_plan(lab, ctx, text)  # included again
    assert [(d["key"], d["index"], d["mode"]) for d in out.data["disks"]] == [
        (first, 0, "incremental"), (second, 1, "incremental")]
    assert not out.warnings
    assert lab.target_digests("db01") == lab.source_digests("db01")


def test_stable_indexes_give_a_new_disk_the_lowest_free_index(lab: Lab, ctx: MigrationContext) -> None:
    store = ctx.store
    assert diskcopy.stable_indexes(store, "p", "v", ["a", "b", "c"], space="vsphere") == [0, 1, 2]
    assert diskcopy.stable_indexes(store, "p", "v", ["c", "d"], space="vsphere") == [2, 3]
    assert diskcopy.stable_indexes(store, "p", "v", ["a", "e", "c"], space="vsphere") == [0, 4, 2]
    assert diskcopy.stable_indexes(store, "p", "v", ["x"], space="agent") == [0]


def test_a_seed_killed_mid_copy_then_cbt_reset_is_copied_whole_not_resumed(
        lab: Lab, ctx: MigrationContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sync's resume is bound to its source like copy --resume (issue 15.2): the interrupted attempt is folded
    in against its snapshot's change id, so when that id no longer describes the disk (CBT reset: another
    lineage, as after a storage vMotion or a replaced disk) the next pass copies the whole disk instead of
    trusting the chunks the dead attempt copied."""
    real_copy_disk = sync_mod.copy_disk
    calls = {"n": 0}

    def killing_copy_disk(**kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:  # db01's second disk: die after a few reads, with checkpoints below the kill
            from scmt_cli.services.migration import sync as s

            real_readinto = s._CancellableSource.readinto
            reads = {"n": 0}

            def dying(self: object, offset: int, buf: memoryview) -> None:
                reads["n"] += 1
                if reads["n"] == 12:
                    raise _Killed
                real_readinto(self, offset, buf)  # type: ignore[arg-type]

            monkeypatch.setattr(s._CancellableSource, "readinto", dying)
        return real_copy_disk(**kw)

    from scmt_cli.blocks.engine import CopyOptions

    kill_state["dead"] = False
    with monkeypatch.context() as m:
        m.setattr(sync_mod, "copy_disk", killing_copy_disk)
        m.setattr(diskcopy, "CopyOptions",  # one read at a time, a checkpoint every 2 chunks
                  lambda **kw: CopyOptions(**{**kw, "checkpoint_bytes": 2 * MIB, "in_flight": 1}))
        _hard_kill(m, ctx)
        with pytest.raises(_Killed):
            run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx)
    kill_state["dead"] = False
    second = sorted(lab.estate.vm("db01").disks)[1]
    attempt = ctx.store.get_checkpoint(diskcopy.attempt_key("demo", "db01", second))
    assert attempt is not None
    engine_ckpt = ctx.store.get_checkpoint(attempt["engine_key"])
    assert engine_ckpt is not None and engine_ckpt["watermark"] >= 4  # chunks the dead attempt had copied
    lab.estate.reset_cbt("db01")
    lab.write("db01", 0, b"R" * 65536, key=second)  # in the part the dead attempt had copied
    out = run_sync(SyncRequest(lab.plan, vms=("db01",)), ctx).last["db01"]
    assert out.ok, out.error
    by_key = {d["key"]: d for d in out.data["disks"]}
    assert by_key[second]["mode"] == "full-resync", by_key[second]
    assert lab.target_digests("db01") == lab.source_digests("db01")
