"""NBD wire constants and pure encode/decode functions (no socket I/O).

Everything here works on ``bytes``-like values and is safe to feed arbitrary
input: decoders raise :class:`ProtocolError` (a permanent
:class:`~scmt_cli.errors.TransportError`) on anything malformed and never loop
on their input.  The socket side lives in ``handshake.py`` and ``connection.py``.

Constants follow the NBD protocol document (fixed-newstyle negotiation,
structured replies, the ``base:allocation`` metadata context).  All integers on
the wire are big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from scmt_cli.errors import TransportError

# --- handshake -------------------------------------------------------------
NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT" (newstyle)
OLDSTYLE_MAGIC = 0x00420281861253
OPTION_REPLY_MAGIC = 0x0003E889045565A9

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
CLIENT_FLAG_FIXED_NEWSTYLE = 1 << 0
CLIENT_FLAG_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
REP_ERR_UNSUP = REP_FLAG_ERROR | 1
REP_ERR_POLICY = REP_FLAG_ERROR | 2
REP_ERR_INVALID = REP_FLAG_ERROR | 3
REP_ERR_PLATFORM = REP_FLAG_ERROR | 4
REP_ERR_TLS_REQD = REP_FLAG_ERROR | 5
REP_ERR_UNKNOWN = REP_FLAG_ERROR | 6
REP_ERR_SHUTDOWN = REP_FLAG_ERROR | 7
REP_ERR_BLOCK_SIZE_REQD = REP_FLAG_ERROR | 8
REP_ERR_TOO_BIG = REP_FLAG_ERROR | 9

REP_ERROR_NAMES = {
    REP_ERR_UNSUP: "option not supported by the server",
    REP_ERR_POLICY: "refused by server policy",
    REP_ERR_INVALID: "invalid option request",
    REP_ERR_PLATFORM: "not supported on the server's platform",
    REP_ERR_TLS_REQD: "the server requires TLS",
    REP_ERR_UNKNOWN: "no such export on the server",
    REP_ERR_SHUTDOWN: "the server is shutting down",
    REP_ERR_BLOCK_SIZE_REQD: "the server requires block size negotiation",
    REP_ERR_TOO_BIG: "request too big for the server",
}

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# --- transmission flags (per export) ----------------------------------------
TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3
TFLAG_ROTATIONAL = 1 << 4
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6
TFLAG_SEND_DF = 1 << 7
TFLAG_CAN_MULTI_CONN = 1 << 8
TFLAG_SEND_RESIZE = 1 << 9
TFLAG_SEND_CACHE = 1 << 10
TFLAG_SEND_FAST_ZERO = 1 << 11

TFLAG_NAMES = {
    TFLAG_READ_ONLY: "read-only",
    TFLAG_SEND_FLUSH: "flush",
    TFLAG_SEND_FUA: "fua",
    TFLAG_ROTATIONAL: "rotational",
    TFLAG_SEND_TRIM: "trim",
    TFLAG_SEND_WRITE_ZEROES: "write-zeroes",
    TFLAG_SEND_DF: "df",
    TFLAG_CAN_MULTI_CONN: "multi-conn",
    TFLAG_SEND_RESIZE: "resize",
    TFLAG_SEND_CACHE: "cache",
    TFLAG_SEND_FAST_ZERO: "fast-zero",
}

# --- transmission ----------------------------------------------------------
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_NAMES = {
    CMD_READ: "READ",
    CMD_WRITE: "WRITE",
    CMD_DISC: "DISC",
    CMD_FLUSH: "FLUSH",
    CMD_TRIM: "TRIM",
    CMD_CACHE: "CACHE",
    CMD_WRITE_ZEROES: "WRITE_ZEROES",
    CMD_BLOCK_STATUS: "BLOCK_STATUS",
}

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4

REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) | 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2
REPLY_TYPE_ERROR_BIT = 1 << 15

STATE_HOLE = 1 << 0
STATE_ZERO = 1 << 1

BASE_ALLOCATION = "base:allocation"

# NBD error numbers (fixed by the protocol, independent of the host errno).
EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108

ERRNO_TEXT = {
    EPERM: ("EPERM", "operation not permitted"),
    EIO: ("EIO", "input/output error on the server"),
    ENOMEM: ("ENOMEM", "the server is out of memory"),
    EINVAL: ("EINVAL", "invalid request"),
    ENOSPC: ("ENOSPC", "no space left on the server's storage"),
    EOVERFLOW: ("EOVERFLOW", "request too large or beyond the end of the export"),
    ENOTSUP: ("ENOTSUP", "operation not supported by the server"),
    ESHUTDOWN: ("ESHUTDOWN", "the server is shutting down"),
}
TRANSIENT_ERRNOS = frozenset({EIO, ESHUTDOWN})

REQUEST_HEADER = struct.Struct(">IHHQQI")  # magic flags type cookie offset length (28 bytes)
SIMPLE_REPLY = struct.Struct(">IIQ")  # magic error cookie (16 bytes)
STRUCTURED_HEADER = struct.Struct(">IHHQI")  # magic flags type cookie length (20 bytes)
OPTION_HEADER = struct.Struct(">QII")  # IHAVEOPT option length (16 bytes)
OPTION_REPLY = struct.Struct(">QIII")  # magic option type length (20 bytes)

MAX_STRING = 4096  # protocol limit for names and messages
DEFAULT_MAX_BLOCK = 32 * 1024 * 1024  # payload limit when the server states none
MAX_OPTION_PAYLOAD = 16 * 1024 * 1024  # sanity cap for option replies


class ProtocolError(TransportError):
    """The peer broke the NBD protocol (bad magic, truncated or inconsistent reply)."""

    def __init__(self, message: str, *, transient: bool = False, **kw: object) -> None:
        super().__init__(message, transient=transient, **kw)


class ServerError(TransportError):
    """The server answered a request with an NBD error code (``errno``)."""

    def __init__(self, message: str, *, errno: int, transient: bool = False, **kw: object) -> None:
        super().__init__(message, transient=transient, **kw)
        self.errno = errno


@dataclass(frozen=True, slots=True)
class SimpleReply:
    error: int
    cookie: int


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    flags: int
    type: int
    cookie: int
    length: int

    @property
    def done(self) -> bool:
        return bool(self.flags & REPLY_FLAG_DONE)


@dataclass(frozen=True, slots=True)
class OptionReply:
    option: int
    type: int
    length: int


@dataclass(frozen=True, slots=True)
class ChunkError:
    error: int
    message: str
    offset: int | None = None


def flag_names(tflags: int) -> list[str]:
    """Human names of the transmission flags set in ``tflags``."""
    return [name for bit, name in TFLAG_NAMES.items() if tflags & bit]


def encode_request(cmd: int, cookie: int, offset: int, length: int, flags: int = 0) -> bytes:
    """The 28-byte request header (payload, if any, is sent after it)."""
    return REQUEST_HEADER.pack(REQUEST_MAGIC, flags, cmd, cookie, offset, length)


def encode_option(option: int, data: bytes = b"") -> bytes:
    """One option request: IHAVEOPT, option number, length, data."""
    return OPTION_HEADER.pack(IHAVEOPT, option, len(data)) + data


def encode_go(export: str, info_requests: tuple[int, ...] = (INFO_EXPORT, INFO_BLOCK_SIZE)) -> bytes:
    """Payload of NBD_OPT_GO / NBD_OPT_INFO."""
    name = export.encode()
    return (
        struct.pack(">I", len(name))
        + name
        + struct.pack(">H", len(info_requests))
        + b"".join(struct.pack(">H", i) for i in info_requests)
    )


def encode_meta_context(export: str, queries: tuple[str, ...]) -> bytes:
    """Payload of NBD_OPT_SET_META_CONTEXT / LIST_META_CONTEXT."""
    name = export.encode()
    out = [struct.pack(">I", len(name)), name, struct.pack(">I", len(queries))]
    for q in queries:
        qb = q.encode()
        out += [struct.pack(">I", len(qb)), qb]
    return b"".join(out)


def _need(data: bytes | bytearray | memoryview, size: int, what: str) -> None:
    if len(data) != size:
        raise ProtocolError(f"NBD {what}: expected {size} bytes, got {len(data)}")


def parse_simple_reply(data: bytes | bytearray | memoryview) -> SimpleReply:
    """Decode a 16-byte simple reply header; the magic must be the simple-reply magic."""
    _need(data, SIMPLE_REPLY.size, "simple reply")
    magic, error, cookie = SIMPLE_REPLY.unpack(data)
    if magic != SIMPLE_REPLY_MAGIC:
        raise ProtocolError(f"NBD reply has bad magic 0x{magic:08x} (not an NBD server, or stream out of sync)")
    return SimpleReply(error, cookie)


def reply_magic(data: bytes | bytearray | memoryview) -> int:
    """The 32-bit magic that starts every transmission reply."""
    if len(data) < 4:
        raise ProtocolError("NBD reply truncated before its magic")
    return int(struct.unpack_from(">I", data)[0])


def parse_chunk_header(data: bytes | bytearray | memoryview) -> ChunkHeader:
    """Decode a 20-byte structured reply chunk header."""
    _need(data, STRUCTURED_HEADER.size, "structured reply header")
    magic, flags, rtype, cookie, length = STRUCTURED_HEADER.unpack(data)
    if magic != STRUCTURED_REPLY_MAGIC:
        raise ProtocolError(f"NBD structured reply has bad magic 0x{magic:08x}")
    return ChunkHeader(flags, rtype, cookie, length)


def parse_offset_hole(payload: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(offset, length) of an NBD_REPLY_TYPE_OFFSET_HOLE payload."""
    _need(payload, 12, "OFFSET_HOLE chunk")
    offset, size = struct.unpack(">QI", payload)
    if size == 0:
        raise ProtocolError("NBD OFFSET_HOLE chunk with zero length")
    return int(offset), int(size)


