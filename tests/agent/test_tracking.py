"""Kernel change tracking: event parsing and chunk mapping (recorded traces), then on real loop devices."""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.agent.server import AgentServer
from scmt_cli.agent.service import ServeRequest, build_config
from scmt_cli.agent.tracking import DeviceInfo, DiskTracker, LostEvents, WriteEvent, parse_trace_line, ranges
from scmt_cli.agent.transport import AgentDisk
from scmt_cli.events import RecordingReporter
from tests.agent.kernel import ensure_tracefs, loop_device
from tests.agent.servers import TOKEN, write_token

MiB = 1024 * 1024

# Recorded from /sys/kernel/tracing/instances/*/trace_pipe on this kind of machine (6.18 kernel).
RECORDED = """\
     ksoftirqd/1-22      [001] ..s..   296.324488: block_rq_complete: 7,0 WS () 800 + 8 be,0,4 [0]
     ksoftirqd/0-14      [000] ..s..   296.338197: block_rq_complete: 7,0 WS () 20480 + 1024 be,0,4 [0]
     ksoftirqd/1-22      [001] ..s..   296.339674: block_rq_complete: 7,0 FF () 18446744073709551615 + 0 none,0,0 [0]
     ksoftirqd/1-22      [001] d.s1.   296.339700: block_rq_complete: 7,0 WS () 0 + 0 be,0,4 [0]
     ksoftirqd/0-14      [000] ..s..   296.342152: block_rq_complete: 7,0 RS () 0 + 8 be,0,4 [0]
          <idle>-0       [000] ..s..   300.000001: block_rq_complete: 259,3 D () 4096 + 2048 [0]
CPU:0 [LOST 4896 EVENTS]
"""


def test_recorded_trace_lines_parse_to_writes_and_losses() -> None:
    got = [parse_trace_line(line) for line in RECORDED.splitlines()]
    assert got == [
        WriteEvent((7 << 20) | 0, 800, 8, "WS"),
        WriteEvent(7 << 20, 20480, 1024, "WS"),
        None,  # a flush carries no sectors
        None,  # a zero-length write neither
        None,  # a read
        WriteEvent((259 << 20) | 3, 4096, 2048, "D"),  # a discard changes the contents too
        LostEvents(0, 4896),
    ]


def _tracker(size: int = 64 * MiB, start: int = 0) -> DiskTracker:
    return DiskTracker("d", DeviceInfo(7 << 20, start, size), epoch="e1")


def test_cut_maps_written_sectors_to_chunks_and_moves_the_cursor() -> None:
    t = _tracker()
    first = t.cut(None, None, MiB, 64 * MiB)
    assert first.lost and first.reason.startswith("no cursor")
    t.mark(2048, 8)  # 1 MiB + 0..4 KiB -> chunk 1
    t.mark(4 * 2048 - 1, 2)  # straddles chunks 3 and 4
    t.mark(200 * 2048, 8)  # past the end: ignored
    ans = t.cut(first.epoch, first.seq, MiB, 64 * MiB)
    assert ans.changed == [1, 3, 4] and ans.seq == first.seq + 1
    assert t.cut(ans.epoch, ans.seq, MiB, 64 * MiB).changed == []
    # A client one cut behind still gets the union of the generations it missed.
    t.mark(10 * 2048, 1)
    newer = t.cut(ans.epoch, ans.seq + 1, MiB, 64 * MiB)
    assert t.cut(ans.epoch, ans.seq, MiB, 64 * MiB).changed == [10]
    assert newer.changed == [10]
    assert ranges([1, 2, 3, 7, 9, 10]) == [[1, 3], [7, 1], [9, 2]]


def test_partition_offsets_and_large_chunks() -> None:
    t = _tracker(16 * MiB, start=2048)  # a partition starting at 1 MiB of its disk
    c = t.cut(None, None, 2 * MiB, 16 * MiB)
    t.mark(2048 + 5 * 2048, 8)  # partition byte 5 MiB -> 2 MiB chunk 2
    t.mark(0, 8)  # before the partition: another one's write
    assert t.cut(c.epoch, c.seq, 2 * MiB, 16 * MiB).changed == [2]


