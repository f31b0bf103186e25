"""Extent planning: coalesce and split cover the disk exactly, without overlap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scmt_cli.blocks.plan import (
    Chunk,
    check_chunk_size,
    chunk_count,
    coalesce,
    iter_plan,
    plan_changed,
    plan_chunks,
    validate_extents,
)
from scmt_cli.errors import UsageError
from scmt_cli.transports.base import Extent

KiB = 1024


@st.composite
def extent_maps(draw):
    """A random extent map covering [0, size) exactly; returns (size, extents)."""
    lengths = draw(st.lists(st.integers(1, 300 * KiB), min_size=0, max_size=30))
    kinds = draw(st.lists(st.sampled_from(["data", "zero", "hole"]), min_size=len(lengths), max_size=len(lengths)))
    exts, pos = [], 0
    for n, k in zip(lengths, kinds, strict=True):
        exts.append(Extent(pos, n, k))
        pos += n
    return pos, exts


def _data_bytes(exts):
    out = set()
    for e in exts:
        if e.kind == "data":
            out.update(range(e.offset, e.end))
    return out


@settings(max_examples=150, deadline=None)
@given(extent_maps())
def test_coalesce_preserves_coverage_and_merges(m):
    size, exts = m
    merged = list(coalesce(exts))
    validate_extents(merged, 0, size)
    for a, b in zip(merged, merged[1:], strict=False):
        assert a.kind != b.kind, "adjacent extents of one class must be merged"
    assert _data_bytes(merged) == _data_bytes(exts)


@settings(max_examples=150, deadline=None)
@given(extent_maps(), st.sampled_from([64 * KiB, 128 * KiB, 256 * KiB]))
def test_plan_covers_every_byte_once_and_never_drops_data(m, cs):
    size, exts = m
    plan = plan_chunks(exts, size, cs)
    assert len(plan) == chunk_count(size, cs)
    pos = 0
    for i, c in enumerate(plan):
        assert c.index == i and c.offset == pos == i * cs
        assert 0 < c.length <= cs
        pos = c.end
    assert pos == size
    data = _data_bytes(exts)
    for c in plan:
        touches = any(b in data for b in range(c.offset, c.end, 4 * KiB)) or any(
            e.kind == "data" and e.offset < c.end and c.offset < e.end for e in exts
        )
        assert (c.kind == "data") == touches
        if c.ranges is not None:  # the ranges to read hold every data byte of the chunk
            assert c.kind == "data"
            assert all(0 <= a < b <= c.length for a, b in c.ranges)
            assert all(x[1] < y[0] for x, y in zip(c.ranges, c.ranges[1:], strict=False))
            for e in exts:
                if e.kind == "data":
                    lo, hi = max(e.offset, c.offset) - c.offset, min(e.end, c.end) - c.offset
                    if lo < hi:
                        assert any(a <= lo and hi <= b for a, b in c.ranges) or sum(
                            max(0, min(b, hi) - max(a, lo)) for a, b in c.ranges) == hi - lo


@settings(max_examples=100, deadline=None)
@given(extent_maps(), st.data())
def test_plan_changed_only_touched_chunks(m, data):
    size, exts = m
    if not exts:
        return
    changed = data.draw(st.lists(st.sampled_from(exts), max_size=5, unique=True))
    cs = 64 * KiB
    plan = plan_changed(changed, size, cs)
    idx = [c.index for c in plan]
    assert idx == sorted(set(idx))
    want = {i for e in changed for i in range(e.offset // cs, (e.end - 1) // cs + 1)}
    assert set(idx) == want
    for c in plan:
        if c.kind == "zero":  # only when zero extents cover the whole chunk
            assert not any(e.kind == "data" and e.offset < c.end and c.offset < e.end for e in changed)


def test_plan_changed_partial_zero_chunk_is_read():
    plan = plan_changed([Extent(0, 1000, "zero")], 10 * 64 * KiB, 64 * KiB)
    assert plan == [Chunk(0, 0, 64 * KiB, "data")]
    plan = plan_changed([Extent(0, 64 * KiB, "hole")], 10 * 64 * KiB, 64 * KiB)
    assert plan == [Chunk(0, 0, 64 * KiB, "zero")]
    with pytest.raises(ValueError, match="outside"):
        plan_changed([Extent(0, 11 * 64 * KiB)], 10 * 64 * KiB, 64 * KiB)


def test_coalesce_rejects_overlap():
    with pytest.raises(ValueError, match="overlap"):
        list(coalesce([Extent(0, 10), Extent(5, 10)]))


@pytest.mark.parametrize("bad", [0, 512 * KiB, 9 * 1024 * KiB, 1024 * KiB + 4096])
def test_chunk_size_limits(bad):
    with pytest.raises(UsageError, match="chunk size"):
        check_chunk_size(bad)
    assert check_chunk_size(4 * 1024 * KiB) == 4 * 1024 * KiB


def test_plan_changed_overlapping_zero_extents():
    cs = 64 * KiB
    full = plan_changed([Extent(0, 40 * KiB, "zero"), Extent(30 * KiB, 34 * KiB, "hole")], 4 * cs, cs)
    assert full == [Chunk(0, 0, cs, "zero")]
    part = plan_changed([Extent(30 * KiB, 20 * KiB, "zero"), Extent(0, 40 * KiB, "zero")], 4 * cs, cs)
    assert part == [Chunk(0, 0, cs, "data")]
    span = plan_changed([Extent(cs // 2, 2 * cs, "hole")], 4 * cs, cs)
    assert [(c.index, c.kind) for c in span] == [(0, "data"), (1, "zero"), (2, "data")]


def _reference_plan(extents, size, cs):
    """The plan computed from the whole map at once (what the streamed planner must equal)."""
    from scmt_cli.blocks.plan import READ_MERGE_GAP

    ranges, exact = {}, {}
    for ext in coalesce(extents):
        if ext.kind != "data":
            continue
        for i in range(ext.offset // cs, (ext.end - 1) // cs + 1):
            start, end = max(ext.offset, i * cs) - i * cs, min(ext.end, (i + 1) * cs, size) - i * cs
            exact.setdefault(i, []).append((start, end))
            lst = ranges.setdefault(i, [])
            if lst and start - lst[-1][1] < READ_MERGE_GAP:
                lst[-1] = (lst[-1][0], end)
            else:
                lst.append((start, end))
    out = []
    for i in range(chunk_count(size, cs)):
        off, length = i * cs, min(cs, size - i * cs)
        if i not in ranges:
            out.append(Chunk(i, off, length, "zero"))
        else:
            r, e = ranges[i], exact[i]
            out.append(Chunk(i, off, length, "data", None if r == [(0, length)] else tuple(r),
                             None if e == r else tuple(e)))
    return out


@settings(max_examples=200, deadline=None)
@given(extent_maps(), st.sampled_from([64 * KiB, 128 * KiB, 256 * KiB, 1024 * KiB]))
def test_streamed_plan_equals_the_plan_of_the_whole_map(m, cs):
    size, exts = m
    got = list(iter_plan(iter(exts), size, cs))
    want = _reference_plan(exts, size, cs)
    assert got == want
    assert [c.allocated for c in got] == [c.allocated for c in want]  # not part of ==


@settings(max_examples=150, deadline=None)
@given(extent_maps(), st.sampled_from([64 * KiB, 128 * KiB]))
def test_streamed_plan_yields_each_chunk_once_the_map_reaches_its_end(m, cs):
    """Chunk i comes out before any extent past the one that reaches the end of chunk i is asked for."""
    size, exts = m
    pulled = 0

    def feed():
        nonlocal pulled
        for e in exts:
            pulled += 1
            yield e

    for c in iter_plan(feed(), size, cs):
        # the first extent that reaches the chunk's end (or the disk's): the planner needs nothing after it
        need = next((k + 1 for k, e in enumerate(exts) if e.end >= min(c.end, size)), len(exts))
        assert pulled <= need, f"chunk {c.index} waited for extent {pulled} (needed only {need})"
