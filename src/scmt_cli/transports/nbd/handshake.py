"""Connecting to an NBD server and negotiating one export (fixed newstyle).

Order of options: ``NBD_OPT_STRUCTURED_REPLY``, ``NBD_OPT_SET_META_CONTEXT``
(``base:allocation``, only with structured replies), then ``NBD_OPT_GO`` asking
for ``NBD_INFO_EXPORT`` and ``NBD_INFO_BLOCK_SIZE``.  A server that does not
know ``NBD_OPT_GO`` (``NBD_REP_ERR_UNSUP``), or a server without fixed newstyle,
gets ``NBD_OPT_EXPORT_NAME`` instead.

Errors: a refused, unreachable or timed-out TCP/Unix connect is
:class:`SourceUnreachableError`; a server that breaks the protocol is a
:class:`ProtocolError`; option errors become one clear
:class:`TransportError` (unknown export, policy), or
:class:`NotAvailableError` when the server insists on TLS.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from scmt_cli.errors import NotAvailableError, SourceUnreachableError, TransportError
from scmt_cli.transports.nbd import protocol as p
from scmt_cli.transports.nbd.url import NbdAddress

_MAX_OPTION_REPLIES = 1024  # a server that never ends an option's replies is broken
_RCVBUF = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of a handshake."""

    info: p.ExportInfo
    structured: bool
    allocation_context: int | None  # meta context id of base:allocation, None if unavailable
    used_go: bool


