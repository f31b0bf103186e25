"""Opening the state file: location, permissions, WAL, the one schema, the store id, refusal of bad files."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from scmt_cli.errors import StateStoreError
from scmt_cli.state import SCHEMA_VERSION, StateStore, default_state_path, resolve_state_path
from scmt_cli.state.schema import APPLICATION_ID

from .conftest import DIGEST


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _raw_pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def test_new_file_is_migrated_to_latest(db: Path) -> None:
    assert not db.exists()
    with StateStore.open(db) as store:
        assert store.path == db
        assert store.schema_version == SCHEMA_VERSION
    assert _raw_pragma(db, "user_version") == SCHEMA_VERSION
    assert _raw_pragma(db, "application_id") == APPLICATION_ID
    assert {"plans", "vms", "disks", "generations", "checkpoints", "events", "locks"} <= _tables(db)


def test_zero_byte_file_is_migrated(db: Path) -> None:
    db.parent.mkdir()
    db.write_bytes(b"")
    with StateStore.open(db) as store:
        assert store.schema_version == SCHEMA_VERSION


def test_reopen_keeps_data_and_version(db: Path) -> None:
    with StateStore.open(db) as store:
        store.put_checkpoint("k", {"v": 1})
    with StateStore.open(db) as store:
        assert store.get_checkpoint("k") == {"v": 1}
        assert store.schema_version == SCHEMA_VERSION


def test_store_id_is_made_once_and_kept(db: Path, tmp_path: Path) -> None:
    with StateStore.open(db) as store:
        first = store.store_id
    with StateStore.open(db) as store:
        assert store.store_id == first
    assert len(first) == 32 and int(first, 16) >= 0
    with StateStore.open(tmp_path / "other.db") as other:
        assert other.store_id != first


def _build_dev_store(db: Path, version: int) -> None:
    """A store as a development build before the one schema wrote it (tables, data, an older user_version)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("CREATE TABLE plans (name TEXT PRIMARY KEY, path TEXT, digest TEXT, recorded_at REAL)")
        conn.execute("CREATE TABLE checkpoints (key TEXT PRIMARY KEY, data TEXT, updated_at REAL)")
        conn.execute("INSERT INTO checkpoints VALUES ('ck', '{\"offset\": 42}', 1.0)")
        conn.execute(f"PRAGMA user_version = {version}")
    finally:
        conn.close()


@pytest.mark.parametrize("version", [1, 2, SCHEMA_VERSION - 1])
def test_older_format_is_refused_and_file_untouched(db: Path, version: int) -> None:
    _build_dev_store(db, version)
    before = db.read_bytes()
    with pytest.raises(StateStoreError) as info:
        StateStore.open(db)
    assert info.value.exit_code == 41
    assert str(db) in info.value.message and f"schema version {version}" in info.value.message
    assert info.value.hint is not None and "--state" in info.value.hint
    assert db.read_bytes() == before  # no upgrade step ran, nothing was written
    assert _raw_pragma(db, "user_version") == version


def test_newer_version_is_refused_and_file_untouched(db: Path) -> None:
    StateStore.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StateStoreError) as info:
        StateStore.open(db)
    assert info.value.exit_code == 41
    assert "newer" in info.value.message and str(db) in info.value.message
    assert info.value.hint is not None and "upgrade scmt" in info.value.hint
    assert _raw_pragma(db, "user_version") == SCHEMA_VERSION + 1


def test_corrupt_file_is_a_state_store_error(db: Path) -> None:
    db.parent.mkdir()
    db.write_bytes(b"this is not an SQLite database\n" * 200)
    with pytest.raises(StateStoreError) as info:
        StateStore.open(db)
    assert info.value.exit_code == 41
    assert str(db) in info.value.message and "not a usable scmt state store" in info.value.message


def test_damaged_pages_give_state_store_error(db: Path) -> None:
    with StateStore.open(db) as store:
        store.record_plan("p", "/p.yaml", DIGEST)
        for i in range(200):
            store.upsert_vm("p", f"vm{i:03d}", method="agentless", target="x" * 200)
    data = bytearray(db.read_bytes())
    assert len(data) > 8192
    data[4096:] = b"\xff" * (len(data) - 4096)  # keep the header page, wreck the rest
    db.write_bytes(bytes(data))
    with pytest.raises(StateStoreError):
        with StateStore.open(db) as store:
            store.list_vms("p")


def test_other_sqlite_database_is_refused(db: Path) -> None:
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StateStoreError, match="not an scmt state store"):
        StateStore.open(db)
    assert _tables(db) == {"photos"}


def test_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateStoreError, match="is a directory") as info:
        StateStore.open(tmp_path)
    assert info.value.exit_code == 41


def test_parent_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateStoreError, match="not a directory"):
        StateStore.open(tmp_path / "file" / "state.db")


def test_file_modes(db: Path) -> None:
    with StateStore.open(db) as store:
        store.put_checkpoint("k", {"v": 1})
        assert _mode(db.parent) == 0o700
        assert _mode(db) == 0o600
        for suffix in ("-wal", "-shm"):
            companion = db.with_name(db.name + suffix)
            assert companion.exists()
            assert _mode(companion) == 0o600


def test_loose_mode_of_existing_file_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    db.write_bytes(b"")
    os.chmod(db, 0o644)
    StateStore.open(db).close()
    assert _mode(db) == 0o600


def test_existing_parent_directory_mode_is_not_changed(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    StateStore.open(tmp_path / "state.db").close()
    assert _mode(tmp_path) == 0o755


def test_wal_foreign_keys_and_busy_timeout(db: Path) -> None:
    with StateStore.open(db, busy_timeout=12.5) as store:
        assert _raw_pragma(db, "journal_mode") == "wal"
        assert store._query("PRAGMA foreign_keys")[0][0] == 1
        assert store._query("PRAGMA busy_timeout")[0][0] == 12500
        assert store._query("PRAGMA synchronous")[0][0] == 2  # FULL


def test_closed_store_raises(db: Path) -> None:
    store = StateStore.open(db)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StateStoreError, match="closed"):
        store.get_checkpoint("k")


def test_default_path_uses_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_path() == tmp_path / "xdg" / "scmt" / "state.db"


def test_default_path_falls_back_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert default_state_path() == tmp_path / ".local" / "state" / "scmt" / "state.db"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")  # not absolute: ignored, as XDG requires
    assert default_state_path() == tmp_path / ".local" / "state" / "scmt" / "state.db"


def test_resolve_prefers_argument_then_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCMT_STATE", str(tmp_path / "env.db"))
    assert resolve_state_path(tmp_path / "arg.db") == tmp_path / "arg.db"
    assert resolve_state_path(None) == tmp_path / "env.db"
    monkeypatch.delenv("SCMT_STATE")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert resolve_state_path(None) == tmp_path / "xdg" / "scmt" / "state.db"


def test_open_without_path_uses_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SCMT_STATE", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    with StateStore.open() as store:
        assert store.path == tmp_path / "xdg" / "scmt" / "state.db"
    assert _mode(tmp_path / "xdg" / "scmt") == 0o700
