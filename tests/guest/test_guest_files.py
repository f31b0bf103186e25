"""The lab guest's files: written inside its file system, carried by CBT incrementals, read back without a mount."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from scmt_cli.errors import InputError
from scmt_cli.events import RecordingReporter
from scmt_cli.lab.disk import BLOCK
from scmt_cli.lab.guest import fs, recipe
from scmt_cli.lab.guestfiles import changed_blocks
from scmt_cli.lab.parse import load_lab
from scmt_cli.services.migration.context import open_context
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from scmt_cli.state import StateStore
from tests.guest.conftest import VM, GuestLab


def test_changed_blocks_finds_exactly_the_blocks_that_differ(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    data = bytearray(b"\x01" * (40 * BLOCK))
    old.write_bytes(bytes(data))
    data[3 * BLOCK + 5] ^= 0xFF
    data[17 * BLOCK] ^= 0xFF
    data[39 * BLOCK + BLOCK - 1] ^= 0xFF
    new.write_bytes(bytes(data))
    assert changed_blocks(old, new) == [3, 17, 39]
    assert changed_blocks(old, old) == []


def test_data_digest_is_what_sha256sum_piped_to_sha256sum_prints() -> None:
    files = {"b.dat": b"two", "a.dat": b"one"}
    lines = f"{hashlib.sha256(b'one').hexdigest()}  a.dat\n{hashlib.sha256(b'two').hexdigest()}  b.dat\n"
    assert recipe.data_digest(files) == hashlib.sha256(lines.encode()).hexdigest()


def _lab_with_image(tmp_path: Path, image: str, size: str | None) -> Path:
    size_line = f"\n        size: {size}" if size else ""
    p = tmp_path / "lab.yaml"
    p.write_text(f"""version: 1
hosts: [{{name: h1, esxi_version: "7.0.3"}}]
datastores: [{{name: ds1}}]
vms:
  - name: v1
    guest_id: debian11_64Guest
    host: h1
    disks:
      - image: {image}
        datastore: ds1{size_line}
""")
    return p


def test_lab_disk_image_takes_its_size_from_the_image_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    img = tmp_path / "small.raw"
    img.write_bytes(b"\0" * 1024 * 1024)
    lab = load_lab(_lab_with_image(tmp_path, "small.raw", None))
    assert lab.vms[0].disks[0].capacity == 1024 * 1024 and lab.vms[0].disks[0].image == str(img)
    with pytest.raises(InputError, match=r"lab.yaml:\d+:\d+: vms\[0\].disks\[0\].size: the image is 1048576"):
        load_lab(_lab_with_image(tmp_path, "small.raw", "2 MiB"))
    with pytest.raises(InputError, match="expected 'guest' or a raw disk image file"):
        load_lab(_lab_with_image(tmp_path, "missing.raw", None))
    assert load_lab(_lab_with_image(tmp_path, "guest", None)).vms[0].disks[0].capacity == recipe.DISK_SIZE


def test_file_writes_in_the_guest_reach_the_target_through_cbt_incrementals(guest_lab: GuestLab) -> None:
    lab = guest_lab
    start = lab.files.digest()
    with StateStore.open(lab.root / "state.db") as store:
        ctx = open_context(lab.plan, store, RecordingReporter())
        try:
            seed = run_sync(SyncRequest(lab.plan), ctx)
            assert not seed.failed and seed.last[VM].data["kind"] == "seed"
            assert fs.data_digest_of(lab.target_disk) == start
            for round_ in range(2):
                names = lab.files.write_random(2)
                assert names
                res = run_sync(SyncRequest(lab.plan), ctx)
                out = res.last[VM]
                assert not res.failed and out.data["kind"] == "incremental"
                # CBT carried only the blocks the file system changed, not the disk
                assert 0 < out.data["bytes_read"] <= 64 * BLOCK * 4
                assert fs.data_digest_of(lab.target_disk) == lab.files.digest() != start
                assert set(names) <= set(fs.list_data(lab.target_disk))
        finally:
            ctx.close()