def connect(addr: NbdAddress, timeout: float) -> socket.socket:
    """Open the TCP or Unix socket; unreachable servers raise SourceUnreachableError."""
    where = addr.describe()
    try:
        if addr.socket_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(addr.socket_path)
            except BaseException:
                sock.close()
                raise
        else:
            assert addr.host is not None
            sock = socket.create_connection((addr.host, addr.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _RCVBUF)
        except OSError:
            pass
    except TimeoutError:
        raise SourceUnreachableError(f"NBD server {where}: connection timed out after {timeout:g}s") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SourceUnreachableError(
            f"NBD server {where} is unreachable: {reason}",
            hint="check that the NBD server (nbdkit, qemu-nbd) is running and the host/port or socket is right",
        ) from None
    return sock


def recv_exact(sock: socket.socket, size: int, what: str) -> bytes:
    """Read exactly ``size`` bytes; EOF is a ProtocolError, a stall a transient TransportError."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError:
            raise TransportError(f"NBD server stopped answering during {what}", transient=True) from None
        except OSError as exc:
            reason = exc.strerror or exc
            raise TransportError(f"NBD connection failed during {what}: {reason}", transient=True) from None
        if n == 0:
            raise p.ProtocolError(f"NBD server closed the connection during {what} (after {got} of {size} bytes)")
        got += n
    return bytes(buf)


def _send(sock: socket.socket, data: bytes, what: str) -> None:
    try:
        sock.sendall(data)
    except TimeoutError:
        raise TransportError(f"NBD server stopped accepting data during {what}", transient=True) from None
    except OSError as exc:
        raise TransportError(f"NBD connection failed during {what}: {exc.strerror or exc}", transient=True) from None


class _OptionFailed(Exception):
    def __init__(self, rtype: int, message: str) -> None:
        super().__init__(message)
        self.rtype = rtype
        self.message = message


def _option(sock: socket.socket, option: int, data: bytes) -> list[tuple[int, bytes]]:
    """Send one option; return its non-ACK replies, or raise _OptionFailed on an error reply."""
    what = f"NBD option {option} negotiation"
    _send(sock, p.encode_option(option, data), what)
    replies: list[tuple[int, bytes]] = []
    for _ in range(_MAX_OPTION_REPLIES):
        rep = p.parse_option_reply(recv_exact(sock, p.OPTION_REPLY.size, what), option)
        payload = recv_exact(sock, rep.length, what) if rep.length else b""
        if rep.type & p.REP_FLAG_ERROR:
            msg = payload[: p.MAX_STRING].decode("utf-8", "replace").strip()
            raise _OptionFailed(rep.type, msg)
        if rep.type == p.REP_ACK:
            if rep.length:
                raise p.ProtocolError("NBD option ACK carries a payload")
            return replies
        replies.append((rep.type, payload))
    raise p.ProtocolError(f"NBD server sent more than {_MAX_OPTION_REPLIES} replies to option {option}")


def _list_exports(sock: socket.socket) -> list[str] | None:
    """Export names from NBD_OPT_LIST, or None when the server will not say."""
    try:
        replies = _option(sock, p.OPT_LIST, b"")
        return [p.parse_server_reply(payload) for rtype, payload in replies if rtype == p.REP_SERVER]
    except (_OptionFailed, TransportError):
        return None


def _abort(sock: socket.socket, error: Exception) -> Exception:
    """Tell the server we give up (NBD_OPT_ABORT, best effort) and return ``error`` to raise."""
    try:
        sock.sendall(p.encode_option(p.OPT_ABORT))
    except OSError:
        pass
    return error


def _fatal(exc: _OptionFailed, export: str, where: str, sock: socket.socket | None = None) -> Exception:
    """Turn a fatal option error into the user-facing exception (``sock`` lets us list exports)."""
    said = f" (server says: {exc.message})" if exc.message else ""
    if exc.rtype == p.REP_ERR_TLS_REQD:
        return NotAvailableError(
            f"NBD server {where} requires TLS, which scmt's NBD client does not support yet{said}",
            hint="export the disk without TLS on a trusted network, or tunnel it (e.g. over SSH)",
        )
    if exc.rtype == p.REP_ERR_UNKNOWN:
        names = _list_exports(sock) if sock is not None else None
        hint = None
        if names:
            shown = ", ".join(repr(n) for n in names[:20]) + (" ..." if len(names) > 20 else "")
            hint = f"the server offers: {shown}"
        return TransportError(f"NBD server {where} has no export named {export!r}{said}", hint=hint)
    if exc.rtype == p.REP_ERR_POLICY:
        return TransportError(f"NBD server {where} refused access to export {export!r} by policy{said}")
    if exc.rtype == p.REP_ERR_SHUTDOWN:
        return TransportError(f"NBD server {where} is shutting down{said}", transient=True)
    name = p.REP_ERROR_NAMES.get(exc.rtype, f"error 0x{exc.rtype:08x}")
    return TransportError(f"NBD server {where} rejected export {export!r}: {name}{said}")


def negotiate(
    sock: socket.socket,
    addr: NbdAddress,
    *,
    want_structured: bool = True,
    want_block_status: bool = True,
) -> Negotiated:
    """Run the handshake on a freshly connected socket and enter transmission."""
    where = addr.describe()
    export = addr.export
    hflags = p.parse_server_greeting(recv_exact(sock, 18, "NBD greeting"))
    cflags = hflags & (p.CLIENT_FLAG_FIXED_NEWSTYLE | p.CLIENT_FLAG_NO_ZEROES)
    _send(sock, struct.pack(">I", cflags), "NBD greeting")
    no_zeroes = bool(cflags & p.CLIENT_FLAG_NO_ZEROES)
    if not hflags & p.FLAG_FIXED_NEWSTYLE:
        return _export_name(sock, addr, no_zeroes, structured=False, context=None)

    structured = False
    if want_structured:
        try:
            _option(sock, p.OPT_STRUCTURED_REPLY, b"")
            structured = True
        except _OptionFailed as exc:
            if exc.rtype == p.REP_ERR_TLS_REQD:
                raise _abort(sock, _fatal(exc, export, where)) from None

    context: int | None = None
    if structured and want_block_status:
        try:
            replies = _option(sock, p.OPT_SET_META_CONTEXT, p.encode_meta_context(export, (p.BASE_ALLOCATION,)))
        except _OptionFailed as exc:
            if exc.rtype in (p.REP_ERR_TLS_REQD, p.REP_ERR_UNKNOWN):
                raise _abort(sock, _fatal(exc, export, where, sock)) from None
            replies = []
        for rtype, payload in replies:
            if rtype == p.REP_META_CONTEXT:
                cid, name = p.parse_meta_context(payload)
                if name == p.BASE_ALLOCATION:
                    context = cid

    try:
        replies = _option(sock, p.OPT_GO, p.encode_go(export))
    except _OptionFailed as exc:
        if exc.rtype == p.REP_ERR_UNSUP:
            return _export_name(sock, addr, no_zeroes, structured=structured, context=context)
        raise _abort(sock, _fatal(exc, export, where, sock)) from None

    size_flags: tuple[int, int] | None = None
    blocks = (1, 4096, p.DEFAULT_MAX_BLOCK)
    for rtype, payload in replies:
        if rtype != p.REP_INFO:
            continue  # unknown reply types to GO are ignorable
        if len(payload) < 2:
            raise p.ProtocolError("NBD_REP_INFO payload too short")
        itype = struct.unpack_from(">H", payload)[0]
        if itype == p.INFO_EXPORT:
            size_flags = p.parse_info_export(payload)
        elif itype == p.INFO_BLOCK_SIZE:
            blocks = p.parse_info_block_size(payload)
    if size_flags is None:
        raise p.ProtocolError("NBD server finished NBD_OPT_GO without sending NBD_INFO_EXPORT")
    info = p.ExportInfo(size_flags[0], size_flags[1], *blocks)
    return Negotiated(info, structured, context, used_go=True)


def _export_name(
    sock: socket.socket, addr: NbdAddress, no_zeroes: bool, *, structured: bool, context: int | None
) -> Negotiated:
    what = "NBD_OPT_EXPORT_NAME"
    _send(sock, p.encode_option(p.OPT_EXPORT_NAME, addr.export.encode()), what)
    try:
        head = recv_exact(sock, 10, what)
    except p.ProtocolError:
        raise TransportError(
            f"NBD server {addr.describe()} closed the connection when asked for export {addr.export!r} "
            "(no such export, or access refused)"
        ) from None
    size, tflags = p.parse_export_name_reply(head)
    if not no_zeroes:
        recv_exact(sock, 124, what)
    return Negotiated(p.ExportInfo(size, tflags), structured, context, used_go=False)