def _text(raw: bytes | bytearray | memoryview) -> str:
    return bytes(raw).decode("utf-8", errors="replace").replace("\n", " ").strip()


def parse_error_chunk(rtype: int, payload: bytes | bytearray | memoryview) -> ChunkError:
    """Decode an ERROR / ERROR_OFFSET (or unknown error-type) chunk payload."""
    if len(payload) < 6:
        raise ProtocolError(f"NBD error chunk too short ({len(payload)} bytes)")
    error, msglen = struct.unpack_from(">IH", payload)
    rest = len(payload) - 6
    if msglen > rest:
        raise ProtocolError(f"NBD error chunk message length {msglen} exceeds payload ({rest} bytes)")
    message = _text(payload[6 : 6 + msglen])
    offset: int | None = None
    if rtype == REPLY_TYPE_ERROR_OFFSET:
        if rest - msglen != 8:
            raise ProtocolError("NBD ERROR_OFFSET chunk has a malformed offset field")
        offset = int(struct.unpack_from(">Q", payload, 6 + msglen)[0])
    elif rtype == REPLY_TYPE_ERROR and rest != msglen:
        raise ProtocolError("NBD ERROR chunk has trailing bytes")
    if error == 0:
        raise ProtocolError("NBD error chunk carries error code 0")
    return ChunkError(int(error), message, offset)


