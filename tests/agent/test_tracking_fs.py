"""Kernel change tracking under a real file system: ext4 on a loop device, mounted and written while tracked."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.agent.disks import ServedDisk
from scmt_cli.agent.server import AgentServer
from scmt_cli.agent.service import ServeRequest, build_config
from scmt_cli.agent.transport import AgentDisk
from scmt_cli.events import RecordingReporter
from tests.agent.kernel import chunk_digests, ensure_tracefs, loop_device, mounted
from tests.agent.servers import TOKEN, write_token

MiB = 1024 * 1024


@contextlib.contextmanager
def tracked_agent(dev: Path, directory: Path) -> Iterator[AgentServer]:
    req = ServeRequest("127.0.0.1:0", (f"d={dev}",), write_token(directory), plaintext=True,
                       cpu_limit=100.0)  # in this process a CPU limit would count the test's own CPU time
    server = AgentServer(build_config(req), RecordingReporter())
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Writer:
    """Random file-system work in ``root``: create, overwrite in place, append, truncate, rename, delete."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root, self.rnd = root, random.Random(seed)
        self.files: list[Path] = []
        self.serial = 0

    def _data(self, n: int) -> bytes:
        return self.rnd.randbytes(n)

    def burst(self) -> None:
        rnd = self.rnd
        for _ in range(rnd.randint(1, 6)):
            op = rnd.choice(["create", "create", "overwrite", "overwrite", "append", "truncate", "rename",
                             "delete"]) if self.files else "create"
            if op == "create" and len(self.files) < 120:
                self.serial += 1
                sub = self.root / f"d{self.serial % 7}"
                sub.mkdir(exist_ok=True)
                path = sub / f"f{self.serial}"
                with open(path, "wb") as fh:
                    fh.write(self._data(rnd.choice([1, 700, 4096, 5000, 65536, 200_000])))
                    if rnd.random() < 0.3:
                        os.fsync(fh.fileno())
                self.files.append(path)
                continue
            if not self.files:
                continue
            path = rnd.choice(self.files)
            size = path.stat().st_size
            if op == "overwrite" and size:
                with open(path, "r+b") as fh:  # in place: the file's blocks are rewritten, not reallocated
                    off = rnd.randrange(size)
                    fh.seek(off)
                    fh.write(self._data(min(size - off, rnd.choice([1, 512, 4096, 30_000]))))
                    if rnd.random() < 0.5:
                        os.fsync(fh.fileno())
            elif op == "append" and size < 256 * 1024:
                with open(path, "ab") as fh:
                    fh.write(self._data(rnd.choice([10, 4096, 20_000])))
            elif op == "truncate":
                os.truncate(path, rnd.randrange(size + 1))
            elif op == "rename":
                new = path.with_name(path.name + "r")
                path.rename(new)
                self.files[self.files.index(path)] = new
            elif op == "delete":
                path.unlink()
                self.files.remove(path)
        if rnd.random() < 0.1:
            os.sync()


def test_a_mounted_file_system_written_in_1000_bursts_misses_no_change(tmp_path: Path) -> None:
    """Every chunk ext4 changes is reported, and a copy kept by reading only those chunks equals the disk.

    After each round the file system is synced and frozen, so the device holds what it will hold; the
    chunks whose digest changed must all be in the agent's report, and the chunks the agent then reads
    must hold the new bytes (a read served from a stale page cache would not).
    """
    ensure_tracefs()
    size, cs = 64 * MiB, MiB
    image = tmp_path / "d.img"
    with loop_device(image, size) as dev, mounted(dev, tmp_path / "mnt", options="discard") as mnt, \
            tracked_agent(dev, tmp_path) as server:
        assert "d" in server.tracking.trackers, server.tracking.reasons
        disk = AgentDisk("127.0.0.1", server.address[1], "d", TOKEN.encode())
        try:
            cursor = disk.tracked_changes(cs, None).cursor
            assert cursor is not None
            copy = bytearray(disk.read(0, size))  # the seed, read after the first cut
            writer = Writer(mnt, seed=11)
            before = chunk_digests(image, cs)
            missed: list[int] = []
            reported = bursts = 0
            for _ in range(20):
                for _ in range(50):
                    writer.burst()
                    bursts += 1
                os.sync()
                subprocess.run(["fsfreeze", "-f", str(mnt)], check=True)
                try:
                    ans = disk.tracked_changes(cs, cursor)
                    assert ans.changed is not None, ans.reason
                    for i in ans.changed:
                        copy[i * cs:(i + 1) * cs] = disk.read(i * cs, cs)
                    after = chunk_digests(image, cs)
                finally:
                    subprocess.run(["fsfreeze", "-u", str(mnt)], check=True)
                truly = {i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b}
                missed += sorted(truly - set(ans.changed))
                stale = [i for i in range(size // cs)
                         if hashlib.sha256(copy[i * cs:(i + 1) * cs]).hexdigest() != after[i]]
                assert not stale, f"chunks read through the agent differ from the disk: {stale}"
                reported += len(ans.changed)
                cursor, before = ans.cursor, after
            assert bursts == 1000 and not missed, f"changes the tracking missed: {missed}"
            assert reported > 20  # the bursts did change the disk
            # Finding the changes read nothing; sending them read only the reported chunks (+ the seed).
            assert disk.wire_stats()["source_bytes_read"] == size + reported * cs
        finally:
            disk.close()


@pytest.mark.parametrize("mode", ["direct", "drop-cache"])
def test_reads_of_a_mounted_device_see_what_the_file_system_wrote(tmp_path: Path, mode: str) -> None:
    """A block read once, then rewritten through a file, reads as the new bytes (O_DIRECT, or the fallback)."""
    image = tmp_path / "d.img"
    with loop_device(image, 32 * MiB) as dev, mounted(dev, tmp_path / "mnt") as mnt:
        path = mnt / "f"
        path.write_bytes(b"A" * 65536)
        os.sync()
        out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True, check=True).stdout
        first = next(ln for ln in out.splitlines() if ln.strip().startswith("0:"))
        offset = int(first.split(":")[2].split("..")[0]) * 4096  # the file's first block on the device
        disk = ServedDisk("d", dev)
        try:
            if mode == "drop-cache":
                disk._no_direct(disk.direct_fd)
            assert (disk.direct_fd >= 0) == (mode == "direct")
            assert disk.read(offset, 4096) == b"A" * 4096  # now in the device's page cache, if it is used
            with open(path, "r+b") as fh:
                fh.write(b"B" * 65536)
                os.fsync(fh.fileno())
            assert disk.read(offset + 100, 8) == b"B" * 8
        finally:
            disk.close()
