"""Fixtures that start real NBD servers (see ``servers.py``) and stop them by pid at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nbd.servers import Launcher


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop_all()
