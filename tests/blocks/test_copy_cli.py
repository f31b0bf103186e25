"""`scmt copy` end to end: exit codes, incrementals, verify, and resume after kill -9 / SIGINT / SIGTERM."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scmt_cli.cli.main import main
from scmt_cli.errors import SizeMismatchError, TransportError
from scmt_cli.events import NullReporter
from scmt_cli.services.copy import CopyRequest, run_copy
from scmt_cli.state.store import StateStore
from scmt_cli.transports.wrappers import Fault, FaultPlan, FaultySource, FaultyTarget, SourceProxy

MiB = 1024 * 1024


def make_image(path: Path, size: int, seed: int, density: float = 0.5) -> bytes:
    """A sparse image: random 1 MiB pieces are data (random or repetitive), the rest holes."""
    rnd = random.Random(seed)
    with open(path, "wb") as fh:
        fh.truncate(size)
        for off in range(0, size, MiB):
            if rnd.random() < density:
                fh.seek(off + rnd.randrange(0, 4096))
                piece = rnd.randbytes(MiB // 2) if rnd.random() < 0.5 else b"scmt" * (MiB // 8)
                fh.write(piece[: size - fh.tell()])
    return path.read_bytes()


def scmt(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def env(tmp_path):
    src = tmp_path / "src.img"
    make_image(src, 16 * MiB, 1)
    return tmp_path, src, tmp_path / "dst.img", str(tmp_path / "state.db")


def test_full_copy_json_manifest_verify(env, capsys):
    d, src, dst, state = env
    code, out, err = scmt(capsys, "--state", state, "--json", "copy", f"file://{src}", f"file://{dst}",
                          "--manifest", str(d / "m.json"), "--verify", "--chunk-size", "1MiB")
    assert code == 0, err
    doc = json.loads(out)
    assert dst.read_bytes() == src.read_bytes()
    assert doc["mode"] == "full" and doc["verified"] is True
    st = doc["stats"]
    assert st["chunks_planned"] == 16 and st["verified_chunks"] == 16 and st["bytes_read"] > 0
    assert st["bytes_written"] + st["bytes_skipped"] == 16 * MiB
    assert os.stat(dst).st_blocks * 512 < 16 * MiB  # holes stayed holes
    m = json.loads((d / "m.json").read_text())
    assert m["algorithm"] == "xxh3_128" and len(m["chunks"]) == 16


def test_human_summary(env, capsys):
    d, src, dst, state = env
    code, out, _ = scmt(capsys, "--state", state, "copy", f"file://{src}", f"file://{dst}")
    assert code == 0
    assert "copied file://" in out and "written" in out and "zero/skipped" in out and "/s)" in out


def test_incremental_copies_only_changed_chunks(env, capsys):
    d, src, dst, state = env
    assert scmt(capsys, "--state", state, "copy", f"file://{src}", f"file://{dst}", "--chunk-size", "1MiB",
                "--manifest", str(d / "m1.json"))[0] == 0
    with open(src, "r+b") as fh:
        for off in (3 * MiB + 17, 9 * MiB + 4000):
            fh.seek(off)
            fh.write(b"CHANGED")
    code, out, err = scmt(capsys, "--state", state, "--json", "copy", f"file://{src}", f"file://{dst}",
                          "--since", str(d / "m1.json"), "--manifest", str(d / "m2.json"), "--verify")
    assert code == 0, err
    st = json.loads(out)["stats"]
    assert st["chunks_written"] == 2 and st["bytes_written"] == 2 * MiB
    assert dst.read_bytes() == src.read_bytes()
    m1, m2 = (json.loads((d / n).read_text())["chunks"] for n in ("m1.json", "m2.json"))
    assert [i for i in range(16) if m1[i] != m2[i]] == [3, 9]


def test_verify_detects_flipped_byte_exit_31(env, capsys):
    d, src, dst, state = env
    assert scmt(capsys, "--state", state, "copy", f"file://{src}", f"file://{dst}", "--manifest",
                str(d / "m.json"))[0] == 0
    data = bytearray(dst.read_bytes())
    first_data = next(i for i, b in enumerate(data) if b)
    with open(dst, "r+b") as fh:
        fh.seek(first_data)
        fh.write(bytes([data[first_data] ^ 0x01]))
    code, _, err = scmt(capsys, "--state", state, "copy", f"file://{src}", f"file://{dst}", "--since",
                        str(d / "m.json"), "--verify")
    assert code == 31
    assert "verification failed: 1 chunk(s)" in err


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["gopher://x/y", "file:///tmp/x"], 2, "unknown URL scheme"),
        (["not a url", "file:///tmp/x"], 10, "does not exist"),  # a bare path is a file
        (["file:///nonexistent/src.img", "{d}/o.img"], 10, "does not exist"),
        (["{src}", "{d}/o.img", "--chunk-size", "3KiB"], 2, "chunk size"),
        (["{src}", "{d}/o.img", "--chunk-size", "lots"], 2, ""),
        (["{src}", "{d}/o.img", "--bandwidth", "fast"], 2, ""),
        (["{src}", "{d}/o.img", "--since", "{d}/missing.json"], 2, "manifest not found"),
        (["{src}", "{d}/small.img"], 32, "smaller than the source"),
        (["{src}", "{src}"], 2, "same disk"),
        (["{src}", "{d}/o.img", "--resume", "--chunk-size", "2MiB"], 0, ""),
    ],
)
def test_bad_input_gives_one_clear_line(env, capsys, args, code, text):
    d, src, dst, state = env
    with open(d / "small.img", "wb") as fh:
        fh.truncate(MiB)
    argv = [a.format(d=d, src=src) for a in args]
    argv = [a if "://" in a or a.startswith("-") or not a.startswith("/") else f"file://{a}" for a in argv]
    got, out, err = scmt(capsys, "--state", state, "copy", *argv)
    assert got == code, err
    if code:
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and text in lines[0]
        assert "Traceback" not in err


def test_read_only_target_exit_33(env, capsys):
    d, src, dst, state = env
    dst.write_bytes(bytes(16 * MiB))
    if subprocess.run(["chattr", "+i", str(dst)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not available")
    try:
        code, _, err = scmt(capsys, "--state", state, "copy", f"file://{src}", f"file://{dst}")
    finally:
        subprocess.run(["chattr", "-i", str(dst)], capture_output=True)
    assert code == 33 and "not writable" in err


class _Shrinking(SourceProxy):
    """Truncates the source file after the first read: the copy must fail with a size mismatch."""

    def __init__(self, inner, path):
        super().__init__(inner)
        self.path, self.n = path, 0

    def readinto(self, offset, buf):
        self.n += 1
        if self.n == 2:
            os.truncate(self.path, MiB)
        super().readinto(offset, buf)


def test_source_that_shrinks_mid_copy_is_exit_32(tmp_path):
    src = tmp_path / "s.img"
    src.write_bytes(os.urandom(8 * MiB))
    req = CopyRequest(f"file://{src}", f"file://{tmp_path}/d.img", chunk_size=MiB, in_flight=1)
    with pytest.raises(SizeMismatchError) as ei:
        run_copy(req, NullReporter(), None, wrap_source=lambda s: _Shrinking(s, src))
    assert ei.value.exit_code == 32 and "shrink" in ei.value.message


def test_permanent_error_fails_30_then_resume_completes(env):
    d, src, dst, state = env
    plan = FaultPlan([Fault(op, start=10 * MiB, end=11 * MiB, times=-1, transient=False)
                      for op in ("write", "write_zeroes")])
    req = CopyRequest(f"file://{src}", f"file://{dst}", chunk_size=MiB, in_flight=2, checkpoint_seconds=0.0)
    dst.write_bytes(b"\xee" * (16 * MiB))  # an existing, dirty target: every chunk is written or zeroed
    with StateStore.open(state) as store:
        with pytest.raises(TransportError) as ei:
            run_copy(req, NullReporter(), store, wrap_target=lambda t: FaultyTarget(t, plan))
        assert ei.value.exit_code == 30
        assert store.checkpoint_keys("copy/")
        res = run_copy(CopyRequest(f"file://{src}", f"file://{dst}", chunk_size=MiB, resume=True),
                       NullReporter(), store)
        assert store.checkpoint_keys("copy/") == []
    assert res.resumed and res.stats.chunks_resumed >= 5
    assert dst.read_bytes() == src.read_bytes()


def _spawn(state, src, dst, *extra):
    cmd = [sys.executable, "-m", "scmt_cli", "--state", state, "copy", f"file://{src}", f"file://{dst}",
           "--chunk-size", "1MiB", "--checkpoint-seconds", "0.2", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_progress(dst: Path, proc, minimum: int = 3 * MiB, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if dst.exists() and os.stat(dst).st_blocks * 512 >= minimum:
            time.sleep(0.5)  # let a checkpoint land after that data
            return
        if proc.poll() is not None:
            pytest.fail(f"copy ended early: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("copy made no progress")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGKILL, -9), (signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_resume_after_signal_is_bit_identical(tmp_path, sig, code):
    src, dst, state = tmp_path / "src.img", tmp_path / "dst.img", str(tmp_path / "st.db")
    data = make_image(src, 24 * MiB, 7, density=0.9)
    proc = _spawn(state, src, dst, "--bandwidth", "4MiB/s")
    try:
        _wait_for_progress(dst, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    if sig != signal.SIGKILL:
        assert b"checkpointed" in err
    assert dst.read_bytes() != data, "the copy finished before the signal; the test proves nothing"
    again = subprocess.run([sys.executable, "-m", "scmt_cli", "--state", state, "--json", "copy", f"file://{src}",
                            f"file://{dst}", "--chunk-size", "1MiB", "--resume", "--verify"],
                           capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["resumed"] is True and doc["stats"]["chunks_resumed"] >= 1
    assert dst.read_bytes() == data


def test_resume_after_target_was_deleted_starts_over(env):
    d, src, dst, state = env
    plan = FaultPlan([Fault("read", start=8 * MiB, end=16 * MiB, times=-1, transient=False)])
    with StateStore.open(state) as store:
        with pytest.raises(TransportError):
            run_copy(CopyRequest(f"file://{src}", f"file://{dst}", chunk_size=MiB, in_flight=1,
                                 checkpoint_seconds=0.0), NullReporter(), store,
                     wrap_source=lambda s: FaultySource(s, plan))
        (key,) = store.checkpoint_keys("copy/")
        assert store.get_checkpoint(key)["watermark"] > 0
        dst.unlink()
        res = run_copy(CopyRequest(f"file://{src}", f"file://{dst}", chunk_size=MiB, resume=True),
                       NullReporter(), store)
    assert res.exit_code == 1 and "restarted" in res.warnings[0] and res.stats.chunks_resumed == 0
    assert dst.read_bytes() == src.read_bytes()


def test_resume_with_other_chunk_size_is_refused_42(env, capsys):
    d, src, dst, state = env
    plan = FaultPlan([Fault("read", start=8 * MiB, end=16 * MiB, times=-1, transient=False)])
    with StateStore.open(state) as store, pytest.raises(TransportError):
        run_copy(CopyRequest(f"file://{src}", f"file://{dst}", chunk_size=MiB, in_flight=1, checkpoint_seconds=0.0),
                 NullReporter(), store, wrap_source=lambda s: FaultySource(s, plan))
    code, _, err = scmt(capsys, "--state", state, "copy", f"file://{src}", f"file://{dst}", "--resume",
                        "--chunk-size", "2MiB")
    assert code == 42 and "different parameters (chunk_size: checkpoint 1048576 vs now 2097152" in err
    code, out, err = scmt(capsys, "--state", state, "--json", "copy", f"file://{src}", f"file://{dst}", "--resume",
                          "--chunk-size", "1MiB")
    assert code == 0, err
    assert json.loads(out)["resumed"] is True and dst.read_bytes() == src.read_bytes()


def test_transient_faults_are_retried_by_the_service(env):
    d, src, dst, state = env
    plan = FaultPlan([Fault("write", times=2), Fault("read", times=1, after=2)])
    res = run_copy(CopyRequest(f"file://{src}", f"file://{dst}", chunk_size=MiB), NullReporter(), None,
                   wrap_source=lambda s: FaultySource(s, plan), wrap_target=lambda t: FaultyTarget(t, plan))
    assert res.stats.extra["retries"] == 3
    assert dst.read_bytes() == src.read_bytes()
