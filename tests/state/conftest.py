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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a module's tests against every store it names in ``STORE_BACKENDS`` (default: SQLite only).

    The contract modules (records, locks, crash) set ``("sqlite", "postgresql")``; file-specific ones do not.
    """
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", getattr(metafunc.module, "STORE_BACKENDS", ("sqlite",)))


@pytest.fixture
def db(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """Where the test's store lives: an SQLite file path, or a PostgreSQL URL of a fresh schema."""
    if backend == "postgresql":
        return request.getfixturevalue("pg_cluster").new_schema()
    return tmp_path / "state" / "state.db"


def raw_execute(db: Path | str, sql: str) -> None:
    """Run one statement on the store's database outside scmt (to test what the schema itself refuses)."""
    if isinstance(db, str) and db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(sql)
        return
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


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
