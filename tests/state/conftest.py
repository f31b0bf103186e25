"""Shared fixtures for the state-store tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.state import StateStore

WORKER = Path(__file__).with_name("worker.py")


class FakeClock:
    """A settable clock (POSIX seconds) for lease tests without sleeping."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def store(db: Path) -> Iterator[StateStore]:
    with StateStore.open(db) as s:
        yield s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cstore(db: Path, clock: FakeClock) -> Iterator[StateStore]:
    """A store driven by the fake clock."""
    with StateStore.open(db, clock=clock) as s:
        yield s


DIGEST = "ab" * 32


@pytest.fixture
def spawn() -> Iterator[object]:
    """Start ``worker.py`` subprocesses; every one still running at the end is killed and reaped."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream:
                stream.close()


def wait_line(proc: subprocess.Popen[str], expected: str) -> str:
    """Read the worker's next stdout line; fail with its stderr if it is not ``expected...``."""
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith(expected):
        proc.kill()
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"worker said {line!r}, expected {expected!r}; stderr:\n{err}")
    return line
