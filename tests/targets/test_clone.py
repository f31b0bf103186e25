"""Point-in-time clones of disk files: reflink first, else a sparse copy after a free-space check."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from scmt_cli.errors import NoSpaceError
from scmt_cli.targets import clone

MIB = 1024 * 1024


def _sparse_disk(path: Path) -> bytes:
    """A 64 MiB file with data at 0, 10 MiB and its last MiB, holes elsewhere; returns its content."""
    with open(path, "wb") as f:
        f.truncate(64 * MIB)
        for at, fill in ((0, b"a"), (10 * MIB, b"b"), (63 * MIB, b"c")):
            f.seek(at)
            f.write(fill * MIB)
    return path.read_bytes()


def test_a_sparse_copy_keeps_data_and_holes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clone, "_reflink", lambda _s, _d: False)  # a file system without reflinks
    src = tmp_path / "disk0.raw"
    content = _sparse_disk(src)
    dst = tmp_path / "test" / "disk0.raw"
    assert clone.clone_files([(src, dst)]) == "sparse copy"
    assert dst.read_bytes() == content
    assert dst.stat().st_blocks * 512 <= src.stat().st_blocks * 512 + MIB  # the holes stayed holes
    assert not list(dst.parent.glob(".*partial"))


def test_a_real_ficlone_failure_falls_back_to_a_sparse_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def no_ficlone(fd: int, request: int, arg: int) -> int:
        calls.append(request)
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(clone.fcntl, "ioctl", no_ficlone)
    src = tmp_path / "disk0.raw"
    content = _sparse_disk(src)
    assert clone.clone_files([(src, tmp_path / "c.raw")]) == "sparse copy"
    assert calls == [clone.FICLONE]
    assert (tmp_path / "c.raw").read_bytes() == content


def test_a_reflink_needs_no_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_reflink(s: int, d: int) -> bool:  # what FICLONE does, as far as the bytes go
        clone._sparse_copy(s, d, os.fstat(s).st_size)
        return True

    monkeypatch.setattr(clone, "_reflink", fake_reflink)
    monkeypatch.setattr(clone, "free_bytes", lambda _p: 0)
    src = tmp_path / "disk0.raw"
    content = _sparse_disk(src)
    assert clone.clone_files([(src, tmp_path / "c.raw")]) == "reflink"
    assert (tmp_path / "c.raw").read_bytes() == content


def test_too_little_space_for_a_sparse_copy_is_refused_before_writing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clone, "_reflink", lambda _s, _d: False)
    import scmt_cli.errors

    monkeypatch.setattr(clone, "free_bytes", lambda _p: 2 * MIB)
    monkeypatch.setattr(scmt_cli.errors, "free_bytes", lambda _p: 2 * MIB)
    srcs = [tmp_path / "disk0.raw", tmp_path / "disk1.raw"]
    for s in srcs:
        _sparse_disk(s)
    out = tmp_path / "test"
    with pytest.raises(NoSpaceError) as err:
        clone.clone_files([(s, out / s.name) for s in srcs])
    assert err.value.exit_code == 30
    assert err.value.message.startswith(f"no space left on device: {out} (needs 6.0 MiB more, 2.0 MiB free)")
    assert "test failover" in (err.value.hint or "")
    assert not list(out.iterdir())  # nothing written, no partial file left


def test_a_file_system_that_fills_up_during_the_copy_is_exit_30(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clone, "_reflink", lambda _s, _d: False)

    def full(*_a: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(clone.os, "copy_file_range", full)
    src = tmp_path / "disk0.raw"
    _sparse_disk(src)
    dst = tmp_path / "test" / "disk0.raw"
    with pytest.raises(NoSpaceError, match=f"no space left on device: {dst}"):
        clone.clone_files([(src, dst)])
    assert not dst.exists() and not list(dst.parent.glob(".*partial"))
