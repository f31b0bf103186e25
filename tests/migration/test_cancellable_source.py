"""Ctrl-C reaches the copy's worker threads on the zero-copy path too."""

from __future__ import annotations

import pytest

from scmt_cli.services.migration.sync import _CancellableSource
from tests.blocks.memdisk import MemSource


class _Cancelled(Exception):
    pass


def test_the_cancel_flag_is_checked_before_readinto_and_read() -> None:
    src = MemSource(bytes(range(256)) * 16)
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 1:
            raise _Cancelled

    wrapped = _CancellableSource(src, check)
    buf = bytearray(16)
    wrapped.readinto(0, memoryview(buf))  # the engine's path when the source has readinto
    assert bytes(buf) == bytes(range(16))
    with pytest.raises(_Cancelled):
        wrapped.readinto(16, memoryview(buf))
    with pytest.raises(_Cancelled):
        wrapped.read(0, 4)
