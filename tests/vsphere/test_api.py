"""Change ids, area merging and the graceful-shutdown helper."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scmt_cli.transports.base import Extent
from scmt_cli.vsphere.api import (
    cbt_reset_reason,
    format_change_id,
    graceful_shutdown,
    merge_areas,
    parse_change_id,
)

UUID = bytes(range(0x52, 0x62))


def test_change_id_round_trip_and_reset_reasons() -> None:
    cid = format_change_id(UUID, 17)
    assert cid == "52 53 54 55 56 57 58 59-5a 5b 5c 5d 5e 5f 60 61/17"
    assert parse_change_id(cid) == ("52 53 54 55 56 57 58 59-5a 5b 5c 5d 5e 5f 60 61", 17)
    with pytest.raises(ValueError, match="not a CBT change id"):
        parse_change_id("*")
    newer = format_change_id(UUID, 20)
    assert cbt_reset_reason(cid, newer) is None
    assert cbt_reset_reason("*", newer) is None
    assert "newer" in (cbt_reset_reason(newer, cid) or "")
    assert "reset" in (cbt_reset_reason(cid, format_change_id(bytes(16), 20)) or "")
    assert "off" in (cbt_reset_reason(cid, None) or "")
    assert "resized" in (cbt_reset_reason(cid, newer, previous_capacity=1, capacity=2) or "")


@given(st.lists(st.tuples(st.integers(-100, 5000), st.integers(0, 800)), max_size=30), st.integers(1, 4096))
def test_merge_areas_covers_exactly_the_union(areas: list[tuple[int, int]], capacity: int) -> None:
    merged = merge_areas(areas, capacity)
    want = set()
    for off, n in areas:
        want.update(range(max(0, off), min(capacity, off + n)))
    got = set()
    for e in merged:
        assert e.kind == "data" and e.length > 0
        got.update(range(e.offset, e.end))
    assert got == want
    assert all(a.end < b.offset for a, b in zip(merged, merged[1:], strict=False))  # sorted, disjoint, not touching


def test_graceful_shutdown_paths() -> None:
    clock = [0.0]
    state = ["poweredOn"]
    log: list[str] = []

    def run(request_ok: bool, goes_down_at: float | None, timeout: float = 5.0) -> str:
        clock[0], state[0] = 0.0, "poweredOn"

        def sleep(s: float) -> None:
            clock[0] += max(s, 0.01)
            if goes_down_at is not None and clock[0] >= goes_down_at:
                state[0] = "poweredOff"

        return graceful_shutdown(
            vm="vm1", timeout=timeout, state=lambda: state[0], request=lambda: request_ok,
            hard_off=lambda: (log.append("hard"), state.__setitem__(0, "poweredOff")), warn=log.append,
            sleep=sleep, clock=lambda: clock[0],
        )  # fmt: skip

    assert run(True, 1.0) == "guest" and "hard" not in log
    assert run(True, None) == "hard" and any("did not shut down within 5s" in m for m in log)
    log.clear()
    assert run(False, None) == "hard" and any("VMware Tools are not running" in m for m in log)
    state[0] = "poweredOff"
    assert graceful_shutdown(vm="v", timeout=1, state=lambda: "poweredOff", request=lambda: True,
                             hard_off=lambda: None, warn=log.append, sleep=lambda s: None,
                             clock=lambda: 0.0) == "already_off"  # fmt: skip
    assert Extent(0, 1).end == 1
