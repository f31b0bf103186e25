"""The PostgreSQL form of the state store's one schema.

:data:`PG_SCHEMA` has the same tables, columns, keys and checks as
:data:`scmt_cli.state.schema.SCHEMA` (a test compares them).  Only the
spelling differs: times are ``DOUBLE PRECISION`` (PostgreSQL's ``REAL`` is 4
bytes and would round POSIX seconds to minutes), byte counts ``BIGINT``, ids
identity columns, JSON columns ``TEXT`` checked with a ``::json`` cast, and
the append-only triggers call a PL/pgSQL function.  ``PRAGMA user_version`` /
``application_id`` become the rows ``schema_version`` / ``application_id`` of
``scmt_meta``, next to ``store_id``.

:func:`create_or_check_pg` creates the schema in ONE transaction under a
transaction-level advisory lock (two hosts opening a new database at the same
time do not both create it), or checks that the schema found is scmt's and of
:data:`~scmt_cli.state.schema.SCHEMA_VERSION`; any other version is refused
(there are no upgrades before the first release).  Tables live in the
connection's ``current_schema()`` (select another with
``?options=-csearch_path%3Dname``).
"""

from __future__ import annotations

from typing import Any

from scmt_cli.state.schema import SCHEMA_VERSION, new_store_id, not_ours_error, unsupported_version_error

#: The two-int advisory lock keys: ("SCMT", n).  n=1 schema creation, n=2 the single-writer lock.
ADVISORY_CLASS = 0x53434D54
CREATE_LOCK = 1
WRITER_LOCK = 2
APPLICATION_NAME = "scmt"  # the application_id row of scmt_meta (written with the schema)

PG_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE scmt_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "INSERT INTO scmt_meta (key, value) VALUES ('application_id', 'scmt')",
    """CREATE TABLE plans (
        name        TEXT PRIMARY KEY,
        path        TEXT NOT NULL,
        digest      TEXT NOT NULL CHECK (length(digest) = 64),
        recorded_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE vms (
        plan            TEXT NOT NULL REFERENCES plans(name) ON DELETE CASCADE,
        name            TEXT NOT NULL,
        state           TEXT NOT NULL,
        method          TEXT,
        source_id       TEXT,
        target          TEXT,
        last_sync_at    DOUBLE PRECISION,
        last_sync_bytes BIGINT,
        error           TEXT,
        updated_at      DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (plan, name)
    )""",
    """CREATE TABLE disks (
        plan           TEXT NOT NULL,
        vm             TEXT NOT NULL,
        disk_key       INTEGER NOT NULL,
        label          TEXT,
        capacity_bytes BIGINT,
        target         TEXT,
        change_id      TEXT,
        manifest_path  TEXT,
        updated_at     DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (plan, vm, disk_key),
        FOREIGN KEY (plan, vm) REFERENCES vms(plan, name) ON DELETE CASCADE
    )""",
    """CREATE TABLE checkpoints (
        key        TEXT PRIMARY KEY,
        data       TEXT NOT NULL CHECK (data::json IS NOT NULL),
        updated_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE events (
        id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at   DOUBLE PRECISION NOT NULL,
        plan TEXT,
        vm   TEXT,
        kind TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}' CHECK (data::json IS NOT NULL)
    )""",
    "CREATE INDEX events_by_vm ON events (plan, vm, id)",
    """CREATE FUNCTION scmt_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'events are append-only'; END $$""",
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
       FOR EACH ROW EXECUTE FUNCTION scmt_events_append_only()""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
       FOR EACH ROW EXECUTE FUNCTION scmt_events_append_only()""",
    """CREATE TABLE generations (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        plan          TEXT NOT NULL,
        vm            TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('seed', 'incremental', 'final')),
        status        TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
        started_at    DOUBLE PRECISION NOT NULL,
        finished_at   DOUBLE PRECISION,
        bytes_read    BIGINT NOT NULL DEFAULT 0,
        bytes_written BIGINT NOT NULL DEFAULT 0,
        bytes_zero    BIGINT NOT NULL DEFAULT 0,
        change_ids    TEXT NOT NULL DEFAULT '{}' CHECK (change_ids::json IS NOT NULL),
        stats         TEXT NOT NULL DEFAULT '{}' CHECK (stats::json IS NOT NULL),
        error         TEXT,
        FOREIGN KEY (plan, vm) REFERENCES vms(plan, name) ON DELETE CASCADE
    )""",
    "CREATE INDEX generations_by_vm ON generations (plan, vm, id)",
    """CREATE TABLE locks (
        resource         TEXT PRIMARY KEY,
        owner            TEXT NOT NULL,
        pid              INTEGER NOT NULL,
        hostname         TEXT NOT NULL,
        acquired_at      DOUBLE PRECISION NOT NULL,
        lease_expires_at DOUBLE PRECISION NOT NULL
    )""",
)

#: Tables the store creates; finding one without ``scmt_meta`` means the database is not ours.
STORE_TABLES = ("plans", "vms", "disks", "checkpoints", "events", "generations", "locks")


def pg_schema_version(conn: Any) -> int:
    """The recorded schema version (0 for a database scmt never touched)."""
    if conn.execute("SELECT to_regclass('scmt_meta')").fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT value FROM scmt_meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def create_or_check_pg(conn: Any, where: str) -> bool:
    """Create the schema in a database scmt never touched, or check the one found; True if created.

    ``conn`` is a psycopg connection in autocommit mode.  Raises
    :class:`StateStoreError` for another schema version or for tables of the
    store's names that scmt did not create.
    """
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (ADVISORY_CLASS, CREATE_LOCK))
        found = pg_schema_version(conn)
        if found:
            row = conn.execute("SELECT value FROM scmt_meta WHERE key = 'application_id'").fetchone()
            if row is None or row[0] != APPLICATION_NAME:
                raise not_ours_error(where, kind="a PostgreSQL schema")
            if found != SCHEMA_VERSION:
                raise unsupported_version_error(where, found)
            conn.execute("COMMIT")
            return False
        for table in (*STORE_TABLES, "scmt_meta"):
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None:
                raise not_ours_error(where, kind="a PostgreSQL schema")
        for statement in PG_SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO scmt_meta (key, value) VALUES ('schema_version', %s), ('store_id', %s)",
                     (str(SCHEMA_VERSION), new_store_id()))
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001, S110 - a broken connection must not hide the original error
            pass
        raise
    return True
