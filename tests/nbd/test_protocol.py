"""Pure NBD parsers: known-good vectors, malformed input, and hypothesis fuzzing (parsers and the reader)."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scmt_cli.errors import ScmtError, TransportError
from scmt_cli.transports.nbd import protocol as p
from scmt_cli.transports.nbd.client import extent_kind
from scmt_cli.transports.nbd.connection import Connection
from scmt_cli.transports.nbd.handshake import Negotiated, negotiate
from scmt_cli.transports.nbd.url import NbdAddress


def test_known_vectors() -> None:
    expected = "25609513" + "0000" + "0000" + f"{7:016x}" + f"{4096:016x}" + "00000200"
    assert p.encode_request(p.CMD_READ, 7, 4096, 512).hex() == expected
    assert p.parse_simple_reply(struct.pack(">IIQ", p.SIMPLE_REPLY_MAGIC, 5, 9)) == p.SimpleReply(5, 9)
    ch = p.parse_chunk_header(struct.pack(">IHHQI", p.STRUCTURED_REPLY_MAGIC, 1, 2, 3, 12))
    assert ch == p.ChunkHeader(1, 2, 3, 12) and ch.done
    assert p.parse_offset_hole(struct.pack(">QI", 10, 20)) == (10, 20)
    assert p.parse_block_status(struct.pack(">IIIII", 1, 100, 0, 50, 3)) == (1, [(100, 0), (50, 3)])
    err = p.parse_error_chunk(p.REPLY_TYPE_ERROR_OFFSET, struct.pack(">IH", 5, 2) + b"hi" + struct.pack(">Q", 99))
    assert err == p.ChunkError(5, "hi", 99)
    assert p.parse_info_export(struct.pack(">HQH", 0, 1 << 30, 3)) == (1 << 30, 3)
    assert p.parse_info_block_size(struct.pack(">HIII", 3, 512, 4096, 1 << 25)) == (512, 4096, 1 << 25)
    assert p.parse_meta_context(struct.pack(">I", 4) + b"base:allocation") == (4, "base:allocation")
    assert p.encode_go("ab") == b"\0\0\0\x02ab\0\x02\0\0\0\x03"
    assert p.encode_meta_context("", ("base:allocation",)) == b"\0" * 4 + b"\0\0\0\x01\0\0\0\x0fbase:allocation"
    assert p.flag_names(p.TFLAG_HAS_FLAGS | p.TFLAG_READ_ONLY | p.TFLAG_CAN_MULTI_CONN) == ["read-only", "multi-conn"]


def test_extent_kinds() -> None:
    assert extent_kind(0) == "data"
    assert extent_kind(p.STATE_HOLE) == "data"  # a hole that may not read as zero
    assert extent_kind(p.STATE_ZERO) == "zero"
    assert extent_kind(p.STATE_HOLE | p.STATE_ZERO) == "hole"


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: p.parse_simple_reply(b"\0" * 16), "bad magic"),
        (lambda: p.parse_simple_reply(b"\0" * 15), "expected 16"),
        (lambda: p.parse_block_status(struct.pack(">III", 1, 0, 0)), "zero length"),
        (lambda: p.parse_block_status(b"\0" * 13), "malformed length"),
        (lambda: p.parse_error_chunk(p.REPLY_TYPE_ERROR, struct.pack(">IH", 5, 9) + b"x"), "exceeds"),
        (lambda: p.parse_error_chunk(p.REPLY_TYPE_ERROR, struct.pack(">IH", 0, 0)), "code 0"),
        (lambda: p.parse_info_block_size(struct.pack(">HIII", 3, 3, 4096, 4096)), "power of two"),
        (lambda: p.parse_option_reply(struct.pack(">QIII", p.OPTION_REPLY_MAGIC, 7, 1, 0), 8), "expected 8"),
        (lambda: p.parse_server_greeting(b"NBDMAGIC" + struct.pack(">QH", p.OLDSTYLE_MAGIC, 0)), "old-style"),
    ],
)
def test_malformed_inputs(call: object, needle: str) -> None:
    with pytest.raises(p.ProtocolError) as err:
        call()  # type: ignore[operator]
    assert needle in err.value.message
    assert isinstance(err.value, TransportError) and not err.value.transient


def test_errno_messages() -> None:
    for code, (name, _text) in p.ERRNO_TEXT.items():
        msg, transient = p.errno_message(code)
        assert msg.startswith(name)
        assert transient is (name in ("EIO", "ESHUTDOWN"))
    assert p.errno_message(4242) == ("error 4242: unknown error code", False)


PARSERS = [
    p.parse_simple_reply,
    p.parse_chunk_header,
    p.parse_offset_hole,
    p.parse_block_status,
    lambda b: p.parse_error_chunk(p.REPLY_TYPE_ERROR, b),
    lambda b: p.parse_error_chunk(p.REPLY_TYPE_ERROR_OFFSET, b),
    lambda b: p.parse_option_reply(b, p.OPT_GO),
    p.parse_info_export,
    p.parse_info_block_size,
    p.parse_meta_context,
    p.parse_export_name_reply,
    p.parse_server_reply,
    p.parse_server_greeting,
    p.reply_magic,
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PARSERS), st.binary(max_size=64))
def test_fuzz_parsers_raise_only_protocol_errors(parser: object, data: bytes) -> None:
    try:
        parser(data)  # type: ignore[operator]
    except p.ProtocolError:
        pass


def _replies() -> st.SearchStrategy[bytes]:
    """Random bytes, and random bytes behind plausible reply magics (to get past the first check)."""
    magic = st.sampled_from([p.SIMPLE_REPLY_MAGIC, p.STRUCTURED_REPLY_MAGIC]).map(lambda m: struct.pack(">I", m))
    cookie = st.just(struct.pack(">Q", 1))
    structured = st.tuples(
        st.just(struct.pack(">I", p.STRUCTURED_REPLY_MAGIC)),
        st.tuples(
            st.integers(0, 3),
            st.sampled_from([0, 1, 2, 5, p.REPLY_TYPE_ERROR, p.REPLY_TYPE_ERROR_OFFSET, 0x8003, 77]),
        ).map(lambda ft: struct.pack(">HH", *ft)),
        cookie,
        st.integers(0, 64).map(lambda n: struct.pack(">I", n)),
        st.binary(max_size=64),
    ).map(b"".join)
    return st.one_of(st.binary(max_size=96), st.tuples(magic, st.binary(max_size=96)).map(b"".join), structured)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_replies(), st.sampled_from([p.CMD_READ, p.CMD_BLOCK_STATUS, p.CMD_WRITE]))
def test_fuzz_reader_fails_cleanly(data: bytes, cmd: int) -> None:
    """Random reply bytes then EOF: the request ends with a TransportError (or valid data), never a hang."""
    ours, theirs = socket.socketpair()
    neg = Negotiated(p.ExportInfo(1 << 20, p.TFLAG_HAS_FLAGS), structured=True, allocation_context=1, used_go=True)
    conn = Connection(ours, neg, "fuzz", timeout=2.0)
    try:
        buf = memoryview(bytearray(32)) if cmd == p.CMD_READ else None
        handle = conn.submit(cmd, 0, 32, buf=buf)
        theirs.recv(1 << 16)
        theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)
        try:
            conn.wait(handle)
        except TransportError:
            pass
        assert not conn.in_flight
    finally:
        conn.close()
        theirs.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=80),
    st.binary(max_size=80).map(lambda b: struct.pack(">QQH", p.NBDMAGIC, p.IHAVEOPT, 3) + b),
))
def test_fuzz_handshake_fails_cleanly(data: bytes) -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(2.0)

    def feed() -> None:
        try:
            theirs.sendall(data)
            theirs.shutdown(socket.SHUT_WR)
            while theirs.recv(4096):
                pass
        except OSError:
            pass

    t = threading.Thread(target=feed)
    t.start()
    try:
        negotiate(ours, NbdAddress("x", socket_path="/fuzz"))
    except ScmtError:
        pass
    finally:
        ours.close()
        t.join(5)
        theirs.close()
