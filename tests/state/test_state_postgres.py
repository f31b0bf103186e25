"""What only the PostgreSQL store has: URL rules, passwords, schema parity, reconnecting."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.errors import StateStoreError
from scmt_cli.state import SCHEMA_VERSION, StateStore

from .conftest import DIGEST, raw_execute

psycopg = pytest.importorskip("psycopg")


@pytest.mark.parametrize("url", [
    "postgresql://scmt:s3cr3t-pw@127.0.0.1:1/scmt",
    "postgres://scmt:s3cr3t-pw@127.0.0.1:1/scmt",
    "postgresql://scmt@127.0.0.1:1/scmt?password=s3cr3t-pw",
    "postgresql://scmt@127.0.0.1:1/scmt?sslmode=require&PASSWORD=s3cr3t-pw",
])
def test_password_in_url_is_refused_and_never_echoed(url: str) -> None:
    with pytest.raises(StateStoreError) as info:
        StateStore.open(url)
    err = info.value
    assert err.exit_code == 41
    assert "carries a password" in err.message
    assert "s3cr3t-pw" not in err.message and "s3cr3t-pw" not in (err.hint or "")
    assert "pgpass" in (err.hint or "")


@pytest.mark.parametrize("how", ["option", "env"])
def test_cli_refuses_password_url_without_echoing_it(how: str) -> None:
    url = "postgresql://u:s3cr3t-pw@127.0.0.1:1/db"
    plan = Path(__file__).parents[2] / "plans" / "agentless-p2p.yaml"  # a valid plan: the store is what fails
    env = {**os.environ, "SCMT_STATE": url} if how == "env" else {k: v for k, v in os.environ.items()
                                                                   if k != "SCMT_STATE"}
    state = ["--state", url] if how == "option" else []
    proc = subprocess.run([sys.executable, "-m", "scmt_cli", "--json", *state, "sync", str(plan)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert "s3cr3t-pw" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 41, proc.stderr
    doc = json.loads(proc.stdout)
    assert "carries a password" in doc["message"] and "postgresql://u:***@127.0.0.1:1/db" in doc["message"]
    assert "pgpass" in doc["hint"]


def test_env_selects_postgres(pg_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = pg_cluster.new_schema()
    monkeypatch.setenv("SCMT_STATE", url)
    with StateStore.open() as store:
        assert type(store).__name__ == "PostgresStateStore"
        assert store.path == url
        assert store.schema_version == SCHEMA_VERSION
        store.put_checkpoint("k", {"v": 1})


def test_password_comes_from_passfile(pg_cluster: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = pg_cluster.new_schema()
    empty = tmp_path / "pgpass"
    empty.write_text("")
    empty.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(empty))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(StateStoreError) as info:
        StateStore.open(url)
    assert info.value.exit_code == 41 and "cannot open state store" in info.value.message
    assert pg_cluster.password not in info.value.message
    monkeypatch.setenv("PGPASSWORD", pg_cluster.password)  # the environment works as well as the file
    with StateStore.open(url) as store:
        assert store.schema_version == SCHEMA_VERSION


def _sqlite_columns(tmp_path: Path) -> dict[str, list[tuple[str, bool]]]:
    db = tmp_path / "s.db"
    StateStore.open(db).close()
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                             " AND name NOT LIKE 'sqlite_%'")]
        return {t: [(r[1], bool(r[3]) or bool(r[5])) for r in conn.execute(f"PRAGMA table_info({t})")]
                for t in tables}
    finally:
        conn.close()


def test_schema_matches_sqlite(pg_cluster: Any, tmp_path: Path) -> None:
    url = pg_cluster.new_schema()
    StateStore.open(url).close()
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, is_nullable FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position").fetchall()
    pg: dict[str, list[tuple[str, bool]]] = {}
    for table, column, nullable in rows:
        pg.setdefault(table, []).append((column, nullable == "NO"))
    sq = _sqlite_columns(tmp_path)
    # the same tables and columns in the same order; NOT NULL (or key) where SQLite has it
    assert {t: [c for c, _ in cols] for t, cols in pg.items()} == {t: [c for c, _ in cols] for t, cols in sq.items()}
    for table, cols in sq.items():
        for (name, required), (_, pg_required) in zip(cols, pg[table], strict=True):
            assert pg_required == required or name == "id", (table, name)


def test_times_keep_sub_second_precision(pg_cluster: Any) -> None:
    with StateStore.open(pg_cluster.new_schema(), clock=lambda: 1_800_000_000.123456) as store:
        store.record_plan("p", "/p.yaml", DIGEST)
        assert store.get_plan("p").recorded_at == 1_800_000_000.123456  # type: ignore[union-attr]


def test_foreign_tables_are_refused(pg_cluster: Any) -> None:
    url = pg_cluster.new_schema()
    raw_execute(url, "CREATE TABLE plans (x int)")
    with pytest.raises(StateStoreError, match="not an scmt state store"):
        StateStore.open(url)


def test_newer_schema_is_refused(pg_cluster: Any) -> None:
    url = pg_cluster.new_schema()
    StateStore.open(url).close()
    raw_execute(url, "UPDATE scmt_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StateStoreError, match="schema version 99, newer"):
        StateStore.open(url)


def test_older_schema_is_refused(pg_cluster: Any) -> None:
    url = pg_cluster.new_schema()
    StateStore.open(url).close()
    raw_execute(url, "UPDATE scmt_meta SET value = '3' WHERE key = 'schema_version'")
    with pytest.raises(StateStoreError, match="schema version 3, written by a development build") as info:
        StateStore.open(url)
    assert info.value.hint is not None and "--state" in info.value.hint


def test_store_id_is_made_once_per_database(pg_cluster: Any) -> None:
    url, other = pg_cluster.new_schema(), pg_cluster.new_schema()
    with StateStore.open(url) as store:
        first = store.store_id
    with StateStore.open(url) as store:
        assert store.store_id == first and len(first) == 32
    with StateStore.open(other) as store:
        assert store.store_id != first


def test_reconnects_after_server_restart(pg_cluster: Any) -> None:
    with StateStore.open(pg_cluster.new_schema()) as store:
        store.put_checkpoint("before", {"n": 1})
        pg_cluster.stop()
        try:
            with pytest.raises(StateStoreError) as info:
                store.put_checkpoint("down", {"n": 2})
            assert info.value.exit_code == 41 and "reconnects when it is back" in (info.value.hint or "")
        finally:
            pg_cluster.start()
        assert store.checkpoint_keys() == ["before"]  # the first read after the restart reconnects by itself
        store.put_checkpoint("after", {"n": 3})
        assert store.checkpoint_keys() == ["after", "before"]


def test_a_write_interrupted_mid_transaction_is_not_replayed(pg_cluster: Any) -> None:
    with StateStore.open(pg_cluster.new_schema()) as store:
        store.record_plan("p", "/p.yaml", DIGEST)

        def half_then_outage() -> None:
            with store.atomic():
                store.put_checkpoint("half", {"n": 1})
                pg_cluster.stop()
                try:
                    store.put_checkpoint("other-half", {"n": 2})
                finally:
                    pg_cluster.start()

        with pytest.raises(StateStoreError):
            half_then_outage()
        assert store.checkpoint_keys() == []  # all or nothing, and nothing was retried behind the caller's back
