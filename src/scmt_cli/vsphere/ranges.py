"""The data path of ``/folder`` reads: ranged GETs on kept-alive HTTPS connections, body into the caller's buffer.

Why not httpx for the body: httpx hands the body over one TLS record (16 KiB)
at a time through httpcore and h11, ~30 us of Python per record.  Measured
here reading 256 MiB from the fake vCenter on one connection: httpx 0.72-0.78 s
of client CPU, a kept-alive socket with ``recv_into`` 0.25 s.  On a 2-core host
that CPU, not the round trip, set the speed of a ``/folder`` copy.  So the
body goes through the standard library's :mod:`http.client`, whose
``readinto`` receives straight into the chunk buffer (TLS stays in OpenSSL),
and which parses the status line and headers.

Scope, deliberately narrow: ``GET`` with one ``Range``, answered ``206`` with a
``Content-Length`` and the ``Content-Range`` asked for.  Any other answer (a
``401`` to re-login, ``404``, ``416``, a server error, a ``200`` that ignored
the range, a chunked body) is left to :class:`~scmt_cli.vsphere.folder.FolderSession`,
whose httpx request maps it to the right error: :meth:`RangeReader.read_into`
returns False and the caller asks httpx.  So does a failure to connect (the
TLS and unreachable errors are classified there), and a proxy in the
environment (``HTTPS_PROXY``/``HTTP_PROXY`` for the host, which httpx honours):
then this reader is not used at all.

The TLS context is the session's own (a pinned thumbprint is checked by
``PinnedContext.wrap_socket`` on every new connection).  At most
``connections`` sockets are open; idle ones are kept for the next GET.  A
socket that fails, or whose answer was not read to the end, is closed.
Thread-safe.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import urllib.request
from urllib.parse import urlsplit

from scmt_cli.errors import TransportError

#: Errors of a connection that broke (raised by http.client, sockets and TLS).
_BROKEN = (OSError, ssl.SSLError, http.client.HTTPException)


class RangeReader:
    """Ranged GETs on a pool of kept-alive connections to the host of ``base_url``."""

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext | None, *, connections: int,
                 timeout: float) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.ctx = ssl_context if self.https else None
        self.timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, connections))
        self.connects = 0  # connections opened (tests: kept alive, not one per GET)
        self._closed = False  # after close(): a GET that ends later closes its connection instead of keeping it

    @staticmethod
    def usable(base_url: str) -> bool:
        """False when the environment routes ``base_url`` through a proxy (httpx then does every request)."""
        parts = urlsplit(base_url)
        proxies = urllib.request.getproxies()
        if parts.scheme not in proxies and "all" not in proxies:
            return True
        return bool(urllib.request.proxy_bypass(parts.hostname or ""))

    # -- connections ------------------------------------------------------------------
    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.ctx is not None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ctx)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        conn.connect()  # TLS and the pinned thumbprint are checked here, once per connection
        self.connects += 1
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- requests -------------------------------------------------------------------------
    def read_into(self, target: str, offset: int, view: memoryview, cookie: str, what: str) -> bool:
        """Fill ``view`` with bytes ``[offset, offset+len(view))`` of ``target`` (path and query).

        True when done; False when the answer (or the connection) is one for
        httpx to handle (see the module doc).  A transfer that breaks after
        the answer began is a transient TransportError.
        """
        headers = {"Cookie": cookie, "Range": f"bytes={offset}-{offset + len(view) - 1}",
                   "Accept-Encoding": "identity"}
        with self._slots:
            for _ in range(2):  # an idle connection the server closed meanwhile gets one fresh retry
                with self._lock:
                    conn = self._idle.pop() if self._idle else None
                reused = conn is not None
                if conn is None:
                    try:
                        conn = self._connect()
                    except _BROKEN:
                        return False  # httpx connects again and says why it cannot
                try:
                    done = self._exchange(conn, target, headers, offset, view, what, reused)
                except _Stale:
                    conn.close()
                    continue
                except BaseException:
                    conn.close()
                    raise
                if done is None:
                    conn.close()
                    return False
                with self._lock:
                    keep = done and not self._closed
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    conn.close()
                return True
            return False

    def _exchange(self, conn: http.client.HTTPConnection, target: str, headers: dict[str, str], offset: int,
                  view: memoryview, what: str, reused: bool) -> bool | None:
        """GET ``target`` and read a plain 206 into ``view``: True (the connection may be kept), False (done,
        close it), None (not a plain 206: nothing was written to ``view``)."""
        try:
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            if reused:
                raise _Stale from None
            raise TransportError(f"{what}: {type(exc).__name__} while reading", transient=True) from None
        except _BROKEN as exc:
            raise TransportError(f"{what}: {type(exc).__name__} while reading", transient=True) from None
        length = len(view)
        want = f"bytes {offset}-{offset + length - 1}/"
        if (resp.status != 206 or resp.chunked or resp.length != length
                or not (resp.getheader("Content-Range") or "").startswith(want)):
            return None
        got = 0
        try:
            while got < length:
                n = resp.readinto(view[got:])
                if not n:
                    raise TransportError(f"{what}: got {got} of {length} bytes", transient=True)
                got += n
        except _BROKEN as exc:
            raise TransportError(f"{what}: {type(exc).__name__} while reading", transient=True) from None
        return not resp.will_close


class _Stale(Exception):
    """A kept-alive connection the server had closed: try again on a new one."""