def parse_block_status(payload: bytes | bytearray | memoryview) -> tuple[int, list[tuple[int, int]]]:
    """(context id, [(length, flags), ...]) of an NBD_REPLY_TYPE_BLOCK_STATUS payload.

    At least one descriptor is required and no descriptor may be empty (an empty
    one could make a client loop forever).
    """
    n = len(payload)
    if n < 12 or (n - 4) % 8:
        raise ProtocolError(f"NBD BLOCK_STATUS chunk has a malformed length ({n} bytes)")
    context = int(struct.unpack_from(">I", payload)[0])
    descs: list[tuple[int, int]] = []
    for length, flags in struct.iter_unpack(">II", payload[4:]):
        if length == 0:
            raise ProtocolError("NBD BLOCK_STATUS descriptor with zero length")
        descs.append((int(length), int(flags)))
    return context, descs


def parse_option_reply(data: bytes | bytearray | memoryview, expected_option: int) -> OptionReply:
    """Decode a 20-byte option reply header and check it answers ``expected_option``."""
    _need(data, OPTION_REPLY.size, "option reply")
    magic, option, rtype, length = OPTION_REPLY.unpack(data)
    if magic != OPTION_REPLY_MAGIC:
        raise ProtocolError(f"NBD option reply has bad magic 0x{magic:016x}")
    if option != expected_option:
        raise ProtocolError(f"NBD option reply for option {option}, expected {expected_option}")
    if length > MAX_OPTION_PAYLOAD:
        raise ProtocolError(f"NBD option reply payload too large ({length} bytes)")
    return OptionReply(int(option), int(rtype), int(length))


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """What NBD_INFO_EXPORT / NBD_INFO_BLOCK_SIZE (or EXPORT_NAME) told us."""

    size: int
    tflags: int
    min_block: int = 1
    preferred_block: int = 4096
    max_block: int = DEFAULT_MAX_BLOCK


