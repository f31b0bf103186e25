"""A tiny scripted NBD server for tests: fallbacks and misbehaviour real servers never show.

It speaks just enough of the protocol: the newstyle greeting, options
(STRUCTURED_REPLY, SET_META_CONTEXT, GO, EXPORT_NAME; each can be refused), and
READ/WRITE/FLUSH/DISC over an in-memory disk with simple or structured replies.
``reply`` selects a misbehaviour for READ replies.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field

from scmt_cli.transports.nbd import protocol as p

REPLIES = ("ok", "bad_magic", "unknown_cookie", "truncated", "silent", "outside", "missing", "overlap",
           "error_eio", "error_enospc", "close")


@dataclass
class Script:
    greeting: bytes | None = None  # None: a valid fixed-newstyle greeting
    hflags: int = p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES
    go: bool = True  # False: NBD_OPT_GO answered with ERR_UNSUP
    structured: bool = False
    option_error: int | None = None  # every option (except EXPORT_NAME) answered with this error
    go_error: int | None = None
    reply: str = "ok"
    size: int = 1 << 20
    tflags: int = p.TFLAG_HAS_FLAGS | p.TFLAG_SEND_FLUSH
    data: bytearray = field(default_factory=bytearray)


def _recv(conn: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return bytes(out)


class FakeNbd:
    """Listens on 127.0.0.1 (random port); serves each connection with ``script``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        if not script.data:
            script.data = bytearray((i * 7 + 3) % 251 for i in range(script.size))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = int(self.listener.getsockname()[1])
        self.url = f"nbd://127.0.0.1:{self.port}/disk"
        self.options_seen: list[int] = []
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.listener.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def __enter__(self) -> FakeNbd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self._handshake(conn):
                self._transmit(conn)
        except (EOFError, OSError):
            pass
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _opt_reply(self, conn: socket.socket, opt: int, rtype: int, payload: bytes = b"") -> None:
        conn.sendall(p.OPTION_REPLY.pack(p.OPTION_REPLY_MAGIC, opt, rtype, len(payload)) + payload)

    def _handshake(self, conn: socket.socket) -> bool:
        s = self.script
        if s.greeting is not None:
            conn.sendall(s.greeting)
            return False
        conn.sendall(struct.pack(">QQH", p.NBDMAGIC, p.IHAVEOPT, s.hflags))
        (cflags,) = struct.unpack(">I", _recv(conn, 4))
        self.structured_on = False
        while True:
            magic, opt, length = p.OPTION_HEADER.unpack(_recv(conn, 16))
            _recv(conn, length)
            self.options_seen.append(opt)
            if opt == p.OPT_EXPORT_NAME:
                conn.sendall(struct.pack(">QH", s.size, s.tflags))
                if not cflags & p.CLIENT_FLAG_NO_ZEROES:
                    conn.sendall(bytes(124))
                return True
            if s.option_error is not None:
                self._opt_reply(conn, opt, s.option_error, b"scripted refusal")
            elif opt == p.OPT_STRUCTURED_REPLY and s.structured:
                self.structured_on = True
                self._opt_reply(conn, opt, p.REP_ACK)
            elif opt == p.OPT_GO and s.go_error is not None:
                self._opt_reply(conn, opt, s.go_error, b"no such thing here")
            elif opt == p.OPT_GO and s.go:
                self._opt_reply(conn, opt, p.REP_INFO, struct.pack(">HQH", p.INFO_EXPORT, s.size, s.tflags))
                self._opt_reply(conn, opt, p.REP_ACK)
                return True
            else:
                self._opt_reply(conn, opt, p.REP_ERR_UNSUP)

    def _transmit(self, conn: socket.socket) -> None:
        s = self.script
        while True:
            magic, flags, cmd, cookie, offset, length = p.REQUEST_HEADER.unpack(_recv(conn, 28))
            if cmd == p.CMD_DISC:
                return
            if cmd == p.CMD_WRITE:
                s.data[offset : offset + length] = _recv(conn, length)
                conn.sendall(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, cookie))
            elif cmd == p.CMD_READ:
                if self._read_reply(conn, cookie, offset, length) is False:
                    return
            else:
                conn.sendall(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, cookie))

    def _chunk(self, conn: socket.socket, cookie: int, rtype: int, payload: bytes, done: bool) -> None:
        flags = p.REPLY_FLAG_DONE if done else 0
        conn.sendall(p.STRUCTURED_HEADER.pack(p.STRUCTURED_REPLY_MAGIC, flags, rtype, cookie, len(payload)) + payload)

    def _read_reply(self, conn: socket.socket, cookie: int, offset: int, length: int) -> bool:
        mode = self.script.reply
        data = bytes(self.script.data[offset : offset + length])
        if mode == "silent":
            threading.Event().wait(30)
            return False
        if mode == "close":
            return False
        if mode == "bad_magic":
            conn.sendall(b"\xde\xad\xbe\xef" * 4)
            return True
        if mode == "unknown_cookie":
            conn.sendall(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, cookie + 1000) + data)
            return True
        if mode == "truncated":
            conn.sendall(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, cookie) + data[: length // 2])
            return False
        if mode in ("error_eio", "error_enospc"):
            errno = p.EIO if mode == "error_eio" else p.ENOSPC
            if self.structured_on:
                msg = b"scripted failure"
                self._chunk(conn, cookie, p.REPLY_TYPE_ERROR, struct.pack(">IH", errno, len(msg)) + msg, True)
            else:
                conn.sendall(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, errno, cookie))
            return True
        if not self.structured_on:
            conn.sendall(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, cookie) + data)
            return True
        half = length // 2
        if mode == "outside":
            self._chunk(conn, cookie, p.REPLY_TYPE_OFFSET_DATA, struct.pack(">Q", offset + 1) + data, True)
        elif mode == "missing":
            self._chunk(conn, cookie, p.REPLY_TYPE_OFFSET_DATA, struct.pack(">Q", offset) + data[:half], True)
        elif mode == "overlap":
            self._chunk(conn, cookie, p.REPLY_TYPE_OFFSET_DATA, struct.pack(">Q", offset) + data[: half + 1], False)
            self._chunk(conn, cookie, p.REPLY_TYPE_OFFSET_DATA, struct.pack(">Q", offset + half) + data[half:], True)
        else:  # ok: data in two chunks, second half out of order, plus a hole chunk if zeroes
            self._chunk(conn, cookie, p.REPLY_TYPE_OFFSET_DATA, struct.pack(">Q", offset + half) + data[half:], False)
            if half:
                self._chunk(conn, cookie, p.REPLY_TYPE_OFFSET_HOLE, struct.pack(">QI", offset, half), False)
            self._chunk(conn, cookie, p.REPLY_TYPE_NONE, b"", True)
        return True
