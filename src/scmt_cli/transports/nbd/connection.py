"""One NBD connection in the transmission phase, with several requests in flight.

Thread-safety: :meth:`Connection.submit` and :meth:`Connection.wait` may be
called from any number of threads.  Requests are sent under a send lock (a
request header and its payload are never interleaved with another request);
one reader thread per connection receives every reply, matches it to its
request by cookie and reads data straight into that request's buffer
(``recv_into``, no intermediate copies).

Failure model:

* a server error reply fails only its request (a :class:`TransportError`,
  transient for EIO/ESHUTDOWN);
* anything that may leave the byte stream out of sync (bad magic, unknown
  cookie, a chunk outside the request, a truncated reply, EOF, a stall longer
  than ``timeout`` while requests are outstanding) fails *every* outstanding
  request and marks the connection dead; later submits fail at once.  The
  owner (:class:`~scmt_cli.transports.nbd.client.NbdDisk`) replaces dead
  connections.
* a READ completes successfully only when its data and hole chunks cover the
  requested range exactly once -- never silently wrong data.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Sequence

from scmt_cli.errors import TransportError
from scmt_cli.transports.nbd import protocol as p
from scmt_cli.transports.nbd.handshake import Negotiated

_MAX_META_PAYLOAD = 64 * 1024 * 1024
_MAX_ERROR_PAYLOAD = 6 + p.MAX_STRING + 8


class Latch:
    """Completion of a group of requests: :meth:`wait` returns once ``count`` of them completed.

    The requests of one ``readinto_many`` share one, so the caller's thread is
    woken once for all of them instead of once per request (each wake-up of a
    waiting thread costs the waker a futex call with the GIL held).
    """

    def __init__(self, count: int) -> None:
        self._left = count
        self._lock = threading.Lock()
        self._done = threading.Lock()
        if count > 0:
            self._done.acquire()

    def count_down(self, n: int = 1) -> None:
        with self._lock:
            before = self._left
            self._left -= n
        if before > 0 >= self._left:
            self._done.release()

    def wait(self, timeout: float) -> bool:
        """True once every request completed; False after ``timeout`` seconds."""
        if not self._done.acquire(timeout=timeout):
            return False
        self._done.release()
        return True


class _Request:
    __slots__ = ("cmd", "cookie", "offset", "length", "buf", "done", "latch", "error", "covered", "status",
                 "started")

    def __init__(self, cmd: int, cookie: int, offset: int, length: int, buf: memoryview | None,
                 latch: Latch | None) -> None:
        self.cmd = cmd
        self.cookie = cookie
        self.offset = offset
        self.length = length
        self.buf = buf
        self.latch = latch
        self.done = threading.Event() if latch is None else None
        self.error: TransportError | None = None
        self.covered: list[tuple[int, int]] = []
        self.status: list[tuple[int, int]] = []
        self.started = float("inf")  # set once fully sent: a slow upload is not a silent server

    def complete(self) -> None:
        if self.latch is not None:
            self.latch.count_down()
        else:
            assert self.done is not None
            self.done.set()


class Request:
    """Handle returned by :meth:`Connection.submit`; pass it to :meth:`Connection.wait`."""

    __slots__ = ("_req",)

    def __init__(self, req: _Request) -> None:
        self._req = req

    @property
    def error(self) -> TransportError | None:
        """The request's error once it completed (None: it succeeded)."""
        return self._req.error


