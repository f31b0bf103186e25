"""The parallel NBD paths against real nbdkit servers, with the delay filter where distance matters.

* ``?connections=N`` is honoured (connections counted by nbdkit's log filter);
* a server's minimum block size is met through a bounce buffer (the
  blocksize-policy filter refuses anything unaligned), its preferred size
  sets the size of each READ;
* copies over the delay filter are bit-identical, survive kill -9 with
  ``--resume``, and retry EIO (the error filter) through ``readinto_many``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scmt_cli.blocks.api import full_copy
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.transports.base import open_source, open_target
from scmt_cli.transports.nbd import NbdDisk
from scmt_cli.transports.nbd.client import read_piece_size
from scmt_cli.transports.wrappers import RetryingSource, RetryPolicy
from tests.nbd.servers import Launcher, needs_nbdkit

pytestmark = [pytest.mark.nbd, needs_nbdkit]
MiB = 1 << 20
KiB = 1 << 10


def sparse_image(path: Path, size: int, seed: int, piece: int = 64 * KiB, every: int = 512 * KiB) -> bytes:
    """Data pieces of ``piece`` bytes every ``every`` bytes (so a 4 MiB chunk has several read ranges)."""
    rnd = random.Random(seed)
    with open(path, "wb") as fh:
        fh.truncate(size)
        for off in range(0, size, every):
            fh.seek(off + rnd.randrange(0, 4) * 4096)
            fh.write(rnd.randbytes(piece))
    return path.read_bytes()


def logged(log: Path) -> tuple[set[str], list[tuple[int, int]]]:
    """Connections (ids) and READ requests ``(offset, count)`` in an nbdkit log filter file."""
    text = log.read_text()
    conns = set(re.findall(r"connection=(\d+) Connect ", text))
    reads = [(int(o, 16), int(c, 16)) for o, c in re.findall(r"Read id=\d+ offset=0x([0-9a-f]+) count=0x([0-9a-f]+)", text)]
    return conns, reads


@pytest.mark.parametrize("wanted", [1, 3, 8])
def test_connections_in_the_url_are_the_connections_opened(servers: Launcher, tmp_path: Path, wanted: int) -> None:
    log = tmp_path / f"nbd{wanted}.log"
    image = tmp_path / "disk.img"
    data = sparse_image(image, 16 * MiB, 1, piece=MiB, every=2 * MiB)
    srv = servers.nbdkit("file", str(image), f"logfile={log}", filters=("log",), tcp=True, readonly=True)
    src = open_source(f"{srv.url}?connections={wanted}")
    out = tmp_path / "out.img"
    dst = open_target(f"file://{out}", size=src.size)
    try:
        full_copy(src, dst, options=CopyOptions(in_flight=8))
    finally:
        dst.close()
        src.close()
    assert out.read_bytes() == data
    conns, reads = logged(log)
    assert len(conns) == wanted
    assert reads


def test_the_minimum_block_size_is_met_through_a_bounce_buffer(servers: Launcher, tmp_path: Path) -> None:
    log = tmp_path / "nbd.log"
    srv = servers.nbdkit("pattern", "16M", "blocksize-minimum=4096", "blocksize-error-policy=error",
                         f"logfile={log}", filters=("log", "blocksize-policy"))
    want = b"".join(i.to_bytes(8, "big") for i in range(0, 16 * MiB, 8))  # the pattern plugin's bytes
    with NbdDisk(srv.url) as disk:
        assert disk.info()["block_size"]["min"] == 4096
        bufs = [bytearray(n) for n in (100, 5000, 3 * MiB + 1)]
        ranges = [(3, memoryview(bufs[0])), (8191, memoryview(bufs[1])), (MiB + 17, memoryview(bufs[2]))]
        disk.readinto_many(ranges)
        for off, view in ranges:
            assert bytes(view) == want[off : off + len(view)]
    _, reads = logged(log)
    assert reads and all(o % 4096 == 0 and c % 4096 == 0 for o, c in reads)


@pytest.mark.parametrize(("preferred", "piece"), [(64 * KiB, 2 * MiB), (4 * MiB, 4 * MiB)])
def test_reads_are_cut_in_pieces_of_the_preferred_size(servers: Launcher, tmp_path: Path, preferred: int,
                                                       piece: int) -> None:
    log = tmp_path / "nbd.log"
    srv = servers.nbdkit("pattern", "32M", f"blocksize-preferred={preferred}", "blocksize-maximum=16777216",
                         f"logfile={log}", filters=("log", "blocksize-policy"))
    with NbdDisk(srv.url) as disk:
        assert disk.info()["block_size"]["preferred"] == preferred
        assert len(disk.read(0, 16 * MiB)) == 16 * MiB
    _, reads = logged(log)
    assert sorted(c for _, c in reads) == [piece] * (16 * MiB // piece)


def test_read_piece_size_rules() -> None:
    assert read_piece_size(2 * MiB, 1, 4096, 32 * MiB) == 2 * MiB
    assert read_piece_size(2 * MiB, 1, 3 * MiB, 32 * MiB) == 3 * MiB  # at least one preferred block
    assert read_piece_size(2 * MiB, 1, 768 * KiB, 32 * MiB) == 1536 * KiB  # a whole number of them
    assert read_piece_size(2 * MiB, 4096, 64 * MiB, 32 * MiB) == 32 * MiB  # never above the maximum
    assert read_piece_size(2 * MiB, 512 * KiB, 512 * KiB, MiB) == MiB


def test_copy_over_a_distance_is_bit_identical(servers: Launcher, tmp_path: Path) -> None:
    image = tmp_path / "src.img"
    data = sparse_image(image, 48 * MiB, 2)
    srv = servers.nbdkit("file", str(image), "rdelay=10ms", "delay-extents=10ms", filters=("delay",), tcp=True,
                         readonly=True)
    out = tmp_path / "out.img"
    res = subprocess.run([sys.executable, "-m", "scmt_cli", "--state", str(tmp_path / "st.db"), "--json", "copy",
                          srv.url, f"file://{out}", "--verify"], capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == data
    doc = json.loads(res.stdout)
    st = doc["stats"]
    assert doc["verified"] and st["chunks_planned"] == 12 and st["chunks_written"] == 12


def test_kill_9_then_resume_over_a_distance_is_bit_identical(servers: Launcher, tmp_path: Path) -> None:
    image = tmp_path / "src.img"
    data = sparse_image(image, 32 * MiB, 3, piece=256 * KiB, every=512 * KiB)
    srv = servers.nbdkit("file", str(image), "rdelay=20ms", filters=("delay",), tcp=True, readonly=True)
    out, state = tmp_path / "out.img", str(tmp_path / "st.db")
    base = [sys.executable, "-m", "scmt_cli", "--state", state, "--json", "copy", srv.url, f"file://{out}",
            "--chunk-size", "1MiB", "--checkpoint-seconds", "0.2"]
    proc = subprocess.Popen([*base, "--bandwidth", "4MiB/s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 60
        while not (out.exists() and os.stat(out).st_blocks * 512 >= 3 * MiB):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "the copy made no progress"
            time.sleep(0.05)
        time.sleep(0.5)  # a checkpoint lands after that data
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -9
    assert out.read_bytes() != data, "the copy finished before the kill; the test proves nothing"
    again = subprocess.run([*base, "--resume", "--verify"], capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["resumed"] is True and doc["stats"]["chunks_resumed"] >= 1
    assert out.read_bytes() == data


def test_eio_is_retried_through_readinto_many_over_a_distance(servers: Launcher, tmp_path: Path) -> None:
    """Chunks of several ranges go to readinto_many in one call; a piece failing with EIO retries the call."""
    image = tmp_path / "src.img"
    data = sparse_image(image, 32 * MiB, 4)
    srv = servers.nbdkit("file", str(image), "error=EIO", "error-pread-rate=10%", "rdelay=5ms",
                         filters=("error", "delay"), tcp=True, readonly=True)
    # 64 READs in all: with 10% of them failing, a run without any failure has p < 0.1%; a call of 8 ranges
    # fails with p = 0.57, so 100 attempts all failing is p ~ 1e-24 per chunk.
    calls: list[int] = []

    class Counting(NbdDisk):
        def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
            calls.append(len(ranges))
            super().readinto_many(ranges)

    def opener() -> NbdDisk:
        return Counting(srv.url, timeout=10)

    src = RetryingSource(opener(), RetryPolicy(attempts=100, initial_wait=0.001, max_wait=0.005), reopen=opener)
    out = tmp_path / "out.img"
    dst = open_target(f"file://{out}", size=src.size)
    try:
        full_copy(src, dst, options=CopyOptions(in_flight=8))
    finally:
        dst.close()
        src.close()
    assert out.read_bytes() == data
    assert src.retrier.retries > 0
    assert max(calls) > 1, "no chunk went through readinto_many with several ranges"
