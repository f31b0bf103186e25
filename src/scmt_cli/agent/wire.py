"""Reading whole frames from a socket (the blocking half of :mod:`scmt_cli.agent.protocol`)."""

from __future__ import annotations

import socket

from scmt_cli.agent import protocol as p


def recv_exact(conn: socket.socket, n: int) -> bytes | None:
    """``n`` bytes, or None when the peer closed before the first byte; a mid-frame close is a ProtocolError."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = conn.recv_into(view[got:])
        if k == 0:
            if got == 0:
                return None
            raise p.ProtocolError("connection closed in the middle of a frame")
        got += k
    return bytes(buf)


def read_frame(conn: socket.socket) -> p.Frame | None:
    """The next frame (checksum verified), or None at a clean end of stream."""
    head = recv_exact(conn, p.HEADER_SIZE)
    if head is None:
        return None
    header = p.decode_header(head)
    payload = recv_exact(conn, header.length) if header.length else b""
    if payload is None:
        raise p.ProtocolError("connection closed in the middle of a frame")
    return p.check_frame(head, header, payload)
