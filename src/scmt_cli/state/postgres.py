"""The PostgreSQL state store: the same records, locks and contract as the SQLite one, shared by many hosts.

``--state postgresql://user@host[:port]/db`` (or ``SCMT_STATE``) selects it.
Contract, beyond :mod:`scmt_cli.state.core`'s:

* the URL never carries a password: ``postgresql://user:pw@...`` and
  ``?password=`` are refused (exit 41) without echoing the password; libpq
  reads it from ``PGPASSWORD``, ``~/.pgpass``, ``PGPASSFILE`` or ``?passfile=``;
* one connection per store in autocommit mode; every change runs in one
  explicit transaction that first takes the transaction-level advisory lock
  ``(0x53434D54, 2)``, so writers are serialised exactly like SQLite's
  ``BEGIN IMMEDIATE`` (the checks inside a transaction, e.g. "is this lock
  free", cannot race) while reads never wait; ``busy_timeout`` becomes
  ``lock_timeout``;
* TCP keepalives and ``idle_in_transaction_session_timeout`` make the server
  drop a dead host's session (and with it any transaction it held);
* a lost connection fails the operation in progress with
  :class:`~scmt_cli.errors.StateStoreError`; the next operation reconnects,
  so a worker resumes by itself once the server is back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from scmt_cli.errors import StateStoreError, redact_text, redact_url
from scmt_cli.state.pgschema import ADVISORY_CLASS, WRITER_LOCK, create_or_check_pg, pg_schema_version
from scmt_cli.state.store import StateStore

#: Connection parameters scmt sets unless the URL sets them.
_DEFAULT_PARAMS = {
    "connect_timeout": "10",
    "application_name": "scmt",
    "keepalives": "1",
    "keepalives_idle": "15",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}
#: A session idle inside a transaction this long is ended by the server (a hung host must not block writers).
IDLE_IN_TRANSACTION_SECONDS = 60


def check_url(url: str) -> str:
    """Validate a ``postgresql://`` state URL; return the form fit to show (it has no secret).

    Raises :class:`StateStoreError` when the URL holds a password.
    """
    try:
        parts = urlsplit(url)
        password_in_query = any(k.lower() == "password" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
        has_password = parts.password is not None
    except ValueError:
        raise StateStoreError(f"state store URL {redact_text(url)!r} is not a valid postgresql:// URL") from None
    if has_password or password_in_query:
        raise StateStoreError(
            f"state store URL {redact_url(url)} carries a password; scmt never takes one on the command line",
            hint="drop it from the URL and put it in ~/.pgpass (mode 0600), PGPASSFILE or PGPASSWORD",
        )
    return url


class _PgConnection:
    """The sqlite3-like surface the store code uses (``execute(sql, params)`` with ``?`` marks).

    A statement issued outside a transaction (a read, or the ``BEGIN`` of a
    write) on a connection the server dropped is retried once on a fresh
    connection: it has not run, and running it again is safe.  Inside a
    transaction the error stands (the transaction is gone).
    """

    _sql_cache: dict[str, str] = {}

    def __init__(self, conninfo: str, display: str, busy_timeout: float) -> None:
        self.conninfo, self.display, self.busy_timeout = conninfo, display, busy_timeout
        self.raw = self._open()

    def _open(self) -> psycopg.Connection[Any]:
        try:
            raw = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StateStoreError(
                f"cannot open state store {self.display}: {_first_line(exc)}",
                hint="check that PostgreSQL runs, is reachable and accepts this user (passwords come from ~/.pgpass "
                     "or PGPASSWORD); scmt reconnects when it is back",
            ) from None
        try:
            raw.execute(f"SET lock_timeout = '{int(self.busy_timeout * 1000)}ms'")
            raw.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_SECONDS}s'")
        except psycopg.Error as exc:
            raw.close()
            raise StateStoreError(f"cannot open state store {self.display}: {_first_line(exc)}") from None
        return raw

    def reconnect(self) -> None:
        old, self.raw = self.raw, self._open()
        old.close()

    def execute(self, sql: str, params: Iterable[Any] = ()) -> psycopg.Cursor[Any]:
        text = self._sql_cache.get(sql)
        if text is None:  # the store's SQL has no literal '?' or '%'
            text = self._sql_cache.setdefault(sql, sql.replace("%", "%%").replace("?", "%s"))
        outside = not self.raw.closed and self.raw.info.transaction_status == TransactionStatus.IDLE
        try:
            return self.raw.execute(text, tuple(params))
        except psycopg.OperationalError:
            if not (outside and self.broken):
                raise
        self.reconnect()
        return self.raw.execute(text, tuple(params))

    @property
    def in_transaction(self) -> bool:
        return not self.raw.closed and self.raw.info.transaction_status != TransactionStatus.IDLE

    @property
    def broken(self) -> bool:
        return bool(self.raw.closed or self.raw.broken)

    def close(self) -> None:
        self.raw.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact_text(text[0] if text else type(exc).__name__)


class PostgresStateStore(StateStore):
    """:class:`StateStore` on PostgreSQL; open it with ``StateStore.open("postgresql://...")``."""

    _db_errors: tuple[type[Exception], ...] = (psycopg.Error,)
    #: Several migration hosts may use this store at once (``scmt sync`` splits the VMs between them).
    shared = True

    def __init__(self, conn: _PgConnection, display: str, clock: Callable[[], float]) -> None:
        super().__init__(conn, display, clock)  # type: ignore[arg-type]

    @property
    def path(self) -> str:  # type: ignore[override]
        """The store's URL (never with a password)."""
        return str(self._path)

    @property
    def schema_version(self) -> int:
        with self._mutex:
            conn = self._connection()
            try:
                return pg_schema_version(conn.raw)
            except psycopg.Error as exc:
                raise self._wrap(exc) from None

    def _connection(self) -> Any:
        conn: Any = super()._connection()
        if self._depth == 0 and conn.broken:  # the server went away: reconnect between transactions only
            conn.reconnect()
        return conn

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(?, ?)", (ADVISORY_CLASS, WRITER_LOCK))

    @staticmethod
    def _rollback(conn: Any) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except psycopg.Error:
            pass

    def _wrap(self, exc: Exception) -> StateStoreError:
        hint = None
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            hint = "another scmt process kept the state store busy; retry, or raise the busy timeout"
        elif isinstance(exc, psycopg.OperationalError):
            hint = "the PostgreSQL server is unreachable; scmt reconnects when it is back"
        return StateStoreError(f"state store {self._path}: {_first_line(exc)}", hint=hint)


def open_postgres(cls: type, url: str, *, busy_timeout: float, clock: Callable[[], float]) -> PostgresStateStore:
    """Connect to the PostgreSQL store at ``url``, creating its tables when the database is new."""
    display = check_url(url)
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise StateStoreError(f"state store URL {display} is not valid: {_first_line(exc)}") from None
    conninfo = make_conninfo(url, **{k: v for k, v in _DEFAULT_PARAMS.items() if k not in params})
    conn = _PgConnection(conninfo, display, busy_timeout)
    try:
        create_or_check_pg(conn.raw, display)
    except psycopg.Error as exc:
        conn.close()
        raise StateStoreError(f"cannot prepare state store {display}: {_first_line(exc)}") from None
    except BaseException:
        conn.close()
        raise
    return PostgresStateStore(conn, display, clock)
