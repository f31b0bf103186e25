"""A resumed copy is bound to its source (issue 15.2), and --verify compares with the source as it is now."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scmt_cli.blocks.digest import ZERO, digest
from scmt_cli.blocks.sourcecheck import SAMPLE_CHUNKS, check_identity, sample_indices, sample_unless_live
from scmt_cli.blocks.verify import verify_copy
from scmt_cli.errors import SourceChangedError, TransportError, VerificationError
from scmt_cli.events import NullReporter
from scmt_cli.services.copy import CopyRequest, run_copy
from scmt_cli.state.store import StateStore
from scmt_cli.transports.base import Identity
from scmt_cli.transports.wrappers import Fault, FaultPlan, FaultySource, SourceProxy, TargetProxy
from tests.blocks.memdisk import MemSource, MemTarget
from tests.blocks.test_copy_cli import _spawn, _wait_for_progress, make_image

MiB = 1024 * 1024


def _interrupted_copy(store: StateStore, src: Path, dst: Path, url: str | None = None) -> None:
    """A copy that fails for good at 8 MiB, leaving a checkpoint with a watermark past 0."""
    plan = FaultPlan([Fault("read", start=8 * MiB, end=16 * MiB, times=-1, transient=False)])
    with pytest.raises(TransportError):
        run_copy(CopyRequest(url or f"file://{src}", f"file://{dst}", chunk_size=MiB, in_flight=1, retries=1,
                             checkpoint_seconds=0.0), NullReporter(), store,
                 wrap_source=lambda s: FaultySource(s, plan))
    (key,) = store.checkpoint_keys("copy/")
    assert store.get_checkpoint(key)["watermark"] >= 4


def test_resume_refuses_a_source_replaced_by_another_file_of_the_same_size(tmp_path: Path) -> None:
    """The issue's reproduction: kill -9 after some checkpoints, SRC replaced, --resume --verify."""
    src, dst, state = tmp_path / "src.img", tmp_path / "dst.img", str(tmp_path / "st.db")
    make_image(src, 24 * MiB, 7, density=0.9)
    proc = _spawn(state, src, dst, "--bandwidth", "4MiB/s")
    try:
        _wait_for_progress(dst, proc)
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    other = tmp_path / "other.img"
    new = make_image(other, 24 * MiB, 8, density=0.9)
    shutil.move(str(other), str(src))  # another file, same size, at the source's path
    before = dst.read_bytes()
    argv = [sys.executable, "-m", "scmt_cli", "--state", state, "copy", f"file://{src}", f"file://{dst}",
            "--chunk-size", "1MiB"]
    again = subprocess.run([*argv, "--resume", "--verify"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 34, again.stderr
    lines = again.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: cannot resume: file://{src} is not the source the interrupted copy read"), lines
    assert "ino " in lines[0] and lines[1] == ("hint: run the same command without --resume to copy the source "
                                               "again from the beginning")
    assert "Traceback" not in again.stderr and dst.read_bytes() == before  # refused before writing anything
    fresh = subprocess.run([*argv, "--verify", "--json"], capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout)["resumed"] is False and dst.read_bytes() == new


def test_resume_refuses_a_source_rewritten_in_place_with_its_mtime_put_back(tmp_path: Path) -> None:
    """Same inode, size and mtime: only the re-read sample can tell, and it does."""
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    make_image(src, 16 * MiB, 1, density=1.0)
    with StateStore.open(tmp_path / "st.db") as store:
        _interrupted_copy(store, src, dst)
        st = os.stat(src)
        with open(src, "r+b") as fh:  # overwrite in place: the inode stays
            fh.write(random.Random(2).randbytes(16 * MiB))
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.stat(src).st_ino == st.st_ino and os.stat(src).st_mtime_ns == st.st_mtime_ns
        with pytest.raises(SourceChangedError) as info:
            run_copy(CopyRequest(f"file://{src}", f"file://{dst}", chunk_size=MiB, resume=True), NullReporter(), store)
    assert info.value.exit_code == 34 and "changed since the interrupted copy read it (chunk " in info.value.message


def test_resume_of_an_nbd_export_that_now_serves_other_bytes_is_refused(tmp_path: Path) -> None:
    """An NBD export proves only its size: the sample finds the other content."""
    from tests.nbd.servers import Launcher

    image = tmp_path / "export.img"
    make_image(image, 16 * MiB, 3, density=1.0)
    launcher = Launcher(tmp_path)
    try:
        url = launcher.nbdkit("file", str(image), readonly=True).url
        dst = tmp_path / "dst.img"
        with StateStore.open(tmp_path / "st.db") as store:
            _interrupted_copy(store, image, dst, url)
            image.write_bytes(random.Random(9).randbytes(16 * MiB))  # the server now serves other bytes
            with pytest.raises(SourceChangedError, match="changed since the interrupted copy read it"):
                run_copy(CopyRequest(url, f"file://{dst}", chunk_size=MiB, resume=True), NullReporter(), store)
    finally:
        launcher.stop_all()


def test_resume_of_an_unchanged_source_continues(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    data = make_image(src, 16 * MiB, 4, density=1.0)
    with StateStore.open(tmp_path / "st.db") as store:
        _interrupted_copy(store, src, dst)
        res = run_copy(CopyRequest(f"file://{src}", f"file://{dst}", chunk_size=MiB, resume=True, verify=True),
                       NullReporter(), store)
    assert res.resumed and res.stats.chunks_resumed >= 4 and res.verified
    assert dst.read_bytes() == data


def test_agent_disk_identity_names_the_device_it_serves(tmp_path: Path) -> None:
    """What an agent can prove: the device (here a file: device and inode) behind the disk name."""
    from scmt_cli.transports import base as transports
    from tests.agent.servers import running_agent

    image = tmp_path / "d.img"
    image.write_bytes(os.urandom(2 * MiB))
    st = os.stat(image)
    with running_agent({"disk0": image}, tmp_path) as agent:
        disk = transports.open_source(agent.url("disk0"))
        try:
            ident = disk.identity()
        finally:
            disk.close()
    assert ident.stable is False
    assert ident.to_json() == {"disk": "disk0", "size": 2 * MiB, "dev": st.st_dev, "ino": st.st_ino}


class _Ident(SourceProxy):
    def __init__(self, inner: MemSource, ident: Identity | None) -> None:
        super().__init__(inner)
        self._ident = ident

    def identity(self) -> Identity | None:
        return self._ident


def _digests(data: bytes, cs: int) -> dict[int, str | None]:
    out: dict[int, str | None] = {}
    for i in range(len(data) // cs):
        piece = data[i * cs:(i + 1) * cs]
        out[i] = ZERO if not any(piece) else digest(piece)
    return out


def test_a_live_source_is_checked_by_identity_only() -> None:
    data = bytearray(os.urandom(8 * 64 * 1024))
    digests = _digests(bytes(data), 64 * 1024)
    data[0] ^= 1  # a live disk changes: no sample is read
    live = _Ident(MemSource(data), Identity({"disk": "sda", "rdev": 2048}, stable=False))
    current = check_identity(live, {"disk": "sda", "rdev": 2048})
    assert sample_unless_live(live, current, 8, digests, 64 * 1024) == 0
    with pytest.raises(SourceChangedError, match=r"rdev 2048 -> 2049"):
        check_identity(_Ident(MemSource(data), Identity({"disk": "sda", "rdev": 2049}, stable=False)),
                       {"disk": "sda", "rdev": 2048})
    stable = _Ident(MemSource(data), Identity({"disk": "sda", "rdev": 2048}, stable=True))
    with pytest.raises(SourceChangedError):  # the same change on a disk not expected to change is found
        sample_unless_live(stable, check_identity(stable, {"disk": "sda", "rdev": 2048}), 8, digests, 64 * 1024)


def test_sample_spans_the_copied_range_and_is_bounded() -> None:
    digests: dict[int, str | None] = {i: "0" for i in range(1000)}
    digests[5] = None  # an unplanned chunk has nothing to compare
    for seed in range(20):
        picked = sample_indices(digests, 900, rng=random.Random(seed))
        assert len(picked) == SAMPLE_CHUNKS and picked[0] == 0 and picked[-1] == 899
        assert all(i < 900 and i != 5 for i in picked)
    assert sample_indices({0: "0", 1: None, 2: "0"}, 3) == [0, 2]


class _ChangeSourceOnFirstRead(TargetProxy):
    """Before the first read-back of the target (that is, when --verify starts), change the source file."""

    def __init__(self, inner, path: Path) -> None:
        super().__init__(inner)
        self.path, self.done = path, False

    def read(self, offset: int, length: int) -> bytes:
        if not self.done:
            self.done = True
            with open(self.path, "r+b") as fh:
                fh.seek(12 * MiB + 5)
                fh.write(b"changed after the copy")
        return self.inner.read(offset, length)


def test_verify_compares_with_the_source_as_it_is_now(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    make_image(src, 16 * MiB, 5, density=1.0)
    req = CopyRequest(f"file://{src}", f"file://{dst}", chunk_size=MiB, in_flight=1, verify=True)
    with pytest.raises(VerificationError) as info:
        run_copy(req, NullReporter(), None, wrap_target=lambda t: _ChangeSourceOnFirstRead(t, src))
    assert info.value.exit_code == 31
    assert f"1 chunk(s) of file://{dst} differ from file://{src} as it is now: chunk 12 " in info.value.message


def test_verify_copy_reads_both_ends() -> None:
    cs = 64 * 1024
    data = bytearray(os.urandom(4 * cs)) + bytearray(2 * cs)
    src, dst = MemSource(data), MemTarget(len(data))
    dst.data[:] = data
    assert verify_copy(src, dst, cs) == 6
    dst.data[5 * cs + 7] = 1  # data where the source reads as zeroes
    with pytest.raises(VerificationError, match="chunk 5 "):
        verify_copy(src, dst, cs)
    dst.data[5 * cs + 7] = 0
    src.data[cs] ^= 0xFF  # the source changed: the target is no longer a copy of it
    with pytest.raises(VerificationError, match="chunk 1 "):
        verify_copy(src, dst, cs)


def test_verify_rereads_the_source_under_the_same_bandwidth_limit(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--verify re-reads every data chunk of the source: a throttled copy must not be followed by an
    unthrottled read of the same datastore."""
    import scmt_cli.services.copy as copy_service
    from scmt_cli.transports.wrappers import ThrottledSource

    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    src.write_bytes(random.Random(3).randbytes(2 * MiB))
    seen: list[object] = []
    real = copy_service.verify_copy

    def spy(source: object, *args: object, **kw: object) -> int:
        seen.append(source)
        return real(source, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(copy_service, "verify_copy", spy)
    out = run_copy(CopyRequest(f"file://{src}", f"file://{dst}", bandwidth=1e9, verify=True), NullReporter(), None)
    assert out.verified and len(seen) == 1 and isinstance(seen[0], ThrottledSource)
