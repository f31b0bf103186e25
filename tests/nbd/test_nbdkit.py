"""The NBD client against real nbdkit servers (memory, file, sparse-random, pattern; filters)."""

from __future__ import annotations

import os
import random
import struct
import threading
from pathlib import Path

import pytest

from scmt_cli.errors import NotAvailableError, ReadOnlyTargetError, SizeMismatchError, TransportError, UsageError
from scmt_cli.transports import base
from scmt_cli.transports.nbd import NbdDisk
from scmt_cli.transports.nbd import protocol as p
from tests.nbd.servers import Launcher, needs_nbdkit

pytestmark = [pytest.mark.nbd, needs_nbdkit]
MiB = 1 << 20


def _check_cover(extents: list[base.Extent], offset: int, length: int) -> None:
    pos = offset
    for e in extents:
        assert e.offset == pos and e.length > 0
        pos = e.end
    assert pos == offset + length


@pytest.mark.parametrize("tcp", [False, True])
def test_memory_roundtrip_against_a_model(servers: Launcher, tcp: bool) -> None:
    srv = servers.nbdkit("memory", "8M", tcp=tcp)
    model = bytearray(8 * MiB)
    rng = random.Random(4)
    with NbdDisk(srv.url) as disk:
        assert disk.size == 8 * MiB and disk.info()["negotiation"] == "go"
        assert disk.info()["structured_replies"] and disk.info()["block_status"]
        for _ in range(40):
            off = rng.randrange(0, 8 * MiB - 1)
            n = rng.randrange(1, min(300_000, 8 * MiB - off))
            op = rng.choice(["write", "zero", "read"])
            if op == "write":
                data = rng.randbytes(n)
                disk.write(off, data)
                model[off : off + n] = data
            elif op == "zero":
                disk.write_zeroes(off, n)
                model[off : off + n] = bytes(n)
            else:
                assert disk.read(off, n) == model[off : off + n]
        disk.flush()
        assert disk.read(0, 8 * MiB) == model


def test_file_plugin_writes_land_in_the_file(servers: Launcher, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(4 * MiB))
    model = bytearray(image.read_bytes())
    srv = servers.nbdkit("file", str(image), tcp=True)
    with NbdDisk(srv.url) as disk:
        data = os.urandom(MiB + 123)
        disk.write(777, data)
        model[777 : 777 + len(data)] = data
        disk.write_zeroes(2 * MiB, MiB)
        model[2 * MiB : 3 * MiB] = bytes(MiB)
        disk.flush()
        assert disk.read(0, disk.size) == model
    assert image.read_bytes() == model
    # the zeroed range was punched (NO_HOLE not set), so the file is sparse there
    assert os.stat(image).st_blocks * 512 < 4 * MiB