def parse_info_export(payload: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(size, transmission flags) from an NBD_INFO_EXPORT payload (type field included)."""
    _need(payload, 12, "NBD_INFO_EXPORT")
    _type, size, tflags = struct.unpack(">HQH", payload)
    if size >= 1 << 63:
        raise ProtocolError(f"NBD export size {size} out of range")
    return int(size), int(tflags)


def parse_info_block_size(payload: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(minimum, preferred, maximum) block sizes from an NBD_INFO_BLOCK_SIZE payload."""
    _need(payload, 14, "NBD_INFO_BLOCK_SIZE")
    _type, minimum, preferred, maximum = struct.unpack(">HIII", payload)
    if not (1 <= minimum <= 65536 and minimum & (minimum - 1) == 0):
        raise ProtocolError(f"NBD minimum block size {minimum} is not a power of two up to 64 KiB")
    if preferred < minimum or maximum < minimum:
        raise ProtocolError(f"NBD block sizes inconsistent (min {minimum}, preferred {preferred}, max {maximum})")
    return int(minimum), int(preferred), int(maximum)


def parse_meta_context(payload: bytes | bytearray | memoryview) -> tuple[int, str]:
    """(context id, name) from an NBD_REP_META_CONTEXT payload."""
    if len(payload) < 4 or len(payload) > 4 + MAX_STRING:
        raise ProtocolError(f"NBD meta context reply has a bad length ({len(payload)} bytes)")
    context = int(struct.unpack_from(">I", payload)[0])
    return context, _text(payload[4:])


def parse_server_reply(payload: bytes | bytearray | memoryview) -> str:
    """The export name in an NBD_REP_SERVER payload (the reply to NBD_OPT_LIST)."""
    if len(payload) < 4:
        raise ProtocolError("NBD_REP_SERVER payload too short")
    n = int(struct.unpack_from(">I", payload)[0])
    if n > len(payload) - 4 or n > MAX_STRING:
        raise ProtocolError(f"NBD_REP_SERVER name length {n} exceeds its payload")
    return _text(payload[4 : 4 + n])


def parse_export_name_reply(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(size, transmission flags) from the 10-byte reply to NBD_OPT_EXPORT_NAME."""
    _need(data, 10, "EXPORT_NAME reply")
    size, tflags = struct.unpack(">QH", data)
    if size >= 1 << 63:
        raise ProtocolError(f"NBD export size {size} out of range")
    return int(size), int(tflags)


def parse_server_greeting(data: bytes | bytearray | memoryview) -> int:
    """Handshake flags from the server's first 18 bytes (NBDMAGIC, IHAVEOPT, flags)."""
    _need(data, 18, "server greeting")
    magic, second, hflags = struct.unpack(">QQH", data)
    if magic != NBDMAGIC:
        raise ProtocolError("not an NBD server (greeting does not start with NBDMAGIC)")
    if second == OLDSTYLE_MAGIC:
        raise ProtocolError("the server speaks the old-style NBD handshake, which is not supported")
    if second != IHAVEOPT:
        raise ProtocolError(f"not a newstyle NBD server (bad magic 0x{second:016x})")
    return int(hflags)


def errno_message(error: int) -> tuple[str, bool]:
    """('EIO: input/output error on the server', transient?) for an NBD error number."""
    name, text = ERRNO_TEXT.get(error, (f"error {error}", "unknown error code"))
    return f"{name}: {text}", error in TRANSIENT_ERRNOS
