"""The scmt agent wire protocol: pure encode/decode functions (no sockets).

Every message is one *frame*: a fixed 28-byte header and a payload::

    offset size field
    0      4    magic  b"SCMA"
    4      1    type   (see the ``T_*`` constants; a reply is request type | 0x80)
    5      1    flags  (FLAG_ZSTD: the payload is a zstandard frame)
    6      2    protocol version (big-endian; :data:`VERSION`)
    8      8    request id (a reply carries its request's id)
    16     4    payload length in bytes (as sent, after compression)
    20     8    checksum: XXH3-64 of header bytes 0..19 and the payload as sent

All integers are big-endian.  A payload is at most :data:`MAX_PAYLOAD` bytes,
so a peer never buffers more than that for one frame.  Control messages carry
a JSON object (UTF-8); ``DATA`` replies to ``READ`` carry the raw bytes,
zstandard-compressed when that makes them smaller (:func:`pack_data`).

Session: client ``HELLO`` {version, client_nonce} -> server ``CHALLENGE``
{version, server_nonce}; client ``AUTH`` {mac} where
``mac = HMAC-SHA256(token, "scmt-agent-client" | server_nonce | client_nonce)``;
server ``AUTH`` reply {mac} with ``HMAC-SHA256(token, "scmt-agent-server" |
client_nonce | server_nonce)`` (the client checks the agent knows the token
too).  The token never crosses the wire; nonces are 32 random bytes, fresh
per connection, so a recorded response is useless on another connection.
Then any number of ``LIST``, ``EXTENTS``, ``READ``, ``DIGESTS`` requests may
be in flight, matched by id; an ``ERROR`` reply {code, message} answers a
request that failed.

``WATCH`` {disk, chunk_size, interval} starts a stream: the agent hashes the
disk (round 0, replied with an empty change list once done: the baseline),
then re-hashes it every ``interval`` seconds and pushes one reply per round
that changed something, {round, changed: [chunk index, ...], more: bool}
(``more`` when a round's list continues in the next frame), all with the
WATCH request's id, until the connection closes.

``CHANGES`` {disk, chunk_size, epoch?, seq?} asks the agent's kernel change
tracking (:mod:`scmt_cli.agent.tracking`) for the chunks written since the
cursor ``(epoch, seq)`` and makes a new cut; the reply is {tracking: false,
reason} when the disk is not tracked, else {tracking: true, epoch, seq,
changed: [[first chunk, count], ...] or null, reason}: ``changed`` is null when
no cursor was given or events may have been lost (``reason`` says why); the
client must then compare digests for that disk.

``FREEZE`` {limit} flushes and freezes the file systems mounted from the
served disks for at most ``limit`` seconds (a watchdog on the agent thaws
them then, or when the connection that froze them closes); the reply is
{frozen: [mount point, ...], refused: [{mount, reason}, ...]}.  ``THAW`` {}
thaws them now ({thawed: [...]}).  ``STATS`` {} replies with the agent's
totals since it started {peak_rss_bytes, cpu_seconds, disk_bytes_read,
disk_busy_seconds, throttled_seconds: {cpu, storage}, tracked: [disk, ...],
preauth_dropped} and its limits {queue_depth, bandwidth_bytes_per_s,
cpu_limit_pct, storage_share_pct} (null: no limit).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from typing import Any

import xxhash
import zstandard

MAGIC = b"SCMA"
VERSION = 1
HEADER = struct.Struct(">4sBBHQIQ")
HEADER_SIZE = HEADER.size  # 28
#: Largest payload accepted: a READ of at most MAX_READ bytes plus zstd overhead, or a JSON reply.
MAX_READ = 8 * 1024 * 1024
MAX_PAYLOAD = MAX_READ + 64 * 1024
NONCE_SIZE = 32
MIN_TOKEN_BYTES = 16

FLAG_ZSTD = 0x01
KNOWN_FLAGS = FLAG_ZSTD
REPLY = 0x80

T_HELLO = 1
T_CHALLENGE = 2
T_AUTH = 3
T_LIST = 4
T_EXTENTS = 5
T_READ = 6
T_DIGESTS = 7
T_BYE = 8
T_WATCH = 9
T_CHANGES = 10
T_FREEZE = 11
T_THAW = 12
T_STATS = 13
T_ERROR = 15
T_DATA = T_READ | REPLY
REQUEST_TYPES = frozenset({T_HELLO, T_AUTH, T_LIST, T_EXTENTS, T_READ, T_DIGESTS, T_BYE, T_WATCH, T_CHANGES,
                           T_FREEZE, T_THAW, T_STATS})
TYPES = frozenset({*REQUEST_TYPES, T_CHALLENGE} | {t | REPLY for t in REQUEST_TYPES} | {T_ERROR})

# Error codes carried by ERROR frames.
E_BAD_REQUEST = 1
E_NO_SUCH_DISK = 2
E_OUT_OF_RANGE = 3
E_IO = 4
E_AUTH = 5
E_TOO_LARGE = 6
E_VERSION = 7
E_BUSY = 8
ERROR_NAMES = {E_BAD_REQUEST: "bad request", E_NO_SUCH_DISK: "no such disk", E_OUT_OF_RANGE: "out of range",
               E_IO: "I/O error", E_AUTH: "authentication failed", E_TOO_LARGE: "request too large",
               E_VERSION: "unsupported protocol version", E_BUSY: "busy"}

CLIENT_LABEL = b"scmt-agent-client"
SERVER_LABEL = b"scmt-agent-server"


class ProtocolError(Exception):
    """A frame that breaks the protocol (bad magic, checksum, length, JSON...).  The connection is unusable."""


class ChecksumError(ProtocolError):
    """A frame whose checksum does not match its bytes (corruption on the wire)."""


@dataclass(frozen=True, slots=True)
class Header:
    type: int
    flags: int
    version: int
    request_id: int
    length: int
    checksum: int


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame; ``payload`` is as sent (still compressed when FLAG_ZSTD is set)."""

    type: int
    request_id: int
    payload: bytes
    flags: int = 0
    version: int = VERSION


