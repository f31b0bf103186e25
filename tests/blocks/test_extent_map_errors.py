"""A source whose allocation map breaks the extent contract is a clear, permanent error, never an internal one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scmt_cli.blocks import plan
from scmt_cli.blocks.api import changed_copy, full_copy
from scmt_cli.blocks.engine import CopyOptions
from scmt_cli.cli.main import main
from scmt_cli.errors import TransportError
from scmt_cli.transports import base as transports
from scmt_cli.transports.base import Extent

from .memdisk import MemSource, MemTarget

CS = 1024 * 1024


class _BadMapSource(MemSource):
    """A MemSource that returns its extent list as given: no clipping, no sorting (a buggy transport)."""

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        return iter(self._extents)

    def describe(self) -> str:
        return "nbd://buggy/export"


BAD_MAPS = {
    "overlap": ([Extent(0, 2 * CS, "data"), Extent(CS, 3 * CS, "zero")], "offset 1048576", "overlap"),
    "unsorted": ([Extent(2 * CS, 2 * CS, "data"), Extent(0, 2 * CS, "data")], "offset 0", "out of order"),
    "past-end": ([Extent(0, 3 * CS, "zero"), Extent(3 * CS, 2 * CS, "data")], "offset 3145728", "outside the disk"),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPS))
def test_full_copy_of_a_bad_allocation_map_is_a_permanent_transport_error(case: str) -> None:
    exts, where, what = BAD_MAPS[case]
    src = _BadMapSource(bytes(4 * CS), exts)
    dst = MemTarget(4 * CS)
    with pytest.raises(TransportError) as ei:
        full_copy(src, dst, options=CopyOptions(chunk_size=CS))
    err = ei.value
    assert err.exit_code == 30 and not err.transient
    assert "nbd://buggy/export" in err.message and where in err.message and what in err.message
    assert dst.writes == [] and dst.zeroes == []


def test_changed_copy_with_a_change_list_past_the_end_names_the_source() -> None:
    src = _BadMapSource(bytes(4 * CS))
    with pytest.raises(TransportError) as ei:
        changed_copy(src, MemTarget(4 * CS), [Extent(3 * CS, 2 * CS)], options=CopyOptions(chunk_size=CS))
    assert "nbd://buggy/export" in ei.value.message and "change list" in ei.value.message
    assert "offset 3145728" in ei.value.message


def test_planners_still_raise_a_value_error_for_library_callers() -> None:
    with pytest.raises(ValueError, match="overlap"):
        list(plan.coalesce([Extent(0, 10), Extent(5, 10)]))
    with pytest.raises(plan.ExtentMapError) as ei:
        plan.plan_chunks([Extent(0, 3 * CS), Extent(3 * CS, 2 * CS)], 4 * CS, CS)
    assert ei.value.extent == Extent(3 * CS, 2 * CS)


def test_scmt_copy_with_a_bad_allocation_map_exits_30_not_70(tmp_path, monkeypatch, capsys) -> None:
    src = tmp_path / "s.img"
    src.write_bytes(bytes(4 * CS))
    real_open = transports.open_source

    def open_buggy(url: str, **kw: object) -> object:
        inner = real_open(url, **kw)
        inner.close()
        return _BadMapSource(bytes(4 * CS), BAD_MAPS["overlap"][0])

    monkeypatch.setattr(transports, "open_source", open_buggy)
    code = main(["--state", str(tmp_path / "st.db"), "copy", f"file://{src}", f"file://{tmp_path}/d.img",
                 "--chunk-size", "1MiB"])
    err = capsys.readouterr().err
    assert code == 30, err
    assert "nbd://buggy/export" in err and "overlap" in err and "internal" not in err.lower()