def test_trim_then_zero_reads_zero(servers: Launcher) -> None:
    srv = servers.nbdkit("memory", "4M")
    with NbdDisk(srv.url) as disk:
        assert disk.has(p.TFLAG_SEND_TRIM)
        disk.write(0, b"\xff" * MiB)
        disk.trim(0, MiB // 2)
        disk.write_zeroes(MiB // 2, MiB // 2)
        assert disk.read(MiB // 2, MiB // 2) == bytes(MiB // 2)
        kinds = {e.kind for e in disk.extents(0, MiB)}
        assert kinds <= {"hole", "zero", "data"}


def test_pattern_plugin_reads_are_exact_with_small_max_block(servers: Launcher) -> None:
    """blocksize-policy advertises a 64 KiB maximum and errors on bigger requests: reads must split."""
    srv = servers.nbdkit(
        "pattern", "16M", "blocksize-maximum=65536", "blocksize-error-policy=error",
        filters=("blocksize-policy",),
    )
    with NbdDisk(srv.url) as disk:
        assert disk.info()["block_size"]["max"] == 65536
        for off, n in [(0, 8), (5, 3 * MiB + 17), (16 * MiB - 100, 100), (65536 * 3 - 8, 65536 * 2 + 16)]:
            got = disk.read(off, n)
            start = off - off % 8
            stop = off + n + (-(off + n)) % 8
            expected = b"".join(struct.pack(">Q", o) for o in range(start, stop, 8))
            assert got == expected[off - start : off - start + n]


def test_block_status_on_sparse_random(servers: Launcher) -> None:
    srv = servers.nbdkit("sparse-random", "64M", "seed=7", "percent=30")
    with NbdDisk(srv.url) as disk:
        exts = list(disk.extents())
        _check_cover(exts, 0, 64 * MiB)
        kinds = [e.kind for e in exts]
        assert "data" in kinds and {"hole", "zero"} & set(kinds)
        assert all(a.kind != b.kind for a, b in zip(exts, exts[1:], strict=False)), "adjacent extents are merged"
        for e in exts:
            data = disk.read(e.offset, e.length)
            if e.kind != "data":
                assert data == bytes(e.length)
        data_bytes = sum(e.length for e in exts if e.kind == "data")
        assert 0.1 * 64 * MiB < data_bytes < 0.6 * 64 * MiB
        # a sub-range is covered exactly too, starting and ending mid-extent
        sub = list(disk.extents(12345, 20 * MiB + 1))
        _check_cover(sub, 12345, 20 * MiB + 1)


def test_no_structured_replies_means_one_data_extent(servers: Launcher) -> None:
    srv = servers.nbdkit("pattern", "1M", options=("--no-sr",))
    with NbdDisk(srv.url) as disk:
        assert not disk.info()["structured_replies"]
        assert list(disk.extents(100, 1000)) == [base.Extent(100, 1000, "data")]
        assert disk.read(8, 8) == struct.pack(">Q", 8)


def test_non_fixed_newstyle_server_uses_export_name(servers: Launcher) -> None:
    srv = servers.nbdkit("memory", "1M", options=("--mask-handshake=0",))
    with NbdDisk(srv.url) as disk:
        assert disk.info()["negotiation"] == "export_name"
        disk.write(100, b"abc")
        assert disk.read(99, 5) == b"\0abc\0"


def test_read_only_export_refuses_writes_before_sending(servers: Launcher) -> None:
    srv = servers.nbdkit("memory", "1M", readonly=True)
    with pytest.raises(ReadOnlyTargetError) as err:
        base.open_target(srv.url)
    assert err.value.exit_code == 33
    with base.open_source(srv.url) as disk:  # type: ignore[attr-defined]
        assert disk.read_only and "read-only" in disk.info()["flags"]
        for call in (lambda: disk.write(0, b"x"), lambda: disk.write_zeroes(0, 10), lambda: disk.trim(0, 10)):
            with pytest.raises(ReadOnlyTargetError):
                call()
        disk.flush()  # nothing to flush on a read-only export
        assert disk.read(0, 4) == bytes(4)


def test_range_checks(servers: Launcher) -> None:
    srv = servers.nbdkit("memory", "1M")
    with NbdDisk(srv.url) as disk:
        with pytest.raises(SizeMismatchError):
            disk.read(MiB - 1, 2)
        with pytest.raises(SizeMismatchError):
            disk.write(MiB, b"x")
        with pytest.raises(UsageError):
            disk.read(-1, 1)
        assert disk.read(MiB, 0) == b""


def test_multi_conn_pool_and_single_connection(servers: Launcher) -> None:
    multi = servers.nbdkit("memory", "1M")
    single = servers.nbdkit("memory", "1M", "multi-conn-mode=disable", filters=("multi-conn",))
    with NbdDisk(multi.url, connections=3) as disk:
        assert disk.has(p.TFLAG_CAN_MULTI_CONN) and disk.connection_count == 3
    with NbdDisk(single.url, connections=3) as disk:
        assert not disk.has(p.TFLAG_CAN_MULTI_CONN) and disk.connection_count == 1


@pytest.mark.parametrize("conns", [1, 4])
def test_concurrent_requests_from_threads(servers: Launcher, conns: int) -> None:
    srv = servers.nbdkit("memory", "16M")
    blobs = {i: os.urandom(300_000 + i) for i in range(16)}
    errors: list[BaseException] = []
    with NbdDisk(srv.url, connections=conns) as disk:

        def work(i: int) -> None:
            try:
                off = i * MiB
                for _ in range(5):
                    disk.write(off, blobs[i])
                    assert disk.read(off, len(blobs[i])) == blobs[i]
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[0]
        disk.flush()
        for i, blob in blobs.items():
            assert disk.read(i * MiB, len(blob)) == blob


@pytest.mark.parametrize(
    ("errno", "transient"),
    [("EIO", True), ("ESHUTDOWN", True), ("EPERM", False), ("ENOMEM", False), ("EINVAL", False), ("ENOSPC", False)],
)
def test_error_filter_codes(servers: Launcher, errno: str, transient: bool) -> None:
    srv = servers.nbdkit("memory", "1M", f"error={errno}", "error-pread-rate=100%", filters=("error",))
    with NbdDisk(srv.url) as disk:
        with pytest.raises(TransportError) as err:
            disk.read(0, 4096)
        assert err.value.transient is transient
        assert errno in err.value.message
        disk.write(0, b"still usable")


def test_random_eio_is_transient_and_retry_gets_right_bytes(servers: Launcher) -> None:
    srv = servers.nbdkit("pattern", "4M", "error=EIO", "error-pread-rate=30%", filters=("error",))
    with NbdDisk(srv.url) as disk:
        failures: list[TransportError] = []
        for off in range(0, 4 * MiB, 256 * 1024):
            for _attempt in range(50):
                try:
                    data = disk.read(off, 256 * 1024)
                    break
                except TransportError as exc:
                    failures.append(exc)
            else:
                pytest.fail("never succeeded")
            assert data[:8] == struct.pack(">Q", off) and data[-8:] == struct.pack(">Q", off + 256 * 1024 - 8)
        assert failures and all(exc.transient for exc in failures)


def test_dropped_connection_is_transient_and_reconnects(servers: Launcher, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(2 * MiB))
    srv = servers.nbdkit("file", str(image), "delay-read=3", filters=("delay",), tcp=True)
    with NbdDisk(srv.url, timeout=10) as disk:
        result: list[BaseException] = []

        def reader() -> None:
            try:
                disk.read(0, 4096)
            except BaseException as exc:
                result.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        threading.Event().wait(0.5)
        srv.kill()
        t.join(15)
        assert result and isinstance(result[0], TransportError) and result[0].transient
        assert "lost" in result[0].message or "failed" in result[0].message
        with pytest.raises(TransportError) as err:  # server gone: reconnect fails, but transiently
            disk.read(0, 10)
        assert err.value.transient
        assert srv.port is not None
        servers.nbdkit("file", str(image), tcp=True, port=srv.port)
        assert disk.read(0, MiB) == image.read_bytes()[:MiB]


def test_registry_opens_both_schemes(servers: Launcher) -> None:
    unix = servers.nbdkit("memory", "1M")
    tcp = servers.nbdkit("memory", "2M", tcp=True)
    assert {"nbd", "nbd+unix"} <= set(base.registered())
    for srv, size in ((unix, MiB), (tcp, 2 * MiB)):
        disk = base.open_target(srv.url)
        try:
            assert isinstance(disk, base.BlockTarget) and isinstance(disk, base.BlockSource)
            assert disk.size == size and disk.thread_safe and not disk.fresh
            assert disk.describe() == srv.url
        finally:
            disk.close()


def test_target_smaller_than_source_is_refused(servers: Launcher) -> None:
    srv = servers.nbdkit("memory", "1M")
    with pytest.raises(SizeMismatchError) as err:
        base.open_target(srv.url, size=MiB + 1)
    assert err.value.exit_code == 32
    base.open_target(srv.url, size=MiB).close()


def test_retry_wrapper_recovers_from_random_eio_across_threads(servers: Launcher) -> None:
    """The engine's retry wrapper reopens the disk while other threads still use the old one."""
    from scmt_cli.transports.wrappers import RetryingSource, RetryPolicy

    srv = servers.nbdkit("pattern", "8M", "error=EIO", "error-pread-rate=20%", filters=("error",))
    src = RetryingSource(NbdDisk(srv.url), RetryPolicy(attempts=30, initial_wait=0.001, max_wait=0.01),
                         reopen=lambda: NbdDisk(srv.url))
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for off in range(i * 128 * 1024, 8 * MiB, 4 * 128 * 1024):
                data = src.read(off, 128 * 1024)
                assert data[:8] == struct.pack(">Q", off) and data[-8:] == struct.pack(">Q", off + 128 * 1024 - 8)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    src.close()
    assert not errors, errors[0]
    assert src.retrier.retries > 0


def test_closed_disk_errors_are_transient(servers: Launcher) -> None:
    srv = servers.nbdkit("memory", "1M")
    disk = NbdDisk(srv.url)
    disk.close()
    disk.close()
    with pytest.raises(TransportError) as err:
        disk.read(0, 1)
    assert err.value.transient and "closed" in err.value.message


def test_block_status_not_supported_falls_back_to_data(servers: Launcher) -> None:
    srv = servers.nbdkit("eval", "get_size=echo 8M", "pread=head -c $3 /dev/zero", "can_extents=exit 0",
                         "extents=echo EOPNOTSUPP no allocation info here >&2; exit 1")
    with NbdDisk(srv.url) as disk:
        assert disk.info()["block_status"]
        assert list(disk.extents(100, 5000)) == [base.Extent(100, 5000, "data")]
    bad = servers.nbdkit("sparse-random", "8M", "error=EPERM", "error-extents-rate=100%", filters=("error",))
    with NbdDisk(bad.url) as disk, pytest.raises(TransportError) as err:
        list(disk.extents())
    assert "BLOCK_STATUS" in err.value.message and "EPERM" in err.value.message


def test_large_export_block_status_and_high_offsets(servers: Launcher) -> None:
    """Block status lengths are 32-bit: a 10 GiB export needs several queries, merged into one extent."""
    srv = servers.nbdkit("memory", "10G")
    with NbdDisk(srv.url) as disk:
        assert list(disk.extents()) == [base.Extent(0, 10 << 30, "hole")]
        disk.write((9 << 30) + 5, b"far away")
        assert disk.read((9 << 30) + 4, 10) == b"\0far away\0"
        exts = list(disk.extents())
        _check_cover(exts, 0, 10 << 30)
        assert [e.kind for e in exts] == ["hole", "data", "hole"]


def test_writes_split_at_the_advertised_maximum(servers: Launcher) -> None:
    srv = servers.nbdkit("memory", "4M", "blocksize-maximum=65536", "blocksize-error-policy=error",
                         filters=("blocksize-policy",))
    with NbdDisk(srv.url) as disk:
        data = os.urandom(MiB + 4097)
        disk.write(3, data)
        assert disk.read(3, len(data)) == data
        disk.write_zeroes(3, MiB)  # no payload: not bound by the payload maximum
        assert disk.read(0, MiB + 3) == bytes(MiB + 3)


def test_tls_required_by_nbdkit_is_not_available(servers: Launcher, tmp_path: Path) -> None:
    psk = tmp_path / "keys.psk"
    psk.write_text("alice:" + os.urandom(16).hex() + "\n")
    psk.chmod(0o600)
    srv = servers.nbdkit("memory", "1M", options=("--tls=require", f"--tls-psk={psk}"))
    with pytest.raises(NotAvailableError) as err:
        NbdDisk(srv.url)
    assert "requires TLS" in err.value.message and err.value.exit_code == 4