class Connection:
    """A negotiated NBD socket plus its reader thread."""

    def __init__(self, sock: socket.socket, negotiated: Negotiated, where: str, timeout: float) -> None:
        self.sock = sock
        self.negotiated = negotiated
        self.where = where
        self.timeout = timeout
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Request] = {}
        self._cookies = itertools.count(1)
        self._dead: TransportError | None = None
        self._closing = False
        sock.settimeout(timeout)
        self._reader = threading.Thread(target=self._read_loop, name=f"nbd-reader {where}", daemon=True)
        self._reader.start()

    # -- public ---------------------------------------------------------------
    @property
    def dead(self) -> bool:
        return self._dead is not None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit(
        self,
        cmd: int,
        offset: int,
        length: int,
        *,
        flags: int = 0,
        payload: bytes | bytearray | memoryview | None = None,
        buf: memoryview | None = None,
        latch: Latch | None = None,
    ) -> Request:
        """Send one request; ``buf`` (READ) receives the data, ``payload`` (WRITE) is sent.

        With a ``latch`` the request's completion counts it down (wait on the
        latch, then read :attr:`Request.error`); without, :meth:`wait` it.  A
        request that raises here was not sent and counts nothing down.
        """
        with self._lock:
            if self._dead is not None:
                raise self._dead_error()
            if self._closing:
                raise TransportError(f"NBD connection to {self.where} is closed", transient=True)
            cookie = next(self._cookies)
            req = _Request(cmd, cookie, offset, length, buf, latch)
            self._pending[cookie] = req
        header = p.encode_request(cmd, cookie, offset, length, flags)
        try:
            with self._send_lock:
                self._send((header,) if payload is None else (header, payload))
            req.started = time.monotonic()
        except OSError as exc:
            self._fail(TransportError(f"NBD connection to {self.where} failed while sending: {_why(exc)}",
                                      transient=True))
        return Request(req)

    def wait(self, handle: Request) -> _Request:
        """Block until the request completes; raise its error, if any."""
        req = handle._req
        # The reader thread enforces the timeout; this bound only guards against bugs.
        if req.done is None:
            raise TypeError("a request submitted with a latch is waited for through the latch")
        if not req.done.wait(self.timeout * 3 + 5):
            self._fail(TransportError(f"NBD server {self.where} did not answer within {self.timeout:g}s",
                                      transient=True))
        if req.error is not None:
            raise req.error
        return req

    def abort(self, error: TransportError) -> None:
        """Fail every outstanding request with ``error`` and mark the connection dead (the owner replaces it)."""
        self._fail(error)

    def request(self, cmd: int, offset: int, length: int, **kw: object) -> _Request:
        """submit() then wait()."""
        return self.wait(self.submit(cmd, offset, length, **kw))  # type: ignore[arg-type]

    def close(self) -> None:
        """Send NBD_CMD_DISC (if still alive), stop the reader and close the socket.  Idempotent."""
        with self._lock:
            already = self._closing
            self._closing = True
        if not already and self._dead is None:
            try:
                with self._send_lock:
                    self._send((p.encode_request(p.CMD_DISC, 0, 0, 0),))
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if self._reader is not threading.current_thread():
            self._reader.join(min(self.timeout, 2.0))  # servers close right after DISC
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._fail(TransportError(f"NBD connection to {self.where} is closed", transient=True))

    # -- internals ----------------------------------------------------------------
    def _dead_error(self) -> TransportError:
        assert self._dead is not None
        return TransportError(self._dead.message, transient=self._dead.transient)

    def _send(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        views = [memoryview(x).cast("B") for x in parts if len(x)]
        while views:
            sent = self.sock.sendmsg(views)
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]

    def _fail(self, error: TransportError) -> None:
        """Mark the connection dead and fail every outstanding request.

        The first cause wins.  Called from another thread, it first shuts the
        socket down and waits for the reader to stop, so no reply can still be
        landing in a buffer the caller gets back with an error.
        """
        with self._lock:
            if self._dead is None:
                self._dead = error
            cause = self._dead
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        reader = self._reader
        if reader is not threading.current_thread() and reader.is_alive():
            reader.join(self.timeout + 5)
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for req in pending:
            if req.error is None:
                req.error = TransportError(cause.message, transient=cause.transient)
            req.complete()

    def _recv_into(self, view: memoryview, *, idle_ok: bool) -> bool:
        """Fill ``view``; False on a clean EOF/stop before the first byte when ``idle_ok``."""
        got, size = 0, len(view)
        while got < size:
            try:
                n = self.sock.recv_into(view[got:])
            except TimeoutError:
                if got == 0 and idle_ok and not self._overdue():
                    continue
                raise TransportError(f"NBD server {self.where} stopped answering (no reply for {self.timeout:g}s)",
                                     transient=True) from None
            except OSError as exc:
                if self._closing:
                    return False
                raise TransportError(f"NBD connection to {self.where} failed: {_why(exc)}", transient=True) from None
            if n == 0:
                if got == 0 and idle_ok and (self._closing or not self._pending):
                    return False
                raise TransportError(f"NBD connection to {self.where} was lost (server closed it)", transient=True)
            got += n
        return True

    def _overdue(self) -> bool:
        with self._lock:
            if not self._pending:
                return False
            oldest = min(r.started for r in self._pending.values())
        return time.monotonic() - oldest >= self.timeout

    def _lookup(self, cookie: int) -> _Request:
        with self._lock:
            req = self._pending.get(cookie)
        if req is None:
            raise p.ProtocolError(f"NBD server {self.where} replied to unknown request cookie {cookie}")
        return req

    def _finish(self, req: _Request) -> None:
        with self._lock:
            self._pending.pop(req.cookie, None)
        req.complete()

    def _read_loop(self) -> None:
        head = bytearray(p.STRUCTURED_HEADER.size)
        view = memoryview(head)
        try:
            while self._recv_into(view[: p.SIMPLE_REPLY.size], idle_ok=True):
                magic = p.reply_magic(view)
                if magic == p.SIMPLE_REPLY_MAGIC:
                    self._on_simple(p.parse_simple_reply(view[: p.SIMPLE_REPLY.size]))
                elif magic == p.STRUCTURED_REPLY_MAGIC and self.negotiated.structured:
                    self._recv_into(view[p.SIMPLE_REPLY.size :], idle_ok=False)
                    self._on_chunk(p.parse_chunk_header(view))
                else:
                    raise p.ProtocolError(
                        f"NBD server {self.where} sent a reply with bad magic 0x{magic:08x} (stream out of sync)"
                    )
        except TransportError as exc:
            self._fail(exc)
        except Exception as exc:  # never let the reader die silently
            self._fail(TransportError(f"NBD reader for {self.where} failed: {exc}"))
        else:
            self._fail(TransportError(f"NBD connection to {self.where} is closed", transient=True))

    def _on_simple(self, rep: p.SimpleReply) -> None:
        req = self._lookup(rep.cookie)
        if rep.error:
            req.error = self._server_error(req, rep.error, "")
        elif req.cmd == p.CMD_READ and req.length:
            assert req.buf is not None
            self._recv_into(req.buf, idle_ok=False)
            req.covered.append((req.offset, req.offset + req.length))
        elif req.cmd == p.CMD_BLOCK_STATUS:
            raise p.ProtocolError(f"NBD server {self.where} answered BLOCK_STATUS with a simple reply")
        self._finish(req)

    def _payload(self, length: int, cap: int, what: str) -> bytes:
        if length > cap:
            raise p.ProtocolError(f"NBD {what} chunk from {self.where} is too large ({length} bytes)")
        buf = bytearray(length)
        if length:
            self._recv_into(memoryview(buf), idle_ok=False)
        return bytes(buf)

    def _on_chunk(self, ch: p.ChunkHeader) -> None:
        req = self._lookup(ch.cookie)
        if ch.type == p.REPLY_TYPE_OFFSET_DATA:
            self._on_data(req, ch.length)
        elif ch.type == p.REPLY_TYPE_OFFSET_HOLE:
            if req.cmd != p.CMD_READ:
                raise p.ProtocolError(f"NBD server {self.where} sent a hole chunk for a non-READ request")
            off, size = p.parse_offset_hole(self._payload(ch.length, 12, "OFFSET_HOLE"))
            start = self._check_range(req, off, size)
            assert req.buf is not None
            _zero(req.buf[start : start + size])
            req.covered.append((off, off + size))
        elif ch.type == p.REPLY_TYPE_BLOCK_STATUS:
            if req.cmd != p.CMD_BLOCK_STATUS:
                raise p.ProtocolError(f"NBD server {self.where} sent block status for a non-BLOCK_STATUS request")
            cid, descs = p.parse_block_status(self._payload(ch.length, _MAX_META_PAYLOAD, "BLOCK_STATUS"))
            if cid == self.negotiated.allocation_context:
                req.status.extend(descs)
        elif ch.type & p.REPLY_TYPE_ERROR_BIT:
            err = p.parse_error_chunk(ch.type, self._payload(ch.length, _MAX_ERROR_PAYLOAD, "error"))
            if req.error is None:
                req.error = self._server_error(req, err.error, err.message, err.offset)
        elif ch.type == p.REPLY_TYPE_NONE:
            if ch.length or not ch.done:
                raise p.ProtocolError(f"NBD server {self.where} sent a malformed NONE chunk")
        else:
            raise p.ProtocolError(f"NBD server {self.where} sent unknown reply chunk type {ch.type}")
        if ch.done:
            if req.error is None and req.cmd == p.CMD_READ:
                self._check_coverage(req)
            self._finish(req)

    def _on_data(self, req: _Request, length: int) -> None:
        if req.cmd != p.CMD_READ or req.buf is None:
            raise p.ProtocolError(f"NBD server {self.where} sent data for a non-READ request")
        if length <= 8:
            raise p.ProtocolError(f"NBD OFFSET_DATA chunk from {self.where} too short ({length} bytes)")
        off = int.from_bytes(self._payload(8, 8, "OFFSET_DATA"), "big")
        size = length - 8
        start = self._check_range(req, off, size)
        self._recv_into(req.buf[start : start + size], idle_ok=False)
        req.covered.append((off, off + size))

    def _check_range(self, req: _Request, off: int, size: int) -> int:
        if off < req.offset or off + size > req.offset + req.length:
            raise p.ProtocolError(
                f"NBD server {self.where} sent a chunk [{off}, {off + size}) outside the request "
                f"[{req.offset}, {req.offset + req.length})"
            )
        return off - req.offset

    def _check_coverage(self, req: _Request) -> None:
        pos = req.offset
        for start, end in sorted(req.covered):
            if start != pos:
                what = "overlapping" if start < pos else "missing"
                raise p.ProtocolError(f"NBD server {self.where} sent {what} data for READ at offset {pos}")
            pos = end
        if pos != req.offset + req.length:
            raise p.ProtocolError(f"NBD server {self.where} sent incomplete data for READ (ends at {pos})")

    def _server_error(self, req: _Request, errno: int, detail: str, offset: int | None = None) -> TransportError:
        text, transient = p.errno_message(errno)
        cmd = p.CMD_NAMES.get(req.cmd, str(req.cmd))
        at = f" at offset {offset}" if offset is not None else ""
        said = f" ({detail})" if detail else ""
        return p.ServerError(
            f"NBD {cmd} of {req.length} bytes at offset {req.offset} on {self.where} failed{at}: {text}{said}",
            errno=errno,
            transient=transient,
        )


_ZEROS = bytes(1 << 20)


def _zero(view: memoryview) -> None:
    for i in range(0, len(view), len(_ZEROS)):
        n = min(len(_ZEROS), len(view) - i)
        view[i : i + n] = _ZEROS[:n]


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