@pytest.mark.parametrize("case", ["foreign epoch", "lost events", "resized", "too old", "future"])
def test_unreliable_cursors_answer_lost_with_a_reason(case: str) -> None:
    t = _tracker()
    c = t.cut(None, None, MiB, 64 * MiB)
    epoch, seq, size = c.epoch, c.seq, 64 * MiB
    if case == "foreign epoch":
        epoch = "another-agent"
    elif case == "lost events":
        t.mark(0, 8)
        t.mark_lost("the kernel trace buffer overflowed")
    elif case == "resized":
        size = 128 * MiB
    elif case == "too old":
        for _ in range(6):
            t.cut(c.epoch, t.seq, MiB, 64 * MiB)
    else:
        seq = c.seq + 5
    ans = t.cut(epoch, seq, MiB, size)
    assert ans.lost and ans.reason
    if case == "lost events":  # the new cursor is good again from this cut on
        t.mark(2048, 8)
        assert t.cut(ans.epoch, ans.seq, MiB, 64 * MiB).changed == [1]
    if case == "resized":  # and a resized device stays untracked
        assert t.cut(ans.epoch, ans.seq, MiB, 64 * MiB).lost


# -- on a real loop device -------------------------------------------------------------------------
@contextlib.contextmanager
def tracked_agent(dev: Path, directory: Path, **cfg: object) -> Iterator[AgentServer]:
    req = ServeRequest("127.0.0.1:0", (f"d={dev}",), write_token(directory), plaintext=True,
                       cpu_limit=100.0)  # in this process a CPU limit would count the test's own CPU time
    config = build_config(req)
    for k, v in cfg.items():
        setattr(config, k, v)
    server = AgentServer(config, RecordingReporter())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _digests(dev: Path, size: int, cs: int) -> list[str]:
    with open(dev, "rb") as fh:
        return [hashlib.sha256(fh.read(cs)).hexdigest() for _ in range(size // cs)]


def test_every_chunk_written_in_1000_bursts_is_reported(tmp_path: Path) -> None:
    ensure_tracefs()
    size, cs = 64 * MiB, MiB
    with loop_device(tmp_path / "d.img", size) as dev, tracked_agent(dev, tmp_path) as server:
        assert "d" in server.tracking.trackers, server.tracking.reasons
        disk = AgentDisk("127.0.0.1", server.address[1], "d", TOKEN.encode())
        try:
            cursor = disk.tracked_changes(cs, None).cursor
            assert cursor is not None
            before = _digests(dev, size, cs)
            rnd = random.Random(11)
            fd = os.open(dev, os.O_WRONLY)
            try:
                for _ in range(10):
                    for _ in range(100):
                        n = rnd.choice([1, 512, 3000, 4096, 65536, 300_000])
                        os.pwrite(fd, rnd.randbytes(n), rnd.randrange(0, size - n))
                    os.fsync(fd)
                    ans = disk.tracked_changes(cs, cursor)
                    after = _digests(dev, size, cs)
                    truly = {i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b}
                    assert ans.changed is not None, ans.reason
                    assert truly <= set(ans.changed), sorted(truly - set(ans.changed))
                    assert set(ans.changed) == truly  # and nothing else (no other writer on this device)
                    cursor, before = ans.cursor, after
            finally:
                os.close(fd)
            assert disk.wire_stats()["source_bytes_read"] == 0  # finding the changes read nothing
        finally:
            disk.close()


def test_lost_events_are_reported_then_tracking_resumes(tmp_path: Path) -> None:
    ensure_tracefs()
    size, cs = 64 * MiB, MiB
    with loop_device(tmp_path / "d.img", size) as dev, \
            tracked_agent(dev, tmp_path, track_buffer_kb=4, track_reader=False) as server:
        disk = AgentDisk("127.0.0.1", server.address[1], "d", TOKEN.encode())
        try:
            cursor = disk.tracked_changes(cs, None).cursor
            buf = mmap.mmap(-1, 4096)
            fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
            try:
                for i in range(3000):  # far more events than a 4 KiB buffer holds
                    os.pwritev(fd, [buf], (i * 4096) % size)
                ans = disk.tracked_changes(cs, cursor)
                assert ans.changed is None and "overflowed" in ans.reason
                os.pwritev(fd, [buf], 5 * MiB)
            finally:
                os.close(fd)
            again = disk.tracked_changes(cs, ans.cursor)
            assert again.changed == [5]
        finally:
            disk.close()


def test_missing_kernel_facilities_fail_instead_of_skipping_under_scmt_require_kernel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.agent.kernel.find_tracefs", lambda: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root: nothing to mount tracefs with
    monkeypatch.setenv("SCMT_REQUIRE_KERNEL", "1")
    with pytest.raises(pytest.fail.Exception, match="SCMT_REQUIRE_KERNEL=1 but no tracefs"):
        ensure_tracefs()
    with pytest.raises(pytest.fail.Exception, match="loop devices need root"), loop_device(Path("x"), 1):
        pass
    monkeypatch.delenv("SCMT_REQUIRE_KERNEL")
    with pytest.raises(pytest.skip.Exception):
        ensure_tracefs()
