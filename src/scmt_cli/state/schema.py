"""The one schema of the state store (SQLite) and the checks that open it.

Until the first release there is exactly one format: a new (empty) file gets
:data:`SCHEMA` in ONE ``BEGIN IMMEDIATE`` transaction (so a crash leaves an
empty file, and two processes opening a new file do not both create it); a
file of any other ``PRAGMA user_version`` -- older or newer -- or another
application's database is refused with :class:`StateStoreError` and a hint.
There are no upgrade steps.

Design notes:

* times are POSIX seconds (``REAL``); JSON columns are ``CHECK (json_valid())``;
* ``vms`` belong to a recorded plan and ``disks``/``generations`` to a recorded
  VM (foreign keys, enforced: the store turns ``PRAGMA foreign_keys`` on);
* ``events`` are append-only, enforced by triggers as well as by the API;
* ``locks`` have one row per held resource; a row whose lease expired may be
  taken over (see :mod:`scmt_cli.state.locks`);
* ``scmt_meta`` holds ``store_id``: a random id made when the store is
  created and never changed.  What scmt creates outside the store (vSphere
  snapshots) carries it, so a store removes only its own leftovers.
"""

from __future__ import annotations

import sqlite3
import uuid

from scmt_cli.errors import StateStoreError

#: ``PRAGMA application_id`` of scmt state files ("SCMT" in ASCII).
APPLICATION_ID = 0x53434D54

#: The schema version this code reads and writes (the only one).
SCHEMA_VERSION = 4

SCHEMA: tuple[str, ...] = (
    f"PRAGMA application_id = {APPLICATION_ID}",
    "CREATE TABLE scmt_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE plans (
        name        TEXT PRIMARY KEY,
        path        TEXT NOT NULL,
        digest      TEXT NOT NULL CHECK (length(digest) = 64),
        recorded_at REAL NOT NULL
    )""",
    """CREATE TABLE vms (
        plan            TEXT NOT NULL REFERENCES plans(name) ON DELETE CASCADE,
        name            TEXT NOT NULL,
        state           TEXT NOT NULL,
        method          TEXT,
        source_id       TEXT,
        target          TEXT,
        last_sync_at    REAL,
        last_sync_bytes INTEGER,
        error           TEXT,
        updated_at      REAL NOT NULL,
        PRIMARY KEY (plan, name)
    )""",
    """CREATE TABLE disks (
        plan           TEXT NOT NULL,
        vm             TEXT NOT NULL,
        disk_key       INTEGER NOT NULL,
        label          TEXT,
        capacity_bytes INTEGER,
        target         TEXT,
        change_id      TEXT,
        manifest_path  TEXT,
        updated_at     REAL NOT NULL,
        PRIMARY KEY (plan, vm, disk_key),
        FOREIGN KEY (plan, vm) REFERENCES vms(plan, name) ON DELETE CASCADE
    )""",
    """CREATE TABLE checkpoints (
        key        TEXT PRIMARY KEY,
        data       TEXT NOT NULL CHECK (json_valid(data)),
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE events (
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        at   REAL NOT NULL,
        plan TEXT,
        vm   TEXT,
        kind TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(data))
    )""",
    "CREATE INDEX events_by_vm ON events (plan, vm, id)",
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
    """CREATE TABLE generations (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        plan          TEXT NOT NULL,
        vm            TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('seed', 'incremental', 'final')),
        status        TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
        started_at    REAL NOT NULL,
        finished_at   REAL,
        bytes_read    INTEGER NOT NULL DEFAULT 0,
        bytes_written INTEGER NOT NULL DEFAULT 0,
        bytes_zero    INTEGER NOT NULL DEFAULT 0,
        change_ids    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(change_ids)),
        stats         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(stats)),
        error         TEXT,
        FOREIGN KEY (plan, vm) REFERENCES vms(plan, name) ON DELETE CASCADE
    )""",
    "CREATE INDEX generations_by_vm ON generations (plan, vm, id)",
    """CREATE TABLE locks (
        resource         TEXT PRIMARY KEY,
        owner            TEXT NOT NULL,
        pid              INTEGER NOT NULL,
        hostname         TEXT NOT NULL,
        acquired_at      REAL NOT NULL,
        lease_expires_at REAL NOT NULL
    )""",
)


def new_store_id() -> str:
    """A fresh store id (32 hex digits)."""
    return uuid.uuid4().hex


def schema_version(conn: sqlite3.Connection) -> int:
    """The ``user_version`` of the open database."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def unsupported_version_error(path: str, found: int) -> StateStoreError:
    """A store of another schema version (there are no upgrades before the first release)."""
    if found > SCHEMA_VERSION:
        return StateStoreError(
            f"state store {path} has schema version {found}, newer than this scmt understands ({SCHEMA_VERSION})",
            hint="upgrade scmt, or point --state at another file",
        )
    return StateStoreError(
        f"state store {path} has schema version {found}, written by a development build of scmt; this scmt reads "
        f"only version {SCHEMA_VERSION}",
        hint="point --state at a new file (or move this one aside); scmt cannot continue the runs it recorded",
    )


def not_ours_error(path: str, kind: str = "an SQLite database") -> StateStoreError:
    return StateStoreError(f"{path} is {kind} but not an scmt state store", hint="point --state at another store")


def application_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA application_id").fetchone()[0])


def check_or_create(conn: sqlite3.Connection, path: str) -> bool:
    """Create the schema in an empty database, or check that it is ours and current; True if created.

    ``conn`` must be in autocommit mode (``isolation_level=None``) with no
    transaction open.  Raises :class:`StateStoreError` for another version,
    another application's database, or a database with tables and no version.
    """
    found = schema_version(conn)
    if found:
        check_existing(conn, path, found)
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)  # another process may have created it meanwhile
        if found:
            conn.execute("ROLLBACK")
            check_existing(conn, path, found)
            return False
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables or application_id(conn) not in (0, APPLICATION_ID):
            raise not_ours_error(path)
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO scmt_meta (key, value) VALUES ('store_id', ?)", (new_store_id(),))
        # PRAGMA does not take bound parameters; SCHEMA_VERSION is our constant.
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True


def check_existing(conn: sqlite3.Connection, path: str, found: int) -> None:
    """Refuse (StateStoreError) a database of version ``found`` that is not ours or not current."""
    if application_id(conn) != APPLICATION_ID:
        raise not_ours_error(path)
    if found != SCHEMA_VERSION:
        raise unsupported_version_error(path, found)