def _checksum(prefix: bytes, payload: bytes | memoryview) -> int:
    h = xxhash.xxh3_64()
    h.update(prefix)
    h.update(payload)
    return h.intdigest()


def encode_frame(ftype: int, request_id: int, payload: bytes = b"", flags: int = 0, version: int = VERSION) -> bytes:
    """The bytes of one frame.  Raises ValueError for a type, flag or size the protocol does not allow."""
    if ftype not in TYPES:
        raise ValueError(f"unknown frame type {ftype}")
    if flags & ~KNOWN_FLAGS:
        raise ValueError(f"unknown flags {flags:#x}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    if not 0 <= request_id < 1 << 64:
        raise ValueError("request id out of range")
    prefix = HEADER.pack(MAGIC, ftype, flags, version, request_id, len(payload), 0)[:20]
    return prefix + struct.pack(">Q", _checksum(prefix, payload)) + bytes(payload)


def decode_header(data: bytes) -> Header:
    """Parse the 28 header bytes; raises ProtocolError for a bad magic, type, flags or length."""
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"short frame header ({len(data)} of {HEADER_SIZE} bytes)")
    magic, ftype, flags, version, rid, length, checksum = HEADER.unpack(data)
    if magic != MAGIC:
        raise ProtocolError("not an scmt agent frame (bad magic)")
    if ftype not in TYPES:
        raise ProtocolError(f"unknown frame type {ftype}")
    if flags & ~KNOWN_FLAGS:
        raise ProtocolError(f"unknown frame flags {flags:#x}")
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"frame payload of {length} bytes exceeds the limit of {MAX_PAYLOAD}")
    return Header(ftype, flags, version, rid, length, checksum)


