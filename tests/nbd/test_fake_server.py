"""The NBD client against a scripted server: fallbacks, refusals and garbage."""

from __future__ import annotations

import socket
import time

import pytest

from scmt_cli.errors import NotAvailableError, ScmtError, SourceUnreachableError, TransportError
from scmt_cli.transports.nbd import NbdDisk
from scmt_cli.transports.nbd import protocol as p
from tests.nbd.fakenbd import FakeNbd, Script
from tests.nbd.servers import free_port


def _open(script: Script, **kw: object) -> tuple[FakeNbd, NbdDisk]:
    server = FakeNbd(script)
    try:
        return server, NbdDisk(server.url, timeout=kw.pop("timeout", 5.0), **kw)  # type: ignore[arg-type]
    except BaseException:
        server.close()
        raise


@pytest.mark.parametrize("hflags", [p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES, p.FLAG_FIXED_NEWSTYLE])
def test_go_unsupported_falls_back_to_export_name(hflags: int) -> None:
    server, disk = _open(Script(go=False, hflags=hflags))
    with server, disk:
        assert disk.info()["negotiation"] == "export_name"
        assert p.OPT_GO in server.options_seen and server.options_seen[-1] == p.OPT_EXPORT_NAME
        assert disk.size == 1 << 20
        assert disk.read(1000, 5000) == server.script.data[1000:6000]
        disk.write(10, b"hello")
        disk.flush()
        assert server.script.data[10:15] == b"hello"
        assert list(disk.extents()) == [disk_extent(0, 1 << 20)]


def disk_extent(offset: int, length: int) -> object:
    from scmt_cli.transports.base import Extent

    return Extent(offset, length, "data")


def test_structured_reply_with_hole_and_out_of_order_chunks() -> None:
    server, disk = _open(Script(structured=True))
    with server, disk:
        got = disk.read(4096, 10000)
        assert got[:5000] == bytes(5000)  # the scripted hole
        assert got[5000:] == server.script.data[4096 + 5000 : 4096 + 10000]


@pytest.mark.parametrize(
    ("greeting", "needle"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not an NBD server"),
        (b"NBDMAGIC" + (0x00420281861253).to_bytes(8, "big") + bytes(2), "old-style"),
        (b"NBDMAGIC" + b"12345678" + bytes(2), "not a newstyle"),
        (b"NBDMAG", "closed the connection"),
    ],
)
def test_garbage_greeting_is_a_clear_error(greeting: bytes, needle: str) -> None:
    start = time.monotonic()
    with FakeNbd(Script(greeting=greeting)) as server, pytest.raises(TransportError) as err:
        NbdDisk(server.url, timeout=5)
    assert needle in err.value.message
    assert time.monotonic() - start < 4


def test_tls_required_says_so() -> None:
    with FakeNbd(Script(option_error=p.REP_ERR_TLS_REQD)) as server, pytest.raises(NotAvailableError) as err:
        NbdDisk(server.url, timeout=5)
    assert "requires TLS" in err.value.message
    assert err.value.exit_code == 4


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        (p.REP_ERR_UNKNOWN, "has no export named 'disk'"),
        (p.REP_ERR_POLICY, "refused access"),
        (p.REP_ERR_INVALID, "invalid option"),
        (p.REP_ERR_SHUTDOWN, "shutting down"),
    ],
)
def test_go_errors_are_clear(code: int, needle: str) -> None:
    with FakeNbd(Script(go_error=code)) as server, pytest.raises(TransportError) as err:
        NbdDisk(server.url, timeout=5)
    assert needle in err.value.message
    assert "no such thing here" in err.value.message
    assert err.value.transient is (code == p.REP_ERR_SHUTDOWN)


@pytest.mark.parametrize(
    ("reply", "structured", "needle"),
    [
        ("bad_magic", False, "bad magic"),
        ("unknown_cookie", False, "unknown request cookie"),
        ("truncated", False, "lost"),
        ("close", False, "lost"),
        ("outside", True, "outside the request"),
        ("missing", True, "incomplete data"),
        ("overlap", True, "overlapping"),
    ],
)
def test_misbehaving_replies_fail_clearly_and_quickly(reply: str, structured: bool, needle: str) -> None:
    server, disk = _open(Script(reply=reply, structured=structured))
    with server, disk:
        start = time.monotonic()
        with pytest.raises(TransportError) as err:
            disk.read(0, 4096)
        assert needle in err.value.message
        assert time.monotonic() - start < 4


def test_silent_server_times_out_as_transient() -> None:
    server, disk = _open(Script(reply="silent"), timeout=0.5)
    with server, disk:
        with pytest.raises(TransportError) as err:
            disk.read(0, 4096)
        assert err.value.transient
        assert "stopped answering" in err.value.message


@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize(("reply", "transient", "name"), [("error_eio", True, "EIO"), ("error_enospc", False, "ENOSPC")])
def test_server_error_replies_map_to_transport_errors(structured: bool, reply: str, transient: bool, name: str) -> None:
    server, disk = _open(Script(reply=reply, structured=structured))
    with server, disk:
        with pytest.raises(TransportError) as err:
            disk.read(0, 512)
        assert err.value.transient is transient
        assert name in err.value.message
        assert "READ of 512 bytes at offset 0" in err.value.message
        # the connection stays usable after an error reply
        disk.write(0, b"x")


def test_connection_refused_is_source_unreachable() -> None:
    port = free_port()
    with pytest.raises(SourceUnreachableError) as err:
        NbdDisk(f"nbd://127.0.0.1:{port}/x", timeout=2)
    assert err.value.exit_code == 10
    assert f"127.0.0.1:{port}" in err.value.message


def test_unreachable_nbd_target_is_target_unreachable() -> None:
    from scmt_cli.errors import TargetUnreachableError
    from scmt_cli.transports.nbd.client import open_nbd_target

    port = free_port()
    with pytest.raises(TargetUnreachableError) as err:
        open_nbd_target(f"nbd://127.0.0.1:{port}/x", timeout=2)
    assert err.value.exit_code == 14
    assert err.value.message.startswith("NBD target nbd://127.0.0.1:")


def test_missing_unix_socket_is_source_unreachable(tmp_path: object) -> None:
    with pytest.raises(SourceUnreachableError):
        NbdDisk(f"nbd+unix:///x?socket={tmp_path}/nope.sock", timeout=2)


def test_server_that_accepts_but_never_speaks_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(ScmtError) as err:
            NbdDisk(f"nbd://127.0.0.1:{port}/", timeout=0.5)
        assert isinstance(err.value, TransportError) and err.value.transient
        assert time.monotonic() - start < 3


def test_readinto_a_dirty_buffer_zeroes_holes() -> None:
    server, disk = _open(Script(structured=True))
    with server, disk:
        buf = bytearray(b"\xff" * 10000)
        disk.readinto(4096, memoryview(buf))
        assert buf[:5000] == bytes(5000)
        assert buf[5000:] == server.script.data[4096 + 5000 : 4096 + 10000]
