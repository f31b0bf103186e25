"""The SQLite state store every command shares (sync, failover, rollback, status, copy).

Contract:

* one file, default :func:`default_state_path`; parent directory created 0700,
  the file and its ``-wal``/``-shm`` companions 0600; secrets are never stored
  (see :mod:`scmt_cli.state.guard`);
* WAL journal, ``synchronous=FULL`` (a committed checkpoint survives power
  loss), foreign keys on, a busy timeout so concurrent processes wait instead
  of failing;
* every change runs in one ``BEGIN IMMEDIATE`` transaction; :meth:`StoreCore.atomic`
  groups several calls into one transaction (all or nothing, also across a
  ``kill -9``);
* threading: ONE connection per :class:`StateStore`, shared by all threads and
  guarded by a re-entrant lock (a copy worker writing checkpoints, the lease
  heartbeat and the main thread may call it concurrently).  Open a new store in
  a child process; a store used after ``fork`` raises :class:`StateStoreError`;
* every failure of the file or the database is a :class:`StateStoreError`
  (exit 41): a directory, a corrupt file, a file of another schema version, a
  database locked for longer than the busy timeout.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from scmt_cli.errors import StateStoreError, redact_text
from scmt_cli.state.guard import from_json, to_json
from scmt_cli.state.locks import VmLock, read_holder
from scmt_cli.state.paths import is_postgres_url, prepare_file, resolve_state_path, tighten_companions
from scmt_cli.state.records import (
    EventRecord,
    LockInfo,
)
from scmt_cli.state.schema import check_existing, check_or_create, schema_version


def clean_error(error: str | None) -> str | None:
    """An error message fit to store: URL passwords and secret-looking values redacted."""
    return None if error is None else redact_text(error)


class StoreCore:
    """Connection, transactions, checkpoints, events and locks.

    :class:`~scmt_cli.state.store.StateStore` adds the plan/VM/disk/generation
    tables; use that class, not this one.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self.clock = clock
        self._mutex = threading.RLock()
        self._depth = 0
        self._pid = os.getpid()
        self._held_locks: list[VmLock] = []

    # -- lifecycle ---------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: Path | str | None = None,
        *,
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> Self:
        """Open (creating it when new or empty) the state file at ``path``.

        ``path`` ``None`` means ``$SCMT_STATE`` or :func:`default_state_path`;
        a ``postgresql://`` URL opens the shared PostgreSQL store instead
        (:mod:`scmt_cli.state.postgres`).
        ``busy_timeout`` is how long a write waits for another process's
        transaction.  ``clock`` returns POSIX seconds (tests pass a fake one).
        """
        if is_postgres_url(path if path not in (None, "") else os.environ.get("SCMT_STATE", "")):
            from scmt_cli.state.postgres import open_postgres

            store: Any = open_postgres(cls, str(path or os.environ["SCMT_STATE"]), busy_timeout=busy_timeout,
                                       clock=clock)
            return store  # type: ignore[no-any-return]
        p = resolve_state_path(path)
        prepare_file(p)
        try:
            conn = sqlite3.connect(str(p), timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot open state store {p}: {exc}") from None
        try:
            cls._configure(conn, p)
        except sqlite3.OperationalError as exc:
            conn.close()
            raise StateStoreError(
                f"cannot open state store {p}: {exc}",
                hint="another scmt process may be holding it; retry" if "lock" in str(exc) else None,
            ) from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StateStoreError(
                f"{p} is not a usable scmt state store: {exc}",
                hint="restore it from a backup or point --state at another file",
            ) from None
        except BaseException:
            conn.close()
            raise
        tighten_companions(p)
        return cls(conn, p, clock)

    @staticmethod
    def _configure(conn: sqlite3.Connection, path: Path) -> None:
        version = schema_version(conn)  # the first read fails on a file that is not a database
        if version:
            check_existing(conn, str(path), version)  # before WAL mode touches a file that is not ours
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        if mode != "wal":
            raise StateStoreError(
                f"cannot use write-ahead logging for {path} (journal mode {mode})",
                hint="put the state file on a local file system",
            )
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        check_or_create(conn, str(path))

    @property
    def path(self) -> Path:
        return self._path

    @property
    def schema_version(self) -> int:
        return int(self._query("PRAGMA user_version")[0][0])

    @property
    def store_id(self) -> str:
        """This store's id: made when the store was created, never changed (32 hex digits)."""
        rows = self._query("SELECT value FROM scmt_meta WHERE key = 'store_id'")
        if not rows:
            raise StateStoreError(f"state store {self._path} has no store id", hint="point --state at a new store")
        return str(rows[0][0])

    def close(self) -> None:
        """Release locks still held by this store and close the file.  Idempotent."""
        for held in list(self._held_locks):
            try:
                held.release()
            except StateStoreError:
                continue
        with self._mutex:
            conn, self._conn = self._conn, None
            if conn is not None and os.getpid() == self._pid:
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StateStore {self._path}{'' if self._conn else ' closed'}>"

    # -- transactions ------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateStoreError(f"state store {self._path} is closed")
        if os.getpid() != self._pid:
            raise StateStoreError("a state store cannot be shared across fork(); open it again in the child")
        return self._conn

    #: The database driver's exception classes (turned into StateStoreError by :meth:`_wrap`).
    _db_errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _commit(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def _wrap(self, exc: Exception) -> StateStoreError:
        text = str(exc)
        hint = None
        if "locked" in text or "busy" in text:
            hint = "another scmt process kept the state store busy; retry, or raise the busy timeout"
        return StateStoreError(f"state store {self._path}: {text}", hint=hint)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; nested use joins the outer one."""
        with self._mutex:
            conn = self._connection()
            if self._depth:
                self._depth += 1
                try:
                    yield conn
                except self._db_errors as exc:
                    raise self._wrap(exc) from None
                finally:
                    self._depth -= 1
                return
            try:
                self._begin(conn)
            except self._db_errors as exc:
                self._rollback(conn)
                raise self._wrap(exc) from None
            self._depth = 1
            try:
                yield conn
                self._commit(conn)
            except self._db_errors as exc:
                self._rollback(conn)
                raise self._wrap(exc) from None
            except BaseException:
                self._rollback(conn)
                raise
            finally:
                self._depth = 0

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """Undo the open transaction; a failing rollback must not hide the original error."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Group several store calls into one transaction: all of them or none.

        Other threads using this store wait until the block ends; keep it short.
        """
        with self._tx():
            yield

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._mutex:
            conn = self._connection()
            try:
                return conn.execute(sql, tuple(params)).fetchall()
            except self._db_errors as exc:
                raise self._wrap(exc) from None

    # -- checkpoints -------------------------------------------------------------
    def get_checkpoint(self, key: str) -> dict[str, Any] | None:
        rows = self._query("SELECT data FROM checkpoints WHERE key = ?", (key,))
        return from_json(rows[0][0]) if rows else None

    def put_checkpoint(self, key: str, data: Mapping[str, Any]) -> None:
        """Store ``data`` (a JSON object without secrets) under ``key``, replacing any older one."""
        text = to_json(data, f"checkpoint {key}")
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO checkpoints (key, data, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                (key, text, self.clock()),
            )

    def delete_checkpoint(self, key: str) -> None:
        """Forget a checkpoint (no error when there is none)."""
        with self._tx() as conn:
            conn.execute("DELETE FROM checkpoints WHERE key = ?", (key,))

    def checkpoint_keys(self, prefix: str = "") -> list[str]:
        """Keys of stored checkpoints starting with ``prefix``, sorted."""
        sql = "SELECT key FROM checkpoints WHERE substr(key, 1, ?) = ? ORDER BY key"
        rows = self._query(sql, (len(prefix), prefix))
        return [r[0] for r in rows]

    # -- events ------------------------------------------------------------------
    def append_event(self, kind: str, /, *, plan: str | None = None, vm: str | None = None, **data: Any) -> int:
        """Append one event; return its id (ids grow strictly).  Events are never changed or deleted.

        ``data`` must be JSON-serialisable and free of secrets (``ValueError``).
        """
        if not kind:
            raise ValueError("event kind must not be empty")
        text = to_json(data, f"event {kind}")
        with self._tx() as conn:
            row = conn.execute(
                "INSERT INTO events (at, plan, vm, kind, data) VALUES (?, ?, ?, ?, ?) RETURNING id",
                (self.clock(), plan, vm, kind, text),
            ).fetchone()
            return int(row[0])

    def events(
        self,
        *,
        plan: str | None = None,
        vm: str | None = None,
        since_id: int = 0,
        limit: int | None = None,
        kinds: Iterable[str] | None = None,
    ) -> list[EventRecord]:
        """Events with id > ``since_id``, oldest first, filtered by plan/VM/kinds, at most ``limit``."""
        where = ["id > ?"]
        params: list[Any] = [since_id]
        if plan is not None:
            where.append("plan = ?")
            params.append(plan)
        if vm is not None:
            where.append("vm = ?")
            params.append(vm)
        if kinds is not None:
            kind_list = list(kinds)
            where.append(f"kind IN ({', '.join('?' for _ in kind_list)})")
            params.extend(kind_list)
        sql = f"SELECT id, at, kind, plan, vm, data FROM events WHERE {' AND '.join(where)} ORDER BY id"  # noqa: S608
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [EventRecord(r[0], r[1], r[2], r[3], r[4], from_json(r[5])) for r in self._query(sql, params)]

    # -- locks -------------------------------------------------------------------
    def lock(
        self, resource: str, *, lease_seconds: float = 60.0, owner: str | None = None, heartbeat: bool = True
    ) -> VmLock:
        """A leased lock on ``resource`` (see :func:`~scmt_cli.state.locks.vm_resource`).

        Acquired on ``with`` entry (or :meth:`VmLock.acquire`); raises
        :class:`~scmt_cli.errors.LockedError` naming the holder.
        """
        return VmLock(self, resource, lease_seconds=lease_seconds, owner=owner, heartbeat=heartbeat)

    def lock_holder(self, resource: str) -> LockInfo | None:
        """Who holds ``resource`` now (possibly with an expired lease), or ``None``."""
        return read_holder(self, resource)

    def _register_lock(self, held: VmLock) -> None:
        with self._mutex:
            self._held_locks.append(held)

    def _unregister_lock(self, held: VmLock) -> None:
        with self._mutex:
            if held in self._held_locks:
                self._held_locks.remove(held)