def check_frame(header_bytes: bytes, header: Header, payload: bytes) -> Frame:
    """Verify the checksum of a frame read as ``header_bytes`` + ``payload``; raises ChecksumError."""
    if len(payload) != header.length:
        raise ProtocolError(f"frame payload is {len(payload)} bytes, header says {header.length}")
    if _checksum(header_bytes[:20], payload) != header.checksum:
        raise ChecksumError("frame checksum mismatch (data corrupted on the wire)")
    return Frame(header.type, header.request_id, payload, header.flags, header.version)


def decode_frame(data: bytes) -> tuple[Frame, int]:
    """Decode the first frame of ``data``; return it and the bytes consumed.

    Raises ProtocolError (ChecksumError for corruption); an incomplete buffer
    raises ProtocolError too (callers reading a stream use :func:`decode_header`).
    """
    header = decode_header(bytes(data[:HEADER_SIZE]))
    end = HEADER_SIZE + header.length
    if len(data) < end:
        raise ProtocolError(f"truncated frame ({len(data)} of {end} bytes)")
    return check_frame(bytes(data[:HEADER_SIZE]), header, bytes(data[HEADER_SIZE:end])), end


# -- payloads ------------------------------------------------------------------------------
def encode_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode_json(payload: bytes) -> dict[str, Any]:
    """A JSON object payload; raises ProtocolError for anything else."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed JSON payload: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("JSON payload is not an object")
    return obj


def pack_data(data: bytes | memoryview, *, compress: bool = True, level: int = 1) -> tuple[bytes, int]:
    """Payload and flags for ``data``: zstd-compressed (FLAG_ZSTD) only when that is smaller."""
    raw = bytes(data)
    if compress and len(raw) >= 512:
        packed = zstandard.ZstdCompressor(level=level).compress(raw)
        if len(packed) < len(raw):
            return packed, FLAG_ZSTD
    return raw, 0


def unpack_data(payload: bytes, flags: int, expected: int) -> bytes:
    """The data of a DATA payload, exactly ``expected`` bytes; raises ProtocolError otherwise."""
    if flags & FLAG_ZSTD:
        try:
            data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=expected)
        except zstandard.ZstdError as exc:
            raise ProtocolError(f"bad zstd payload: {exc}") from None
    else:
        data = payload
    if len(data) != expected:
        raise ProtocolError(f"DATA holds {len(data)} bytes, {expected} were asked for")
    return data


def int_field(obj: dict[str, Any], name: str, *, lo: int = 0, hi: int = (1 << 63) - 1) -> int:
    """``obj[name]`` as an int in [lo, hi]; raises ProtocolError otherwise."""
    v = obj.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError(f"field {name!r}: expected an integer in [{lo}, {hi}]")
    return v


def str_field(obj: dict[str, Any], name: str, *, max_len: int = 256) -> str:
    v = obj.get(name)
    if not isinstance(v, str) or not 0 < len(v) <= max_len:
        raise ProtocolError(f"field {name!r}: expected a non-empty string of at most {max_len} characters")
    return v


def hex_field(obj: dict[str, Any], name: str, size: int) -> bytes:
    """``obj[name]`` as ``size`` bytes given in hex; raises ProtocolError otherwise."""
    v = obj.get(name)
    try:
        raw = bytes.fromhex(v) if isinstance(v, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise ProtocolError(f"field {name!r}: expected {size} bytes in hex")
    return raw


# -- authentication --------------------------------------------------------------------------
def client_mac(token: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """The client's proof of the token for this connection's nonces."""
    return hmac.new(token, CLIENT_LABEL + server_nonce + client_nonce, hashlib.sha256).digest()


def server_mac(token: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """The agent's proof of the token (different label and order, so it cannot be reflected)."""
    return hmac.new(token, SERVER_LABEL + client_nonce + server_nonce, hashlib.sha256).digest()


def macs_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a, b)


def error_payload(code: int, message: str) -> bytes:
    return encode_json({"code": code, "message": message[:500]})
