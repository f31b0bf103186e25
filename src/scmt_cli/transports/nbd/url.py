"""Parsing of ``nbd://`` and ``nbd+unix://`` URLs.

* ``nbd://host[:port]/export`` -- TCP, port 10809 by default, IPv6 hosts in
  brackets; the export name is the URL path without its leading ``/``
  (percent-decoded; empty means the server's default export).
* ``nbd+unix:///export?socket=PATH`` -- a Unix domain socket; no host part.
* ``?connections=N`` (both forms, 1 to 16): how many connections to open when
  the server advertises multi-conn (default 4); a server without multi-conn
  always gets exactly one.  It says how the export is reached, not which
  export it is, so :meth:`NbdAddress.describe` leaves it out (checkpoints and
  manifests keyed by the description stay valid when it changes).

Anything else (a bad port, a missing host or socket, credentials, unknown query
parameters, TLS schemes) is a :class:`~scmt_cli.errors.UsageError` naming the URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

from scmt_cli.errors import UsageError, redact_url

DEFAULT_PORT = 10809
MAX_CONNECTIONS = 16
_EXAMPLES = "use nbd://host[:port]/export or nbd+unix:///export?socket=/path/to/socket"


@dataclass(frozen=True, slots=True)
class NbdAddress:
    """Where an NBD export lives.  Exactly one of ``host`` and ``socket_path`` is set."""

    export: str
    host: str | None = None
    port: int = DEFAULT_PORT
    socket_path: str | None = None
    connections: int | None = None  # ?connections=N, None when the URL does not say

    def describe(self) -> str:
        """A URL for messages (NBD URLs never carry secrets)."""
        name = quote(self.export, safe="/:@")
        if self.socket_path is not None:
            return f"nbd+unix:///{name}?socket={quote(self.socket_path, safe='/:@')}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"nbd://{host}:{self.port}/{name}"


def _bad(url: str, why: str) -> UsageError:
    return UsageError(f"malformed NBD URL {redact_url(url)!r}: {why}", hint=_EXAMPLES)


def parse_nbd_url(url: str) -> NbdAddress:
    """Parse ``url`` into an :class:`NbdAddress` or raise :class:`UsageError`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _bad(url, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("nbd", "nbd+unix"):
        raise _bad(url, f"scheme {parts.scheme!r} is not supported (TLS schemes are not available yet)")
    if parts.username is not None or parts.password is not None:
        raise _bad(url, "NBD URLs take no user name or password")
    if parts.fragment:
        raise _bad(url, "unexpected '#' fragment")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise _bad(url, f"cannot parse query {parts.query!r}") from None
    allowed = {"socket", "connections"} if scheme == "nbd+unix" else {"connections"}
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise _bad(url, f"unknown query parameter(s): {', '.join(unknown)}")
    conns = _connections(url, query.get("connections"))
    path = parts.path
    if path and not path.startswith("/"):
        raise _bad(url, "the export name must follow a '/'")
    export = unquote(path[1:])
    if "\0" in export or len(export.encode()) > 4096:
        raise _bad(url, "export name contains NUL or is longer than 4096 bytes")
    if scheme == "nbd":
        host = parts.hostname
        if not host:
            raise _bad(url, "missing host")
        if port == 0:
            raise _bad(url, "port 0 is not valid")
        return NbdAddress(export=export, host=host, port=port or DEFAULT_PORT, connections=conns)
    if parts.netloc:
        raise _bad(url, "nbd+unix:// URLs take no host; write nbd+unix:///export?socket=PATH")
    sockets = query.get("socket", [])
    if len(sockets) != 1 or not sockets[0]:
        raise _bad(url, "exactly one non-empty socket=PATH parameter is required")
    return NbdAddress(export=export, socket_path=sockets[0], connections=conns)


def _connections(url: str, values: list[str] | None) -> int | None:
    if values is None:
        return None
    if len(values) != 1 or not values[0].isdigit() or not 1 <= int(values[0]) <= MAX_CONNECTIONS:
        raise _bad(url, f"connections= takes one whole number from 1 to {MAX_CONNECTIONS}")
    return int(values[0])
