"""Schema of the state store and its ordered migrations.

``MIGRATIONS[i]`` holds the SQL statements that take a database from schema
version ``i`` to ``i + 1`` (``PRAGMA user_version``; an empty file is version
0).  Migrations are append-only: never edit a released step, add a new one.
:func:`migrate` applies every missing step in ONE ``BEGIN IMMEDIATE``
transaction, so a crash mid-migration leaves the old version intact, and two
processes opening the same new file do not both migrate it.

Design notes:

* times are POSIX seconds (``REAL``); JSON columns are ``CHECK (json_valid())``;
* ``vms`` belong to a recorded plan and ``disks``/``generations`` to a recorded
  VM (foreign keys, enforced: the store turns ``PRAGMA foreign_keys`` on);
* ``events`` are append-only, enforced by triggers as well as by the API;
* ``locks`` have one row per held resource; a row whose lease expired may be
  taken over (see :mod:`scmt_cli.state.locks`).
"""

from __future__ import annotations

import sqlite3

from scmt_cli.errors import StateStoreError

#: ``PRAGMA application_id`` of scmt state files ("SCMT" in ASCII).
APPLICATION_ID = 0x53434D54

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: plans, VMs, disks, checkpoints and the event log.
    (
        f"PRAGMA application_id = {APPLICATION_ID}",
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
    ),
    # 1 -> 2: sync generations (one row per seed / incremental / final pass).
    (
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
    ),
    # 2 -> 3: leased locks (one row per held resource).
    (
        """CREATE TABLE locks (
            resource         TEXT PRIMARY KEY,
            owner            TEXT NOT NULL,
            pid              INTEGER NOT NULL,
            hostname         TEXT NOT NULL,
            acquired_at      REAL NOT NULL,
            lease_expires_at REAL NOT NULL
        )""",
    ),
)

#: The schema version this code writes.
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The ``user_version`` of the open database."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def too_new_error(path: str, found: int) -> StateStoreError:
    return StateStoreError(
        f"state store {path} has schema version {found}, newer than this scmt understands ({SCHEMA_VERSION})",
        hint="upgrade scmt, or point --state at another file",
    )


def not_ours_error(path: str, kind: str = "an SQLite database") -> StateStoreError:
    return StateStoreError(f"{path} is {kind} but not an scmt state store", hint="point --state at another store")


def application_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA application_id").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: str, target: int = SCHEMA_VERSION) -> int:
    """Bring the database to schema ``target``; return the version found before.

    ``conn`` must be in autocommit mode (``isolation_level=None``) with no
    transaction open.  Raises :class:`StateStoreError` when the file's version
    is newer than :data:`SCHEMA_VERSION` or the file is another application's
    database.  ``target`` below the latest exists for tests that build old
    files; a file already past ``target`` is left alone.
    """
    if not 0 <= target <= SCHEMA_VERSION:
        raise ValueError(f"no schema version {target}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)
        if found > SCHEMA_VERSION:
            raise too_new_error(path, found)
        app_id = application_id(conn)
        if found == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables or app_id not in (0, APPLICATION_ID):
                raise not_ours_error(path)
        elif app_id != APPLICATION_ID:
            raise not_ours_error(path)
        for version in range(found, target):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        if target > found:
            # PRAGMA does not take bound parameters; target is an int we checked.
            conn.execute(f"PRAGMA user_version = {int(target)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found
