"""The migration host's side of the agent protocol: a pipelined, thread-safe connection.

:class:`AgentConnection` authenticates (see :mod:`scmt_cli.agent.protocol`),
then sends requests from any thread; a reader thread matches replies to
requests by id, so several requests are in flight at once.  A lost
connection, a corrupted frame or a protocol violation fails every pending
request with a transient :class:`~scmt_cli.errors.TransportError` and makes
the connection unusable (the retry wrapper reconnects).

Counters: ``wire_bytes`` (DATA payload bytes received, as sent: compressed)
and ``data_bytes`` (the bytes they decoded to).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import queue
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any

from scmt_cli.agent import protocol as p
from scmt_cli.agent.wire import read_frame
from scmt_cli.errors import (
    AuthenticationError,
    ConfigError,
    ScmtError,
    SizeMismatchError,
    SourceUnreachableError,
    TLSVerificationError,
    TransportError,
    UsageError,
)

CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 300.0


@dataclass(frozen=True)
class ClientTLS:
    """TLS to the agent: pin the certificate's SHA-256 ``fingerprint`` (hex, colons optional) and/or
    verify it against ``ca_file`` (host name checked)."""

    fingerprint: str | None = None
    ca_file: str | None = None

    def normalized(self) -> str | None:
        return self.fingerprint.replace(":", "").lower() if self.fingerprint else None


def _wrap_tls(sock: socket.socket, host: str, tls: ClientTLS, where: str) -> socket.socket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca_file:
        try:
            ctx.load_verify_locations(tls.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}: cannot load the CA file {tls.ca_file}: {exc}") from None
    else:  # the fingerprint pin below is the verification
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        wrapped = ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise TLSVerificationError(f"{where}: the agent's certificate is not trusted: {exc.verify_message}") from None
    except (ssl.SSLError, OSError) as exc:
        raise SourceUnreachableError(f"{where}: TLS handshake with the agent failed: {exc}",
                                     hint="is the agent started with --tls-cert/--tls-key?") from None
    want = tls.normalized()
    if want is not None:
        der = wrapped.getpeercert(binary_form=True) or b""
        got = hashlib.sha256(der).hexdigest()
        if not hmac.compare_digest(got, want):
            wrapped.close()
            raise TLSVerificationError(f"{where}: the agent's certificate fingerprint is {got}, "
                                       "not the pinned one", hint="check fingerprint= (SHA-256 of the certificate)")
    return wrapped


@dataclass
class _Pending:
    event: threading.Event
    frame: p.Frame | None = None
    error: ScmtError | None = None


def _error_from(frame: p.Frame, where: str) -> ScmtError:
    """The ScmtError for an ERROR frame."""
    try:
        body = p.decode_json(frame.payload)
        code = int(body.get("code", 0))
        message = str(body.get("message", ""))[:500]
    except (p.ProtocolError, ValueError, TypeError):
        code, message = 0, "malformed error reply"
    text = f"{where}: agent error: {message or p.ERROR_NAMES.get(code, 'unknown error')}"
    if code == p.E_AUTH:
        return AuthenticationError(f"{where}: the agent refused the token (authentication failed)",
                                   hint="check the token file or variable: it must hold the agent's token")
    if code == p.E_NO_SUCH_DISK:
        return UsageError(text)
    if code == p.E_OUT_OF_RANGE:
        return SizeMismatchError(text)
    if code in (p.E_BUSY, p.E_IO):
        return TransportError(text, transient=code == p.E_BUSY)
    return TransportError(text)


class AgentConnection:
    """One authenticated connection to an agent.  Thread-safe."""

    def __init__(self, host: str, port: int, token: bytes, *, where: str, tls: ClientTLS | None = None) -> None:
        self.where = where
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._streams: dict[int, queue.SimpleQueue[p.Frame | ScmtError]] = {}
        self._next_id = 1
        self._dead: ScmtError | None = None
        self.wire_bytes = 0
        self.data_bytes = 0
        try:
            self._sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise SourceUnreachableError(f"{where}: cannot connect to the agent: {exc.strerror or exc}",
                                         hint="is `scmt agent serve` running there, and the port open?") from None
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                self._sock = _wrap_tls(self._sock, host, tls, where)
            self._handshake(token)
            self._sock.settimeout(None)
        except BaseException:
            self._sock.close()
            raise
        self._reader = threading.Thread(target=self._read_loop, name="scmt-agent-reader", daemon=True)
        self._reader.start()

    # -- handshake -----------------------------------------------------------------
    def _recv_frame(self) -> p.Frame:
        frame = read_frame(self._sock)
        if frame is None:
            raise p.ProtocolError("the agent closed the connection")
        return frame

    def _handshake(self, token: bytes) -> None:
        client_nonce = os.urandom(p.NONCE_SIZE)
        try:
            self._sock.sendall(p.encode_frame(p.T_HELLO, 0, p.encode_json(
                {"version": p.VERSION, "client_nonce": client_nonce.hex()})))
            challenge = self._recv_frame()
            if challenge.type == p.T_ERROR:
                raise _error_from(challenge, self.where)
            if challenge.type != p.T_CHALLENGE:
                raise p.ProtocolError("expected CHALLENGE")
            server_nonce = p.hex_field(p.decode_json(challenge.payload), "server_nonce", p.NONCE_SIZE)
            mac = p.client_mac(token, server_nonce, client_nonce)
            self._sock.sendall(p.encode_frame(p.T_AUTH, 0, p.encode_json({"mac": mac.hex()})))
            reply = self._recv_frame()
            if reply.type == p.T_ERROR:
                raise _error_from(reply, self.where)
            if reply.type != p.T_AUTH | p.REPLY:
                raise p.ProtocolError("expected the AUTH reply")
            proof = p.hex_field(p.decode_json(reply.payload), "mac", 32)
            if not p.macs_equal(proof, p.server_mac(token, server_nonce, client_nonce)):
                raise AuthenticationError(f"{self.where}: the agent could not prove it knows the token "
                                          "(wrong agent, or a different token)")
        except p.ProtocolError as exc:
            raise SourceUnreachableError(f"{self.where}: agent handshake failed: {exc}",
                                         hint="an agent started with --tls-cert needs fingerprint= or ca_file= "
                                              "in the URL") from None
        except TimeoutError:
            raise SourceUnreachableError(f"{self.where}: the agent did not answer the handshake") from None
        except OSError as exc:
            raise SourceUnreachableError(f"{self.where}: agent handshake failed: {exc.strerror or exc}") from None

    # -- requests --------------------------------------------------------------------
    def _read_loop(self) -> None:
        err: ScmtError
        try:
            while True:
                frame = self._recv_frame()
                with self._lock:
                    stream = self._streams.get(frame.request_id)
                    pend = self._pending.pop(frame.request_id, None) if stream is None else None
                if stream is not None:
                    stream.put(frame)
                    continue
                if pend is None:
                    raise p.ProtocolError(f"reply to unknown request {frame.request_id}")
                pend.frame = frame
                pend.event.set()
        except p.ChecksumError as exc:
            err = TransportError(f"{self.where}: {exc}", transient=True)
        except p.ProtocolError as exc:
            err = TransportError(f"{self.where}: connection to the agent lost: {exc}", transient=True)
        except OSError as exc:
            err = TransportError(f"{self.where}: connection to the agent lost: {exc.strerror or exc}",
                                 transient=True)
        with self._lock:
            self._dead = err
            pending, self._pending = self._pending, {}
            streams = list(self._streams.values())
        for q in streams:
            q.put(err)
        for pend in pending.values():
            pend.error = err
            pend.event.set()

    def request(self, ftype: int, body: dict[str, Any]) -> p.Frame:
        """Send one request and wait for its reply; an ERROR reply raises its ScmtError."""
        pend = _Pending(threading.Event())
        with self._lock:
            if self._dead is not None:
                raise self._dead
            rid = self._next_id
            self._next_id += 1
            self._pending[rid] = pend
        data = p.encode_frame(ftype, rid, p.encode_json(body))
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError as exc:
            with self._lock:
                self._pending.pop(rid, None)
            raise TransportError(f"{self.where}: cannot send to the agent: {exc.strerror or exc}",
                                 transient=True) from None
        if not pend.event.wait(REPLY_TIMEOUT):
            with self._lock:
                self._pending.pop(rid, None)
            raise TransportError(f"{self.where}: the agent did not answer within {REPLY_TIMEOUT:.0f} s",
                                 transient=True)
        if pend.error is not None:
            raise pend.error
        assert pend.frame is not None
        if pend.frame.type == p.T_ERROR:
            raise _error_from(pend.frame, self.where)
        if pend.frame.type != ftype | p.REPLY:
            raise TransportError(f"{self.where}: the agent answered with frame type {pend.frame.type}",
                                 transient=True)
        return pend.frame

    def json(self, ftype: int, body: dict[str, Any]) -> dict[str, Any]:
        frame = self.request(ftype, body)
        try:
            return p.decode_json(frame.payload)
        except p.ProtocolError as exc:
            raise TransportError(f"{self.where}: {exc}", transient=True) from None

    def read(self, disk: str, offset: int, length: int, *, compress: bool = True) -> bytes:
        """``length`` bytes of ``disk``; ``compress=False`` asks the agent not to zstd them."""
        body: dict[str, Any] = {"disk": disk, "offset": offset, "length": length}
        if not compress:
            body["compress"] = False
        frame = self.request(p.T_READ, body)
        try:
            data = p.unpack_data(frame.payload, frame.flags, length)
        except p.ProtocolError as exc:
            raise TransportError(f"{self.where}: {exc}", transient=True) from None
        with self._lock:
            self.wire_bytes += len(frame.payload)
            self.data_bytes += length
        return data

    def watch(self, disk: str, chunk_size: int, interval: float) -> WatchStream:
        """Start a WATCH stream (see :mod:`scmt_cli.agent.protocol`); replies go to the returned stream."""
        q: queue.SimpleQueue[p.Frame | ScmtError] = queue.SimpleQueue()
        with self._lock:
            if self._dead is not None:
                raise self._dead
            rid = self._next_id
            self._next_id += 1
            self._streams[rid] = q
        body = {"disk": disk, "chunk_size": chunk_size, "interval": interval}
        try:
            with self._send_lock:
                self._sock.sendall(p.encode_frame(p.T_WATCH, rid, p.encode_json(body)))
        except OSError as exc:
            raise TransportError(f"{self.where}: cannot send to the agent: {exc.strerror or exc}",
                                 transient=True) from None
        return WatchStream(self, q)

    def close(self) -> None:
        try:
            with self._send_lock:
                self._sock.sendall(p.encode_frame(p.T_BYE, 0, b"{}"))
        except OSError:
            pass
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)


class WatchStream:
    """The pushed change notices of one WATCH request (its own connection; close it when done)."""

    def __init__(self, conn: AgentConnection, q: queue.SimpleQueue[p.Frame | ScmtError]) -> None:
        self.conn = conn
        self._q = q
        self.ready = False
        self.error: ScmtError | None = None
        self.rounds = 0

    def _take(self, item: p.Frame | ScmtError, out: set[int]) -> None:
        if isinstance(item, ScmtError):
            self.error = item
            return
        if item.type == p.T_ERROR:
            self.error = _error_from(item, self.conn.where)
            return
        try:
            body = p.decode_json(item.payload)
            changed = body.get("changed", [])
            rnd = int(body.get("round", 0))
        except (p.ProtocolError, TypeError, ValueError) as exc:
            self.error = TransportError(f"{self.conn.where}: bad WATCH push: {exc}", transient=True)
            return
        if not isinstance(changed, list) or not all(isinstance(i, int) and i >= 0 for i in changed):
            self.error = TransportError(f"{self.conn.where}: bad WATCH push", transient=True)
            return
        if rnd == 0:
            self.ready = True
        self.rounds = max(self.rounds, rnd)
        out.update(changed)

    def wait_ready(self, timeout: float) -> None:
        """Block until the agent has hashed its baseline (round 0); raise the stream's error if it failed."""
        sink: set[int] = set()
        while not self.ready:
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                raise TransportError(f"{self.conn.where}: the agent's watcher did not start within "
                                     f"{timeout:.0f} s", transient=True) from None
            self._take(item, sink)
            if self.error is not None:
                raise self.error

    def drain(self) -> set[int]:
        """The chunk indices pushed since the last drain (without waiting); raises if the stream broke."""
        out: set[int] = set()
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            self._take(item, out)
        if self.error is not None:
            raise self.error
        return out

    def close(self) -> None:
        self.conn.close()
