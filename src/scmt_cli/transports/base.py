"""The block transport contract and the URL-scheme registry.

A *source* gives a disk's size, where its data is (extents) and its bytes; a
*target* takes bytes and zeroes.  Implementations are chosen by URL scheme
(``file://``, ``nbd://``, ``nbd+unix://``, ``agent://``, ``vsphere-folder``...)
through one registry; registering a scheme twice is an error.

Every implementation passes the shared contract suite in
``tests/transports/test_contract.py``.

Contract details every implementation must honour:

* offsets and lengths are bytes; ``read(offset, length)`` returns exactly
  ``length`` bytes or raises (a short read past the end is a
  :class:`~scmt_cli.errors.SizeMismatchError`);
* ``extents()`` covers ``[offset, offset+length)`` exactly, in order, without
  gaps or overlaps; a source that knows nothing about allocation returns one
  ``data`` extent; ``zero`` and ``hole`` both read as zeroes;
* errors are :class:`~scmt_cli.errors.ScmtError` subclasses; transient ones are
  :class:`~scmt_cli.errors.TransportError` with ``transient=True``;
* objects are used from several threads only when ``thread_safe`` is true;
  otherwise the engine opens one object per worker via the factory;
* URLs in messages and ``describe()`` never contain passwords;
* ``BlockTarget.write`` accepts any bytes-like object (``bytes``,
  ``bytearray``, ``memoryview``) and keeps no reference to it after returning
  (the engine reuses its buffers).

Target factories: ``open_target(url, size=N)`` passes the number of bytes the
caller will write.  A transport that can create targets (``file://``) creates
a missing target of that size and reports ``fresh=True``; every transport
raises SizeMismatchError when an existing target is smaller.  Factories accept
and ignore keyword options they do not know.

Optional capabilities (looked up with ``getattr``; callers must work without
them, so adding them never breaks an implementation):

* ``BlockSource.readinto(offset, buf: memoryview) -> None`` fills ``buf``
  exactly (same errors as ``read``); lets the engine reuse buffers instead of
  allocating a ``bytes`` per chunk.
* ``BlockSource.changed_extents(since_token) -> (extents, new_token)``: the
  extents changed since ``since_token`` (CBT); ``None`` for a full map.
* ``BlockSource.max_connections`` / ``BlockTarget.max_connections`` (int):
  informational: how many server connections the object uses (NBD
  multi-conn).  The engine does not open extra objects; a transport that
  wants parallel connections manages them inside one ``thread_safe`` object.
* ``BlockTarget.trim(offset, length)``: discard a range (it then reads as
  zeroes); absent means "use ``write_zeroes``".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from scmt_cli.errors import UsageError, redact_url

ExtentKind = Literal["data", "zero", "hole"]


@dataclass(frozen=True, slots=True)
class Extent:
    offset: int
    length: int
    kind: ExtentKind = "data"

    @property
    def end(self) -> int:
        return self.offset + self.length


@runtime_checkable
class BlockSource(Protocol):
    """Read side of a disk."""

    @property
    def size(self) -> int: ...

    @property
    def thread_safe(self) -> bool: ...

    def describe(self) -> str:
        """The URL or path, without secrets."""

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


@runtime_checkable
class BlockTarget(Protocol):
    """Write side of a disk."""

    @property
    def size(self) -> int: ...

    @property
    def thread_safe(self) -> bool: ...

    @property
    def fresh(self) -> bool:
        """True when the target was just created and reads as all zeroes."""

    def describe(self) -> str: ...

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def write_zeroes(self, offset: int, length: int) -> None: ...

    def read(self, offset: int, length: int) -> bytes:
        """Read back (for ``--verify``)."""

    def flush(self) -> None: ...

    def close(self) -> None: ...


SourceFactory = Callable[..., BlockSource]
TargetFactory = Callable[..., BlockTarget]


@dataclass(frozen=True)
class Scheme:
    name: str
    open_source: SourceFactory | None
    open_target: TargetFactory | None
    help: str = ""


_REGISTRY: dict[str, Scheme] = {}


def register(scheme: Scheme) -> None:
    """Register a URL scheme; a second registration of the same name is an error."""
    if scheme.name in _REGISTRY:
        raise ValueError(f"transport scheme {scheme.name!r} is already registered")
    _REGISTRY[scheme.name] = scheme


def registered() -> dict[str, Scheme]:
    _load_builtin()
    return dict(_REGISTRY)


#: Built-in schemes and the module that registers each.  Opening a URL imports only the module of
#: its scheme, so a file-to-file copy never pays for the NBD client or the agent's TLS and zstd.
BUILTIN_SCHEMES: dict[str, str] = {
    "file": "scmt_cli.transports.file",
    "nbd": "scmt_cli.transports.nbd",
    "nbd+unix": "scmt_cli.transports.nbd",
    "agent": "scmt_cli.agent.transport",
}
_BUILTIN_LOCK = threading.RLock()


def _load_builtin(scheme: str | None = None) -> None:
    """Import the module registering ``scheme`` (every built-in module when None)."""
    import importlib

    modules = set(BUILTIN_SCHEMES.values()) if scheme is None else {BUILTIN_SCHEMES.get(scheme, "")} - {""}
    with _BUILTIN_LOCK:  # threads opening targets at once must not see a half-filled registry
        for mod in sorted(modules):
            importlib.import_module(mod)


def _scheme_of(url: str) -> Scheme:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"malformed URL {redact_url(url)!r}: {exc}") from None
    if parts.scheme not in _REGISTRY:
        _load_builtin(parts.scheme)
    if not parts.scheme:
        raise UsageError(
            f"not a URL: {redact_url(url)!r}",
            hint="use file:///path/to/disk.img, nbd://host:port/export or nbd+unix:///export?socket=PATH",
        )
    scheme = _REGISTRY.get(parts.scheme)
    if scheme is None:
        known = ", ".join(sorted(set(_REGISTRY) | set(BUILTIN_SCHEMES)))
        raise UsageError(f"unknown URL scheme {parts.scheme!r} in {redact_url(url)!r} (known: {known})")
    return scheme


def open_source(url: str, **options: Any) -> BlockSource:
    scheme = _scheme_of(url)
    if scheme.open_source is None:
        raise UsageError(f"{scheme.name}:// cannot be used as a source")
    return scheme.open_source(url, **options)


def open_target(url: str, **options: Any) -> BlockTarget:
    scheme = _scheme_of(url)
    if scheme.open_target is None:
        raise UsageError(f"{scheme.name}:// cannot be used as a target")
    return scheme.open_target(url, **options)
