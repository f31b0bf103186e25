"""Fixtures: a fake vCenter estate from the example lab, and a connected client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.events import RecordingReporter
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.lab.vcenter import FakeVCenter, start_estate, stop_estate
from scmt_cli.vsphere.settings import ConnectionSettings

EXAMPLE_LAB = Path(__file__).resolve().parents[2] / "examples" / "lab.yaml"


@pytest.fixture
def estate(tmp_path: Path) -> Iterator[FakeEstate]:
    est = start_estate(EXAMPLE_LAB, tmp_path / "vc")
    try:
        yield est
    finally:
        stop_estate(est)


def fake_settings(estate: FakeEstate, **over: object) -> ConnectionSettings:
    host, port = estate.base_url.split("://")[1].rsplit(":", 1)
    kw: dict[str, object] = {
        "host": host,
        "port": int(port),
        "user": estate.lab.user,
        "password": estate.lab.password,
        "thumbprint": estate.http.thumbprint,
    }
    kw.update(over)
    return ConnectionSettings(**kw)  # type: ignore[arg-type]


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


@pytest.fixture
def vc(estate: FakeEstate, reporter: RecordingReporter) -> Iterator[FakeVCenter]:
    client = FakeVCenter(estate, fake_settings(estate), reporter)
    client.connect()
    try:
        yield client
    finally:
        client.close()
