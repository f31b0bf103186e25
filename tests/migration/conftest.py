"""Fixtures: the demo lab on an in-process fake vCenter, its plan, a state store, helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.events import RecordingReporter
from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.lab.vcenter import start_estate, stop_estate
from scmt_cli.services.migration.context import MigrationContext, open_context
from scmt_cli.state import StateStore


@dataclass
class Lab:
    root: Path
    estate: FakeEstate
    plan: Path
    state: Path
    reporter: RecordingReporter

    def store(self) -> StateStore:
        return StateStore.open(self.state)

    def write_plan(self, **kw: Any) -> Path:
        self.plan = demo_lab.write_plan(self.root / "lab", url=self.estate.base_url + "/sdk",
                                        thumbprint=self.estate.http.thumbprint, user=self.estate.lab.user, **kw)
        return self.plan

    def source_digests(self, vm: str) -> list[str]:
        """SHA-256 of each live disk of ``vm``, in disk key order."""
        with self.estate.lock:
            disks = self.estate.vm(vm).disks
            return [hashlib.sha256(d.read(0, d.capacity)).hexdigest() for _, d in sorted(disks.items())]

    def target_digests(self, vm: str) -> list[str]:
        folder = self.root / "lab" / "target" / vm
        n = len(self.estate.vm(vm).disks)
        return [hashlib.sha256((folder / f"disk{i}.raw").read_bytes()).hexdigest() for i in range(n)]

    def tool_snapshots(self, vm: str) -> list[str]:
        return [s.name for s in self.estate.vm(vm).snapshots if s.name.startswith("scmt-")]

    def write(self, vm: str, offset: int, data: bytes, key: int = 2000) -> None:
        assert self.estate.guest_write(vm, key, offset, data)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab_file = demo_lab.write_lab(tmp_path / "lab")
    estate = start_estate(lab_file, tmp_path / "vcenter")
    try:
        env = Lab(tmp_path, estate, Path(), tmp_path / "state.db", RecordingReporter())
        env.write_plan()
        yield env
    finally:
        stop_estate(estate)


@pytest.fixture
def ctx(lab: Lab) -> Iterator[MigrationContext]:
    store = lab.store()
    context = open_context(lab.plan, store, lab.reporter)
    try:
        yield context
    finally:
        context.close()
        store.close()


def names(outcomes: Sequence[Any]) -> list[str]:
    return [o.vm for o in outcomes]
