"""The agent's frame codec: round trips, fuzzed garbage, corruption, compression."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scmt_cli.agent import protocol as p

TYPES = sorted(p.TYPES)


@given(ftype=st.sampled_from(TYPES), rid=st.integers(0, (1 << 64) - 1), payload=st.binary(max_size=4096),
       flags=st.sampled_from([0, p.FLAG_ZSTD]))
def test_frames_round_trip(ftype: int, rid: int, payload: bytes, flags: int) -> None:
    data = p.encode_frame(ftype, rid, payload, flags)
    frame, used = p.decode_frame(data + b"trailing")
    assert used == len(data) == p.HEADER_SIZE + len(payload)
    assert (frame.type, frame.request_id, frame.payload, frame.flags) == (ftype, rid, payload, flags)


@given(st.binary(max_size=200))
def test_garbage_is_a_protocol_error_never_a_crash(data: bytes) -> None:
    try:
        p.decode_frame(data)
    except p.ProtocolError:
        pass


@given(payload=st.binary(min_size=1, max_size=512), pos=st.data(), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(payload: bytes, pos: st.DataObject, bit: int) -> None:
    data = bytearray(p.encode_frame(p.T_DATA, 7, payload))
    i = pos.draw(st.integers(0, len(data) - 1))
    data[i] ^= 1 << bit
    with pytest.raises(p.ProtocolError):  # header flips included: the checksum covers the header
        p.decode_frame(bytes(data))


def test_payload_flip_is_a_checksum_error() -> None:
    data = bytearray(p.encode_frame(p.T_DATA, 1, b"x" * 100))
    data[p.HEADER_SIZE + 50] ^= 0x10
    with pytest.raises(p.ChecksumError):
        p.decode_frame(bytes(data))


def test_oversized_and_unknown_frames_are_refused() -> None:
    with pytest.raises(ValueError):
        p.encode_frame(p.T_DATA, 1, bytes(p.MAX_PAYLOAD + 1))
    with pytest.raises(ValueError):
        p.encode_frame(99, 1)
    head = bytearray(p.encode_frame(p.T_LIST, 1)[: p.HEADER_SIZE])
    head[16:20] = (p.MAX_PAYLOAD + 1).to_bytes(4, "big")
    with pytest.raises(p.ProtocolError, match="exceeds"):
        p.decode_header(bytes(head))
    with pytest.raises(p.ProtocolError, match="magic"):
        p.decode_header(b"HTTP/1.1 200 OK\r\n\r\nxxxxxxxxx")


@given(st.binary(max_size=300))
def test_json_payload_parser_only_raises_protocol_errors(data: bytes) -> None:
    try:
        obj = p.decode_json(data)
        assert isinstance(obj, dict)
        p.int_field(obj, "offset")
    except p.ProtocolError:
        pass


@settings(max_examples=50)
@given(data=st.one_of(st.binary(max_size=20000), st.just(bytes(65536)), st.just(b"abc" * 10000)),
       compress=st.booleans())
def test_data_packing_round_trips_and_only_compresses_when_smaller(data: bytes, compress: bool) -> None:
    payload, flags = p.pack_data(data, compress=compress)
    assert p.unpack_data(payload, flags, len(data)) == data
    if flags & p.FLAG_ZSTD:
        assert compress and len(payload) < len(data)
    else:
        assert payload == data


def test_compression_on_and_off() -> None:
    text = b"the quick brown fox " * 5000
    packed, flags = p.pack_data(text)
    assert flags == p.FLAG_ZSTD and len(packed) < len(text) // 10
    plain, flags = p.pack_data(text, compress=False)
    assert flags == 0 and plain == text
    noise = os.urandom(100_000)
    packed, flags = p.pack_data(noise)
    assert flags == 0 and packed == noise  # incompressible data is sent as is


def test_unpack_refuses_the_wrong_length_and_bad_zstd() -> None:
    packed, flags = p.pack_data(b"a" * 10000)
    with pytest.raises(p.ProtocolError):
        p.unpack_data(packed, flags, 9999)
    with pytest.raises(p.ProtocolError):
        p.unpack_data(b"not zstd at all", p.FLAG_ZSTD, 10)
    with pytest.raises(p.ProtocolError):
        p.unpack_data(b"short", 0, 6)


def test_macs_depend_on_token_and_both_nonces_and_differ_by_direction() -> None:
    tok, sn, cn = b"k" * 16, b"s" * 32, b"c" * 32
    m = p.client_mac(tok, sn, cn)
    assert p.macs_equal(m, p.client_mac(tok, sn, cn))
    assert not p.macs_equal(m, p.client_mac(b"j" * 16, sn, cn))
    assert not p.macs_equal(m, p.client_mac(tok, b"t" * 32, cn))
    assert not p.macs_equal(m, p.client_mac(tok, sn, b"d" * 32))
    assert not p.macs_equal(m, p.server_mac(tok, sn, cn))
