"""A real TCP relay on 127.0.0.1 that can drop connections, for fault tests.

:class:`Proxy` forwards bytes between clients and an upstream ``host:port``
(TLS passes through untouched, so a pinned thumbprint still matches the
upstream's certificate).  It counts *requests* the HTTP/1.1 way: a burst of
client bytes that follows server bytes (or opens a connection) is one request.

Faults, armed by the test:

* :meth:`cut` - the next ``count`` requests (after skipping ``skip``) are cut:
  with ``after_bytes=None`` the connection is closed before the request reaches
  the server; otherwise the request is forwarded and the connection is closed
  after ``after_bytes`` bytes of its answer (the server did the work, the
  client never hears of it).
* :attr:`down` - while true, every request (and every new connection) is cut
  at once, as if the vCenter went away.

With ``tls_context`` (a server-side SSLContext) the proxy terminates TLS itself
with that certificate and talks TLS to the upstream without verifying it
(used to put an expired certificate in front of a real vcsim).
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass


@dataclass
class _Cut:
    first: int  # request number (1-based, global)
    last: int
    after_bytes: int | None


class Proxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, tls_context: ssl.SSLContext | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.tls_context = tls_context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.requests = 0
        self.connections = 0
        self.cuts_done = 0
        self.down = False
        self._cuts: list[_Cut] = []
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    # -- test controls ------------------------------------------------------------
    def cut(self, count: int = 1, *, after_bytes: int | None = None, skip: int = 0) -> None:
        with self._lock:
            first = self.requests + skip + 1
            self._cuts.append(_Cut(first, first + count - 1, after_bytes))

    def stop(self) -> None:
        self._stopped = True
        self.listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            _close(s)
        self._thread.join(timeout=5)

    # -- relay ----------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            if self.down:
                _close(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.tls_context is not None:
                client = self.tls_context.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(self.upstream, timeout=30)
            if self.tls_context is not None:
                up_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                up_ctx.check_hostname = False
                up_ctx.verify_mode = ssl.CERT_NONE
                upstream = up_ctx.wrap_socket(upstream)
        except (OSError, ssl.SSLError):
            _close(client)
            return
        with self._lock:
            self._socks.update((client, upstream))
        state = {"last": "server", "cut": None}  # who sent last; the armed cut for the answer under way
        closed = threading.Event()

        def shut() -> None:
            closed.set()
            with self._lock:
                self._socks.discard(client)
                self._socks.discard(upstream)
            _close(client)
            _close(upstream)

        def client_to_server() -> None:
            while not closed.is_set():
                try:
                    data = client.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                if state["last"] == "server":
                    with self._lock:
                        self.requests += 1
                        n = self.requests
                        armed = next((c for c in self._cuts if c.first <= n <= c.last), None)
                    state["last"], state["cut"] = "client", None
                    if self.down or (armed is not None and armed.after_bytes is None):
                        self.cuts_done += 1
                        break
                    if armed is not None:
                        state["cut"] = [armed.after_bytes]
                try:
                    upstream.sendall(data)
                except OSError:
                    break
            shut()

        def server_to_client() -> None:
            while not closed.is_set():
                try:
                    data = upstream.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                state["last"] = "server"
                budget = state["cut"]
                if budget is not None:
                    if len(data) >= budget[0]:
                        try:
                            client.sendall(data[: budget[0]])
                        except OSError:
                            pass
                        self.cuts_done += 1
                        break
                    budget[0] -= len(data)
                try:
                    client.sendall(data)
                except OSError:
                    break
            shut()

        t = threading.Thread(target=server_to_client, daemon=True)
        t.start()
        client_to_server()
        t.join(timeout=30)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
