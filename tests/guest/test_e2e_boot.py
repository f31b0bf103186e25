"""The proof that a migrated VM runs: seed, incrementals with in-guest writes, failover with real
conversion (virt-v2v-in-place, TCG), boot on QEMU virtio, the guest's checksum equal to the source's at
quiesce.  And a test failover that leaves every byte of the source and the synced disks as it was (a sync
during its boot: tests/guest/test_test_failover.py).

Slow (minutes under TCG on a loaded machine); timeouts are generous on purpose.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.errors import BootError
from scmt_cli.events import CallbackReporter
from scmt_cli.lab.guest import GuestImage, copy_sparse
from scmt_cli.services.migration.boot import BootRequest, run_boot
from scmt_cli.services.migration.context import open_context
from scmt_cli.services.migration.failover import FailoverRequest, run_failover
from scmt_cli.services.migration.status import StatusRequest, status_service
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from scmt_cli.services.migration.testfailover import run_test_cleanup, run_test_failover
from scmt_cli.state import StateStore
from scmt_cli.targets.qemu import QemuDisk, QemuMachine, boot
from tests.guest.conftest import VM, GuestLab, need

pytestmark = pytest.mark.slow


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.timeout(300)
def test_the_unconverted_guest_does_not_boot_on_virtio(guest_image: GuestImage, tmp_path: Path) -> None:
    """What makes the proof meaningful: the VMware-like initramfs has no virtio driver."""
    need("qemu-system-x86_64")
    disk = tmp_path / "disk.raw"
    copy_sparse(guest_image.path, disk)
    m = QemuMachine("unconverted", 512, 1, "q35", "bios", (QemuDisk(str(disk), "raw", "virtio"),))
    with pytest.raises(BootError, match="Gave up waiting for root|ALERT|Kernel panic") as err:
        boot(m, tmp_path / "console.log", accel="tcg", timeout_s=240, stall_s=120)
    assert err.value.exit_code == 53


@pytest.mark.timeout(1800)
def test_failover_with_real_conversion_then_boot_sees_the_data_of_quiesce(
        guest_lab: GuestLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need("qemu-system-x86_64", "virt-v2v-in-place")
    monkeypatch.setenv("LIBGUESTFS_BACKEND", "direct")
    monkeypatch.setenv("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")  # KVM hangs on these machines (GUEST.md)
    cache = tmp_path / "libguestfs-cache"
    cache.mkdir()
    monkeypatch.setenv("LIBGUESTFS_CACHEDIR", str(cache))
    lab = guest_lab
    at_quiesce: dict[str, str] = {}

    def tap(kind: str, data: dict[str, Any]) -> None:
        if kind == "event" and data["kind"] == "source_quiesced":
            at_quiesce[data["vm"]] = lab.files.digest()  # the guest is shut down: nothing changes after this

    with StateStore.open(lab.root / "state.db") as store:
        ctx = open_context(lab.plan, store, CallbackReporter(tap))
        try:
            kinds = []
            for _ in range(3):
                res = run_sync(SyncRequest(lab.plan), ctx)
                assert not res.failed
                kinds.append(res.last[VM].data["kind"])
                assert lab.files.write_random(2)
            assert kinds == ["seed", "incremental", "incremental"]
            fo = run_failover(FailoverRequest(lab.plan, vms=(VM,), source_action="shutdown"), ctx)
            out = fo.outcomes[0]
            assert out.ok, out.error
            conv = out.data["conversion"]
            assert conv["ran"] is True and conv["ok"] is True and conv["seconds"] > 0
            # what the converter found and did, read from its own output
            assert conv["guest"], conv  # the OS it converted ("Converting <guest> to run on KVM")
            assert conv["virtio_drivers"] is True
            assert "virtio drivers available in the guest (block, network)" in conv["changes"]
            assert any("Guest Agent" in c for c in conv["changes"]), conv["changes"]  # installed at first boot
            assert conv["steps"][0].startswith("Setting up the source") and conv["steps"][-1] == "Finishing off"
            assert any(s.startswith("Converting ") for s in conv["steps"])
            log = Path(conv["log"])
            assert log.parent == lab.root / "v2v" / "demo" / VM  # beside the state store, one file per run
            text = log.read_text()
            assert "This guest has virtio drivers installed" in text and f"Converting {conv['guest']}" in text
            expected = at_quiesce[VM]
            assert len(lab.files.written) == 6  # the last two files reached the target in the final sync
            booted = run_boot(BootRequest(lab.plan, VM, accel="auto", expect=expected, timeout_s=900,
                                          stall_s=300), ctx)
            assert booted.outcome is not None and booted.outcome.booted
            assert booted.outcome.guest_value == expected
            assert booted.data_verified is True
            assert "files=7" in (booted.outcome.ready_line or "")  # the seed file and the six written
            view = status_service(StatusRequest(lab.plan), store, CallbackReporter(lambda *_: None)).vms[0]
            assert view.boot_seconds == booted.outcome.seconds
            assert view.measured_downtime_seconds is not None
            print(f"\nfigures: conversion {out.data['conversion']} downtime {view.measured_downtime_seconds} s, "
                  f"boot {booted.outcome.seconds} s ({booted.outcome.accel}): {booted.outcome.ready_line}")
        finally:
            ctx.close()


@pytest.mark.timeout(900)
def test_test_failover_boots_a_throwaway_copy_and_changes_nothing(guest_lab: GuestLab) -> None:
    need("qemu-system-x86_64", "qemu-img")
    lab = guest_lab
    with StateStore.open(lab.root / "state.db") as store:
        ctx = open_context(lab.plan, store, CallbackReporter(lambda *_: None))
        try:
            assert not run_sync(SyncRequest(lab.plan), ctx).failed
            assert lab.files.write_random(1)
            assert not run_sync(SyncRequest(lab.plan), ctx).failed
            source_before, synced_before = _sha(lab.source_disk), _sha(lab.target_disk)
            state_before = ctx.status(VM)[0]
            expected = lab.files.digest()
            # --direct: the copy boots unconverted on SATA, which the VMware-like initramfs drives
            res = run_test_failover(BootRequest(lab.plan, VM, accel="tcg", expect=expected, direct=True,
                                                timeout_s=600, stall_s=300), ctx)
            assert res.outcome is not None and res.outcome.booted and res.data_verified is True
            print(f"\nfigures: test copy booted in {res.outcome.seconds} s: {res.outcome.ready_line}")
            test_dir = Path(res.test_dir or "")
            assert (test_dir / "disk0.raw").exists()  # the point-in-time clone it booted
            assert res.clone is not None and res.clone["disks"] == [str(test_dir / "disk0.raw")]
            assert _sha(lab.source_disk) == source_before
            assert _sha(lab.target_disk) == synced_before
            assert ctx.status(VM)[0] == state_before
            # a real failover refuses while the test copy exists
            fo = run_failover(FailoverRequest(lab.plan, vms=(VM,)), ctx)
            assert not fo.outcomes[0].ok and fo.outcomes[0].error_code == 42
            assert "test failover copy exists" in (fo.outcomes[0].error or "")
            assert lab.estate.vm(VM).power == "poweredOn"
            # syncs continue after the test
            assert lab.files.write_random(1)
            assert not run_sync(SyncRequest(lab.plan), ctx).failed
            cleaned = run_test_cleanup(BootRequest(lab.plan, VM), ctx)
            assert str(test_dir) in cleaned.removed
            assert not test_dir.exists()
        finally:
            ctx.close()
