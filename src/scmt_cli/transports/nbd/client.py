"""``NbdDisk``: an NBD export as a BlockSource and BlockTarget.

Thread-safety: every public method may be called from several threads at once
(``thread_safe`` is True).  Requests from all threads share a small pool of
connections: ``connections`` of them (default 4) when the server advertises
multi-conn, otherwise exactly one.  Each connection carries several requests in
flight, matched by cookie (see ``connection.py``).

Request sizes follow the server's NBD_INFO_BLOCK_SIZE: no request is larger
than its maximum (nor than 32 MiB); reads are cut into pieces of ``read_piece``
bytes (default 2 MiB) rounded to a multiple of the server's preferred size
(:func:`read_piece_size`), spread over the connections, all in flight at
once, so one large read keeps every connection busy; a read whose
offset or length is not a multiple of the server's minimum block size reads
the aligned range around it into a bounce buffer.  :meth:`NbdDisk.readinto_many`
submits the pieces of several ranges together (one round trip for all of them).
The allocation map is queried with several BLOCK_STATUS requests in flight
(see ``status.py``).
A connection that died (dropped, timed out, garbage from the server) is
replaced on the next call, so a retry after a transient error reconnects by
itself; :meth:`NbdDisk.reconnect` forces it.

Calls on a closed ``NbdDisk`` raise a *transient* TransportError: a retry
wrapper that closed it and opened a replacement while other threads were still
using the old object makes those threads retry on the new one.

``read`` returns a ``bytearray`` (a bytes-like object filled in place by the
socket, to avoid copying megabytes per call).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from scmt_cli.errors import (
    ReadOnlyTargetError,
    SizeMismatchError,
    SourceUnreachableError,
    TargetUnreachableError,
    TransportError,
    UsageError,
)
from scmt_cli.transports.base import Extent, Identity, SourceDefaults, TargetDefaults
from scmt_cli.transports.nbd import protocol as p
from scmt_cli.transports.nbd.connection import Connection, Latch, Request
from scmt_cli.transports.nbd.handshake import connect, negotiate
from scmt_cli.transports.nbd.status import extent_kind, pipelined_extents
from scmt_cli.transports.nbd.url import NbdAddress, parse_nbd_url

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECTIONS = 4
DEFAULT_READ_PIECE = 2 * 1024 * 1024
_MAX_IO = 32 * 1024 * 1024  # cap per READ/WRITE request even if the server allows more
_MAX_RANGE = (1 << 32) - (1 << 20)  # per WRITE_ZEROES / TRIM / BLOCK_STATUS request (32-bit length, aligned)

__all__ = ["NbdDisk", "extent_kind", "open_nbd_source", "open_nbd_target", "read_piece_size"]


class NbdDisk(SourceDefaults, TargetDefaults):
    """An open NBD export.  Use :func:`open_nbd_source` / :func:`open_nbd_target` or the URL registry."""

    def __init__(
        self,
        url: str | NbdAddress,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connections: int | None = None,
        structured: bool = True,
        block_status: bool = True,
        read_piece: int = DEFAULT_READ_PIECE,
    ) -> None:
        """``connections``: wanted with multi-conn (default: the URL's ``?connections=N``, else 4)."""
        self.address = parse_nbd_url(url) if isinstance(url, str) else url
        if connections is None:
            connections = self.address.connections or DEFAULT_CONNECTIONS
        if timeout <= 0 or connections < 1 or read_piece < 1:
            raise UsageError("NBD timeout must be positive and connections at least 1")
        self.timeout = timeout
        self._want = (structured, block_status)
        self._lock = threading.Lock()
        self._closed = False
        self._rr = 0
        first = self._open_connection(initial=True)
        self._info = first.negotiated.info
        n = connections if self._info.tflags & p.TFLAG_CAN_MULTI_CONN else 1
        self._conns: list[Connection] = [first]
        try:
            for _ in range(n - 1):
                self._conns.append(self._open_connection(initial=True))
        except BaseException:
            self.close()
            raise
        self._max_io = max(self._info.min_block, min(self._info.max_block, _MAX_IO))
        self._max_io -= self._max_io % self._info.min_block
        self._read_piece = read_piece_size(read_piece, self._info.min_block, self._info.preferred_block,
                                           self._max_io)

    # -- properties --------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._info.size

    @property
    def thread_safe(self) -> bool:
        return True

    @property
    def fresh(self) -> bool:
        """An NBD export already exists; its content is unknown."""
        return False

    @property
    def read_only(self) -> bool:
        return bool(self._info.tflags & p.TFLAG_READ_ONLY)

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def identity(self) -> Identity:
        """An export tells only its size; a resumed copy also re-reads a sample of what it copied."""
        return Identity({"size": self.size})

    def has(self, tflag: int) -> bool:
        """True when the export advertises transmission flag ``tflag``."""
        return bool(self._info.tflags & tflag)

    def info(self) -> dict[str, Any]:
        """What the server told us, for ``describe``-like output and tests."""
        neg = self._conns[0].negotiated
        return {
            "url": self.describe(),
            "size": self.size,
            "flags": p.flag_names(self._info.tflags),
            "block_size": {"min": self._info.min_block, "preferred": self._info.preferred_block,
                           "max": self._info.max_block},
            "structured_replies": neg.structured,
            "block_status": neg.allocation_context is not None,
            "negotiation": "go" if neg.used_go else "export_name",
            "connections": len(self._conns),
        }

    def describe(self) -> str:
        return self.address.describe()

    # -- connections ---------------------------------------------------------------
    def _open_connection(self, *, initial: bool) -> Connection:
        sock = connect(self.address, self.timeout)
        try:
            neg = negotiate(sock, self.address, want_structured=self._want[0], want_block_status=self._want[1])
        except BaseException:
            sock.close()
            raise
        if not initial:
            old = self._info
            if neg.info.size != old.size:
                sock.close()
                raise SizeMismatchError(
                    f"NBD export {self.describe()} changed size from {old.size} to {neg.info.size} bytes"
                )
            if (neg.info.tflags ^ old.tflags) & p.TFLAG_READ_ONLY:
                sock.close()
                raise TransportError(f"NBD export {self.describe()} changed its read-only flag on reconnect")
        return Connection(sock, neg, self.describe(), self.timeout)

    def _pick(self) -> Connection:
        """A live connection (replacing a dead one), preferring the least busy."""
        with self._lock:
            if self._closed:
                raise TransportError(f"NBD export {self.describe()} is closed", transient=True)
            self._rr = (self._rr + 1) % len(self._conns)
            order = self._conns[self._rr :] + self._conns[: self._rr]
            best = min(order, key=lambda c: (c.dead, c.in_flight))
            if not best.dead:
                return best
            index = self._conns.index(best)
            try:
                fresh = self._open_connection(initial=False)
            except (TransportError, SizeMismatchError):
                raise
            except Exception as exc:  # SourceUnreachableError and friends: worth a retry
                raise TransportError(f"cannot reconnect to NBD export {self.describe()}: {exc}",
                                     transient=True) from None
            best.close()
            self._conns[index] = fresh
            return fresh

    def reconnect(self) -> None:
        """Drop every connection and negotiate new ones (for a retry wrapper after a transient error)."""
        with self._lock:
            old = list(self._conns)
            new = [self._open_connection(initial=False) for _ in old]
            self._conns = new
        for c in old:
            c.close()

    def close(self) -> None:
        """Disconnect politely (NBD_CMD_DISC).  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(getattr(self, "_conns", []))
        for c in conns:
            c.close()

    def __enter__(self) -> NbdDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- I/O -------------------------------------------------------------------------
    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0:
            raise UsageError(f"negative offset or length ({offset}, {length}) for {self.describe()}")
        if offset + length > self.size:
            raise SizeMismatchError(
                f"range [{offset}, {offset + length}) is beyond the end of NBD export "
                f"{self.describe()} ({self.size} bytes)"
            )

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyTargetError(f"NBD export {self.describe()} is read-only")

    def _run(self, pieces: list[tuple[int, int, int, dict[str, Any]]]) -> None:
        """Submit (cmd, offset, length, kwargs) requests, pipelined, then wait for all of them at once.

        Every request is awaited even after a failure, so no buffer is still
        being filled when the caller sees the first error.  The requests share
        one :class:`Latch`: the calling thread is woken once, not per request.
        """
        latch = Latch(len(pieces))
        handles: list[tuple[Connection, Request]] = []
        first: BaseException | None = None
        for cmd, off, length, kw in pieces:
            try:
                conn = self._pick()
                handles.append((conn, conn.submit(cmd, off, length, latch=latch, **kw)))
            except BaseException as exc:
                first = exc
                break
        latch.count_down(len(pieces) - len(handles))  # never sent: nothing will count them
        if not latch.wait(self.timeout * 3 + 5):  # the connections enforce the timeout; this guards against bugs
            late = TransportError(f"NBD server {self.describe()} did not answer within {self.timeout:g}s",
                                  transient=True)
            for conn in {id(c): c for c, _ in handles}.values():
                conn.abort(late)  # fails what is pending and stops its reader: no buffer is filled after this
            raise late
        for _, h in handles:
            if first is None and h.error is not None:
                first = h.error
        if first is not None:
            raise first

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` (a bytearray); beyond the end is SizeMismatchError."""
        buf = bytearray(length)
        self.readinto(offset, memoryview(buf))
        return buf  # type: ignore[return-value]  # bytes-like by contract

    def readinto(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` with the bytes at ``offset`` straight from the socket (no copies)."""
        self.readinto_many([(offset, buf)])

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
        """Fill every ``(offset, buf)`` of ``ranges``; all their requests are in flight together."""
        pieces: list[tuple[int, int, int, dict[str, Any]]] = []
        bounces: list[tuple[memoryview, bytearray, int]] = []
        mb = self._info.min_block
        step = self._read_piece
        for offset, buf in ranges:
            view = memoryview(buf).cast("B")
            length = len(view)
            self._check_range(offset, length)
            if mb > 1 and (offset % mb or length % mb):
                lo = offset - offset % mb
                hi = min(self.size, -(-(offset + length) // mb) * mb)
                bounce = bytearray(hi - lo)
                bounces.append((view, bounce, offset - lo))
                offset, view, length = lo, memoryview(bounce), hi - lo
            pieces += [(p.CMD_READ, offset + i, min(step, length - i), {"buf": view[i : i + step]})
                       for i in range(0, length, step)]
        self._run(pieces)
        for view, bounce, skip in bounces:
            view[:] = memoryview(bounce)[skip : skip + len(view)]

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset``; read-only exports raise ReadOnlyTargetError before sending."""
        self._check_writable()
        view = memoryview(data).cast("B")
        self._check_range(offset, len(view))
        step = self._max_io
        self._run([
            (p.CMD_WRITE, offset + i, len(view[i : i + step]), {"payload": view[i : i + step]})
            for i in range(0, len(view), step)
        ])

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make ``[offset, offset+length)`` read as zeroes; the server may punch holes (NO_HOLE is not set).

        Without NBD_FLAG_SEND_WRITE_ZEROES, zero-filled WRITEs are sent instead.
        """
        self._check_writable()
        self._check_range(offset, length)
        if self.has(p.TFLAG_SEND_WRITE_ZEROES):
            step = _MAX_RANGE - _MAX_RANGE % self._info.min_block
            self._run([(p.CMD_WRITE_ZEROES, offset + i, min(step, length - i), {})
                       for i in range(0, length, step)])
            return
        zeros = bytes(min(self._max_io, length))
        for i in range(0, length, len(zeros) or 1):
            n = min(len(zeros), length - i)
            self.write(offset + i, memoryview(zeros)[:n])

    def trim(self, offset: int, length: int) -> None:
        """Discard ``[offset, offset+length)`` (content afterwards is unspecified); no-op without TRIM."""
        self._check_writable()
        self._check_range(offset, length)
        if not self.has(p.TFLAG_SEND_TRIM):
            return
        step = _MAX_RANGE - _MAX_RANGE % self._info.min_block
        self._run([(p.CMD_TRIM, offset + i, min(step, length - i), {}) for i in range(0, length, step)])

    def flush(self) -> None:
        """Persist completed writes (NBD_CMD_FLUSH on every connection); no-op without SEND_FLUSH."""
        if self.read_only or not self.has(p.TFLAG_SEND_FLUSH):
            return
        with self._lock:
            conns = [c for c in self._conns if not c.dead] or self._conns[:1]
        if self.has(p.TFLAG_CAN_MULTI_CONN):
            conns = conns[:1]  # multi-conn: one flush covers writes completed on every connection
        for c in conns:
            c.request(p.CMD_FLUSH, 0, 0)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        """Allocation of ``[offset, offset+length)`` from base:allocation, merged, covering it exactly.

        A server without block status (or one answering it with ENOTSUP/EINVAL,
        as nbdkit does when its plugin cannot report extents) yields ``data``
        for what it cannot describe.
        """
        if length is None:
            length = self.size - offset
        self._check_range(offset, length)
        if length == 0:
            return
        if self._conns[0].negotiated.allocation_context is None:
            yield Extent(offset, length, "data")
            return
        step = _MAX_RANGE - _MAX_RANGE % self._info.min_block

        def submit(pos: int, ask: int) -> tuple[Connection, Request]:
            conn = self._pick()
            return conn, conn.submit(p.CMD_BLOCK_STATUS, pos, ask)

        yield from pipelined_extents(submit, lambda h: h[0].wait(h[1]), offset, length, self.describe(),
                                     window=min(step, self.status_window))

    #: bytes described per BLOCK_STATUS request (several are in flight; see ``status.py``)
    status_window = 1 << 30


def read_piece_size(wanted: int, minimum: int, preferred: int, maximum: int) -> int:
    """The size of each READ a large read is cut into: ``wanted``, rounded to the server's preferred size.

    A whole multiple of the preferred block size (at least one, so a server
    preferring 4 MiB gets 4 MiB requests), never above ``maximum`` (already
    the server's maximum, capped), always a multiple of the minimum.
    """
    piece = max(wanted, preferred)
    if preferred <= maximum:
        piece -= piece % preferred
    piece = max(minimum, min(maximum, piece))
    return piece - piece % minimum


def open_nbd_source(url: str, **options: Any) -> NbdDisk:
    """Registry factory for sources.  Options: ``timeout``, ``connections``; others are ignored."""
    return NbdDisk(url, **_known(options))


def open_nbd_target(url: str, size: int | None = None, **options: Any) -> NbdDisk:
    """Registry factory for targets.

    A read-only export raises ReadOnlyTargetError, an export smaller than
    ``size`` (the source's size) SizeMismatchError, both before any write.
    """
    try:
        disk = NbdDisk(url, **_known(options))
    except SourceUnreachableError as exc:  # the same socket error, but at the writing end: its own code
        raise TargetUnreachableError(exc.message.replace("NBD server", "NBD target", 1), hint=exc.hint) from None
    if disk.read_only:
        disk.close()
        raise ReadOnlyTargetError(
            f"NBD export {disk.describe()} is read-only and cannot be a copy target",
            hint="export it writable (e.g. without nbdkit -r / qemu-nbd -r)",
        )
    if size is not None and disk.size < size:
        disk.close()
        raise SizeMismatchError(
            f"NBD export {disk.describe()} has {disk.size} bytes, smaller than the source ({size} bytes)"
        )
    return disk


def _known(options: dict[str, Any]) -> dict[str, Any]:
    keys = ("timeout", "connections", "structured", "block_status", "read_piece")
    return {k: options[k] for k in keys if options.get(k) is not None}
