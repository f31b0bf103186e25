"""The NBD client against qemu-nbd serving a raw image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scmt_cli.errors import ReadOnlyTargetError, TransportError
from scmt_cli.transports import base
from scmt_cli.transports.nbd import NbdDisk
from tests.nbd.servers import Launcher, needs_qemu_nbd

pytestmark = [pytest.mark.nbd, needs_qemu_nbd]
MiB = 1 << 20


def _sparse_image(path: Path) -> bytearray:
    """8 MiB image: data at [1M, 2M) and [5M, 5M+4097), holes elsewhere."""
    with path.open("wb") as f:
        f.truncate(8 * MiB)
    model = bytearray(8 * MiB)
    with path.open("r+b") as f:
        for off, n in ((MiB, MiB), (5 * MiB, 4097)):
            data = os.urandom(n)
            f.seek(off)
            f.write(data)
            model[off : off + n] = data
    return model


@pytest.mark.parametrize("tcp", [False, True])
def test_qemu_nbd_roundtrip_matches_file(servers: Launcher, tmp_path: Path, tcp: bool) -> None:
    image = tmp_path / "disk.raw"
    model = _sparse_image(image)
    srv = servers.qemu_nbd(image, tcp=tcp, export="disk0")
    with NbdDisk(srv.url) as disk:
        assert disk.size == 8 * MiB and disk.info()["negotiation"] == "go"
        assert disk.read(0, disk.size) == model
        data = os.urandom(3 * MiB + 5)
        disk.write(3 * MiB - 7, data)
        model[3 * MiB - 7 : 6 * MiB - 2] = data
        disk.write_zeroes(MiB, MiB)
        model[MiB : 2 * MiB] = bytes(MiB)
        disk.trim(7 * MiB, MiB)  # unspecified content afterwards; the file had zeroes there anyway
        disk.flush()
        assert disk.read(0, disk.size) == model
    assert image.read_bytes() == model


def test_qemu_nbd_block_status(servers: Launcher, tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    model = _sparse_image(image)
    srv = servers.qemu_nbd(image)
    with NbdDisk(srv.url) as disk:
        exts = list(disk.extents())
        pos = 0
        for e in exts:
            assert e.offset == pos
            pos = e.end
            if e.kind != "data":
                assert model[e.offset : e.end] == bytes(e.length)
        assert pos == 8 * MiB
        data = [e for e in exts if e.kind == "data"]
        assert data and sum(e.length for e in data) <= 3 * MiB
        assert any(e.offset <= MiB and e.end >= 2 * MiB for e in data)


def test_qemu_nbd_read_only_and_unknown_export(servers: Launcher, tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    model = _sparse_image(image)
    srv = servers.qemu_nbd(image, readonly=True, export="disk0", tcp=True)
    with pytest.raises(ReadOnlyTargetError):
        base.open_target(srv.url)
    with NbdDisk(srv.url, connections=2) as disk:
        assert disk.read(5 * MiB, 4097) == model[5 * MiB : 5 * MiB + 4097]
        with pytest.raises(ReadOnlyTargetError):
            disk.write(0, b"x")
    with pytest.raises(TransportError) as err:
        NbdDisk(srv.url.replace("/disk0", "/nosuch"))
    assert "no export named 'nosuch'" in err.value.message
    assert err.value.hint == "the server offers: 'disk0'"
    assert not err.value.transient
