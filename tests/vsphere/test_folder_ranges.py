"""/folder reads in parallel: ranged GETs really overlap, on kept-alive connections, and every answer but a
plain 206 still gets httpx's handling (re-login, retries, errors)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scmt_cli.blocks.api import full_copy
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.errors import SourceOperationError, TransportError
from scmt_cli.lab.server import FakeHttpServer
from scmt_cli.transports.base import Extent, open_target
from scmt_cli.vsphere.folder import FolderDiskSource, FolderSession
from scmt_cli.vsphere.ranges import RangeReader
from scmt_cli.vsphere.tls import make_ssl_context

MiB = 1024 * 1024


class Folder:
    """A fake vCenter serving one flat disk, and a logged-in session on it."""

    def __init__(self, root: Path, data: bytes, *, connections: int = 8) -> None:
        disk = root / "ds1" / "vm" / "vm-flat.vmdk"
        disk.parent.mkdir(parents=True)
        disk.write_bytes(data)
        self.data = data
        self.server = FakeHttpServer(root, lambda ds, rel: None, user="u", password="pw", info={"name": "t"})
        self.base = self.server.start()
        assert self.server.thumbprint is not None
        self.ctx = make_ssl_context(thumbprint=self.server.thumbprint, ca_file=None, insecure=False)
        self.logins = 0
        self.token = ""
        self.login()
        self.session = FolderSession(self.base, self.ctx, lambda: f'vmware_soap_session="{self.token}"',
                                     self.login, connections=connections, timeout=10)

    def login(self) -> None:
        with httpx.Client(verify=self.ctx) as c:
            r = c.post(self.base + "/sdk/login", json={"user": "u", "password": "pw"})
            self.token = (r.cookies.get("vmware_soap_session") or "").strip('"')
        self.logins += 1

    def source(self, allocated: list[Extent] | None = None, path: str = "[ds1] vm/vm-flat.vmdk") -> FolderDiskSource:
        return FolderDiskSource(self.session, "dc1", path, len(self.data), allocated=allocated, attempts=4)

    def close(self) -> None:
        self.session.close()
        self.server.stop()


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Folder]:
    f = Folder(tmp_path / "root", os.urandom(24 * MiB))
    try:
        yield f
    finally:
        f.close()


def test_ranged_gets_overlap_and_the_copy_is_bit_identical(folder: Folder, tmp_path: Path) -> None:
    folder.server.delay = 0.05  # a host some way off: requests that overlap finish together
    src = folder.source()
    out = tmp_path / "copy.img"
    dst = open_target(f"file://{out}", size=src.size)
    try:
        full_copy(src, dst, options=CopyOptions(chunk_size=MiB, in_flight=8))
    finally:
        dst.close()
    assert out.read_bytes() == folder.data
    assert folder.server.folder_peak >= 4, "ranged GETs were not in flight together"
    reader = folder.session.ranges
    assert reader is not None and reader.connects <= 8  # kept alive: not one connection per GET
    assert src.requests == 24


def test_a_chunk_of_several_ranges_sends_its_gets_together(folder: Folder) -> None:
    folder.server.delay = 0.05
    pieces = [Extent(i * MiB, 64 * 1024) for i in range(0, 8, 2)]  # four ranges of one 8 MiB chunk
    src = folder.source(allocated=pieces)
    buf = bytearray(8 * MiB)
    src.readinto_many([(e.offset, memoryview(buf)[e.offset : e.end]) for e in pieces])
    for e in pieces:
        assert buf[e.offset : e.end] == folder.data[e.offset : e.end]
    assert folder.server.folder_peak == 4


def test_session_expiry_and_server_errors_go_through_httpx(folder: Folder) -> None:
    src = folder.source()
    assert src.read(MiB, 4096) == folder.data[MiB : MiB + 4096]
    folder.server.expire_sessions()  # 401 on the next GET: httpx logs in again
    assert src.read(2 * MiB, 4096) == folder.data[2 * MiB : 2 * MiB + 4096]
    assert folder.logins == 2
    folder.server.fail_reads = 2  # two 503 answers, then the data
    assert src.read(3 * MiB, 4096) == folder.data[3 * MiB : 3 * MiB + 4096]
    folder.server.fail_reads = 10
    with pytest.raises(TransportError) as err:
        src.read(0, 512)
    assert err.value.transient
    folder.server.fail_reads = 0
    with pytest.raises(SourceOperationError, match="404"):
        folder.source(path="[ds1] vm/missing-flat.vmdk").read(0, 10)


def test_a_kept_alive_connection_the_server_dropped_is_replaced(folder: Folder) -> None:
    src = folder.source()
    assert src.read(0, 4096) == folder.data[:4096]
    reader = folder.session.ranges
    assert reader is not None and len(reader._idle) == 1
    mine, theirs = socket.socketpair()
    theirs.close()  # the idle connection now reads as closed by the server
    reader._idle[0].sock.close()
    reader._idle[0].sock = mine
    assert src.read(5 * MiB, 4096) == folder.data[5 * MiB : 5 * MiB + 4096]
    assert reader.connects == 2 and src.requests == 2  # reconnected at once, not a retry of the read


def test_a_proxy_in_the_environment_leaves_every_request_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY",
                "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert RangeReader.usable("https://vc.example.com")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
    assert not RangeReader.usable("https://vc.example.com")
    assert RangeReader.usable("http://vc.example.com")
    monkeypatch.setenv("NO_PROXY", "vc.example.com")
    assert RangeReader.usable("https://vc.example.com")


def test_a_get_that_ends_after_close_closes_its_connection_instead_of_keeping_it(folder: Folder) -> None:
    reader = folder.session.ranges
    assert reader is not None
    target = "/folder/vm/vm-flat.vmdk?dcPath=dc1&dsName=ds1"
    buf = memoryview(bytearray(MiB))
    kept: list[object] = []
    real = reader._exchange

    def exchange_then_close(conn: object, *args: object) -> object:
        done = real(conn, *args)  # type: ignore[arg-type]
        kept.append(conn)
        reader.close()  # the source is closed while this GET was still running
        return done

    reader._exchange = exchange_then_close  # type: ignore[method-assign]
    assert reader.read_into(target, 0, buf, folder.session.cookie(), "test read")
    assert bytes(buf) == folder.data[:MiB]
    assert reader._idle == [] and kept and kept[0].sock is None  # type: ignore[attr-defined]
