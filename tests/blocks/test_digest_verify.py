"""Digests, zero detection, manifests and --verify."""

from __future__ import annotations

import json

import pytest

from scmt_cli.blocks.api import full_copy
from scmt_cli.blocks.digest import GIL_FREE_SCAN, Manifest, diff_indices, digest, is_zero, zero_runs
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.blocks.verify import verify_target
from scmt_cli.errors import InputError, MissingFileError, VerificationError

from .memdisk import MemSource, MemTarget

KiB = 1024


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_is_zero(kind):
    z = bytearray(300 * KiB)
    assert is_zero(kind(z))
    for pos in (0, 1, 150 * KiB, 300 * KiB - 1):
        b = bytearray(z)
        b[pos] = 1
        assert not is_zero(kind(b))
    b = bytearray(z)
    b[10] = 1
    assert is_zero(b, 11, 300 * KiB) and not is_zero(b, 0, 11)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_is_zero_of_a_whole_chunk_is_exact(kind):
    """Chunk-size ranges take the GIL-free memcmp path: every byte counts, at any offset of the buffer."""
    n = 4 * 1024 * KiB
    assert n >= GIL_FREE_SCAN
    z = bytearray(n + 8192)
    assert is_zero(kind(z)) and is_zero(kind(z), 3, n + 3)
    for pos in (0, 4095, 4096, n // 2, n - 2, n - 1):
        b = bytearray(z)
        b[5 + pos] = 0x80
        assert not is_zero(kind(b), 5, 5 + n), pos
        after = min(6 + pos, len(b) - GIL_FREE_SCAN)
        assert is_zero(kind(b), after, after + GIL_FREE_SCAN) == (after > 5 + pos)


def test_a_whole_chunk_zero_check_lets_other_threads_run():
    """A thread checking 4 MiB chunks for zeroes must not hold the GIL meanwhile (it serialised the readers).

    With a 60 s switch interval a thread only gets the GIL while the other one
    is inside a call that releases it: the checker counts how often the other
    thread ran during its calls (bytearray.startswith never let it).
    """
    import sys
    import threading
    import time

    chunk = bytearray(4 * 1024 * KiB)
    done = threading.Event()
    ran = [0]

    def other() -> None:
        while not done.is_set():
            ran[0] += 1
            time.sleep(0.0005)  # gives the GIL back at once, so the checker is never kept waiting

    old = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    t = threading.Thread(target=other)
    try:
        t.start()
        time.sleep(0.01)
        before = ran[0]
        for _ in range(400):
            assert is_zero(chunk)
        during = ran[0] - before
    finally:
        done.set()
        sys.setswitchinterval(old)
        t.join()
    assert during > 0


def test_zero_runs():
    b = bytearray(10 * KiB)
    b[4 * KiB] = 1
    assert list(zero_runs(b, 0, len(b), 2 * KiB)) == [(0, 4 * KiB, True), (4 * KiB, 6 * KiB, False),
                                                      (6 * KiB, 10 * KiB, True)]
    assert list(zero_runs(b, 4 * KiB, 4 * KiB, 2 * KiB)) == [(0, 2 * KiB, False), (2 * KiB, 4 * KiB, True)]


def test_digest_is_xxh3_128_hex():
    assert len(digest(b"abc")) == 32 and digest(b"abc") != digest(b"abd")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(format="x"), "format"),
        (lambda d: d.update(algorithm="md5"), "algorithm"),
        (lambda d: d.update(size=-1), "size"),
        (lambda d: d.update(chunk_size="4M"), "chunk_size"),
        (lambda d: d["chunks"].pop(), "chunks"),
        (lambda d: d["chunks"].__setitem__(1, "xyz"), "chunks[1]"),
        (lambda d: d.pop("target"), "target"),  # one format: a manifest names its target
        (lambda d: d.update(target=None), "target"),
    ],
)
def test_bad_manifest_names_the_field(tmp_path, mutate, field):
    m = Manifest(3 * 1024 * KiB, 1024 * KiB, ["0", "a" * 32, None], target="file:///t/disk.img")
    raw = m.to_dict()
    mutate(raw)
    p = tmp_path / "m.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=rf"{p}: {field.replace('[', '.').replace(']', '.')}"):
        Manifest.load(p)


def test_manifest_unreadable(tmp_path):
    with pytest.raises(MissingFileError, match="not found"):  # a file named on the command line: exit 2
        Manifest.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(InputError, match=r"bad.json:1:2: not valid JSON"):
        Manifest.load(tmp_path / "bad.json")


def test_verify_detects_a_flipped_byte():
    src = MemSource(bytes(range(256)) * 4096)
    dst = MemTarget(src.size)
    m = full_copy(src, dst, options=CopyOptions(chunk_size=64 * KiB)).manifest
    assert verify_target(dst, m) == len(m.chunks)
    dst.data[12345] ^= 1
    with pytest.raises(VerificationError, match=r"1 chunk\(s\).*chunk 0 \(offset 0\)"):
        verify_target(dst, m)


def test_verify_detects_data_in_a_zero_chunk():
    src = MemSource(bytes(256 * KiB))
    dst = MemTarget(src.size)
    m = full_copy(src, dst, options=CopyOptions(chunk_size=64 * KiB)).manifest
    assert set(m.chunks) == {"0"}
    dst.data[200 * KiB] = 9
    with pytest.raises(VerificationError, match="chunk 3"):
        verify_target(dst, m)


def test_diff_indices():
    a = Manifest(3 * KiB, KiB, ["0", "a" * 32, None])
    b = Manifest(3 * KiB, KiB, ["0", "b" * 32, None])
    assert diff_indices(a, b) == [1, 2]


def test_zero_runs_scans_only_where_data_can_be():
    b = bytearray(10 * KiB)
    b[4 * KiB] = 1
    b[9 * KiB] = 1  # outside the known ranges: taken as zero without a look (the engine zero-fills there)
    runs = list(zero_runs(b, 0, len(b), 2 * KiB, [(3 * KiB, 5 * KiB)]))
    assert runs == [(0, 4 * KiB, True), (4 * KiB, 6 * KiB, False), (6 * KiB, 10 * KiB, True)]
    assert zero_runs(b, 0, len(b), 2 * KiB, []) == [(0, 10 * KiB, True)]
