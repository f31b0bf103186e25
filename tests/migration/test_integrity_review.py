"""Adversarial data-integrity checks of the snapshot/CBT sync (resize, kill points, change ids)."""

from __future__ import annotations

import pytest

from scmt_cli.services.migration import diskcopy
from scmt_cli.services.migration import sync as sync_mod
from scmt_cli.services.migration.context import MigrationContext
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


def test_a_resize_is_detected_with_a_progress_record_written_before_sizes_were_recorded(
        lab: Lab, ctx: MigrationContext) -> None:
    assert run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx).last["web01"].ok
    key = diskcopy.progress_key("demo", "web01", 2000)
    prog = ctx.store.get_checkpoint(key)
    assert prog is not None and prog.pop("size") > 0
    ctx.store.put_checkpoint(key, prog)  # as an older scmt wrote it: the disk record has the size
    old = lab.estate.vm("web01").disks[2000].capacity
    lab.estate.resize_disk("web01", 2000, old + 2 * MIB)
    out = run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx).last["web01"]
    assert out.ok, out.error
    assert out.data["disks"][0]["mode"] == "full-resync"
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
