"""Suite-wide settings.

Under CI (``CI`` set) hypothesis runs derandomized: the same examples every
run, so a submission's result does not depend on luck.  Locally it explores
randomly (and stores failures in .hypothesis/ for replay).
"""

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.pgcluster import ClusterUnavailable, PgCluster

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _private_default_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and the scmt subprocesses it starts) gets its own default state store location, so a
    test that gives no --state neither writes the user's ~/.local/state/scmt/state.db nor reads one."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))


def _pg_required() -> bool:
    return os.environ.get("SCMT_REQUIRE_PG", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throw-away PostgreSQL cluster for the whole session (see tests/pgcluster.py).

    Skips when PostgreSQL or psycopg is missing; fails instead under ``SCMT_REQUIRE_PG=1`` (set by .ci/run).
    """
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if _pg_required():
            pytest.fail("SCMT_REQUIRE_PG=1 but psycopg is not installed (pip install -e '.[postgresql]')")
        pytest.skip("psycopg is not installed")
    try:
        cluster = PgCluster()
    except ClusterUnavailable as exc:
        if _pg_required():
            pytest.fail(f"SCMT_REQUIRE_PG=1 but PostgreSQL cannot start: {exc}")
        pytest.skip(str(exc))
    old = os.environ.get("PGPASSFILE")
    try:
        cluster.init()
    except ClusterUnavailable as exc:
        cluster.destroy()
        if _pg_required():
            pytest.fail(f"SCMT_REQUIRE_PG=1 but PostgreSQL cannot start: {exc}")
        pytest.skip(str(exc))
    os.environ["PGPASSFILE"] = str(cluster.passfile)  # subprocesses (workers) inherit it
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("PGPASSFILE", None)
        else:
            os.environ["PGPASSFILE"] = old
        cluster.destroy()
