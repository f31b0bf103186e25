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

Optional parts are explicit: every transport and every wrapper implements
them, answering "not supported" (``None``, ``False`` or ``{}``) where it has
none, so callers ask the interface instead of searching for attributes.
Transports inherit :class:`SourceDefaults` / :class:`TargetDefaults` for the
parts they lack; wrappers (``transports.wrappers``) forward every one of them.
The contract suite checks both.

* ``readinto(offset, buf: memoryview) -> None`` fills ``buf`` exactly (same
  errors as ``read``); lets the engine reuse buffers.  The default goes
  through ``read``.
* ``readinto_many(ranges: list[(offset, memoryview)]) -> None`` fills every
  buffer; a transport that pipelines (NBD) keeps the requests in flight
  together.  The default reads the ranges one by one through ``readinto``.
* ``identity() -> Identity | None``: which disk this is, not where it is (a
  file's device and inode, its size and mtime; an NBD export's size; a
  vSphere snapshot and its changeId).  A resumed copy compares it with the
  one its checkpoint recorded.  ``None``: the transport cannot tell.
* ``BlockSource.changed_extents(since_token) -> (extents, new_token) | None``:
  the extents changed since ``since_token`` (CBT); ``None``: not supported.
* ``BlockSource.remote_digests(chunk_size) -> list[str] | None``: the digest
  of every chunk (``blocks.digest`` algorithm and grid) computed where the
  data lives (the scmt agent); ``None``: not supported.
* ``stats() -> dict``: transport counters for the copy's statistics (the
  agent's ``bytes_on_wire``/``bytes_of_data``); ``{}`` when it has none.
* ``BlockTarget.preallocate(offset, length) -> bool``: best-effort allocation
  hint; ``False`` when unsupported.
* ``BlockTarget.punches_holes`` (bool): ``write_zeroes`` deallocates, so the
  engine punches zero runs inside data chunks instead of writing them.

Transports may have more (``trim``, ``info``...): the copy path does not use them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from scmt_cli.errors import SizeMismatchError, UsageError, redact_url

ExtentKind = Literal["data", "zero", "hole"]


@dataclass(frozen=True, slots=True)
class Extent:
    offset: int
    length: int
    kind: ExtentKind = "data"

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Identity:
    """Which disk an object is, as JSON-able ``fields`` (compared whole by a resumed copy).

    ``stable`` is False for a disk that is expected to change while it is read
    (the scmt agent serves the live disks of a running VM): a resumed copy then
    compares the fields but does not re-read a sample of the chunks it copied.
    """

    fields: dict[str, str | int | None]
    stable: bool = True

    def to_json(self) -> dict[str, str | int | None]:
        return dict(self.fields)


ChangedExtents = tuple[list[Extent], str]


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

    def readinto(self, offset: int, buf: memoryview) -> None: ...

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None: ...

    def identity(self) -> Identity | None: ...

    def changed_extents(self, since: str | None) -> ChangedExtents | None: ...

    def remote_digests(self, chunk_size: int) -> list[str] | None: ...

    def stats(self) -> dict[str, Any]: ...

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

    def identity(self) -> Identity | None: ...

    def preallocate(self, offset: int, length: int) -> bool: ...

    @property
    def punches_holes(self) -> bool: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


#: The optional parts of each side (what a wrapper must forward; the contract suite checks them).
SOURCE_OPTIONAL = ("readinto", "readinto_many", "identity", "changed_extents", "remote_digests", "stats")
TARGET_OPTIONAL = ("identity", "preallocate", "punches_holes", "stats")


class SourceDefaults:
    """The "not supported" answers of the optional source parts, for transports to inherit."""

    def readinto(self, offset: int, buf: memoryview) -> None:
        data = self.read(offset, len(buf))  # type: ignore[attr-defined]
        if len(data) != len(buf):
            raise SizeMismatchError(f"short read from {self.describe()} at {offset}: "  # type: ignore[attr-defined]
                                    f"{len(data)} of {len(buf)} bytes (did the source shrink?)")
        buf[:] = data

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
        for offset, buf in ranges:
            self.readinto(offset, buf)

    def identity(self) -> Identity | None:
        return None

    def changed_extents(self, since: str | None) -> ChangedExtents | None:
        return None

    def remote_digests(self, chunk_size: int) -> list[str] | None:
        return None

    def stats(self) -> dict[str, Any]:
        return {}


class TargetDefaults:
    """The "not supported" answers of the optional target parts, for transports to inherit."""

    def identity(self) -> Identity | None:
        return None

    def preallocate(self, offset: int, length: int) -> bool:
        return False

    @property
    def punches_holes(self) -> bool:
        return False

    def stats(self) -> dict[str, Any]:
        return {}


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
