"""Payload codec: JSON objects, optionally LZ4, where untrusted bytes become Python objects.

Every way a client can send a bad payload must end as BadPayload (answered with ERROR_RES
BAD_PAYLOAD), never as another exception that would take the session or the process down.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import lz4.frame
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    FLAG_LZ4,
    HEADER_SIZE,
    BadPayload,
    FrameSplitter,
    decode_payload,
    encode_frame,
    encode_message,
    read_header,
)
from protocol.payload import MAX_DECOMPRESSED_BYTES, decompress

# JSON values orjson round-trips exactly: 64-bit integers, finite floats, any text.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)
json_objects = st.dictionaries(st.text(max_size=20), json_values, max_size=8)
# Objects that compress well, so the LZ4 branch is taken often.
repetitive_objects = st.builds(
    lambda key, word, n: {key: word * n}, st.text(max_size=5), st.text(min_size=1, max_size=8),
    st.integers(50, 2000),
)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
compress_settings = st.sampled_from([None, 0, 1, 64, 1024])


def frame_with(body: bytes, flags: int = 0) -> bytes:
    return encode_frame(9, 1, body, flags)


def decode_frame(frame: bytes) -> dict[str, Any]:
    return decode_payload(frame, read_header(frame).flags)


@given(u16, u32, json_objects | repetitive_objects, compress_settings)
def test_encode_message_round_trips_through_the_splitter(
    msg_type: int, seq: int, payload: dict[str, Any], compress_above: int | None
) -> None:
    frame = encode_message(msg_type, seq, payload, compress_above=compress_above)
    splitter = FrameSplitter(max_frame_bytes=1 << 24)
    (out,) = splitter.feed(frame)
    header = read_header(out)
    assert (header.msg_type, header.sequence_id, header.reserved) == (msg_type, seq, 0)
    assert header.flags in (0, FLAG_LZ4)
    assert decode_payload(out, header.flags) == payload


@given(json_objects | repetitive_objects, compress_settings)
def test_compression_only_when_asked_and_worth_it(
    payload: dict[str, Any], compress_above: int | None
) -> None:
    frame = encode_message(9, 1, payload, compress_above=compress_above)
    header = read_header(frame)
    plain = orjson.dumps(payload) if payload else b""
    if header.flags & FLAG_LZ4:
        assert compress_above is not None
        assert len(plain) > compress_above
        assert len(frame) - HEADER_SIZE < len(plain)
    else:
        assert frame[HEADER_SIZE:] == plain


def test_repetitive_payload_is_compressed_with_threshold_zero() -> None:
    payload = {"text": "ab" * 5000}
    frame = encode_message(10, 7, payload, compress_above=0)
    assert read_header(frame).flags == FLAG_LZ4
    assert len(frame) < 1000
    assert decode_frame(frame) == payload


def test_payload_not_above_threshold_stays_plain() -> None:
    payload = {"text": "ab" * 5000}
    size = len(orjson.dumps(payload))
    assert read_header(encode_message(10, 7, payload, compress_above=size)).flags == 0
    assert read_header(encode_message(10, 7, payload, compress_above=size - 1)).flags == FLAG_LZ4
    assert read_header(encode_message(10, 7, payload)).flags == 0


def test_incompressible_payload_is_sent_plain() -> None:
    payload = {"k": "x"}
    assert read_header(encode_message(9, 1, payload, compress_above=0)).flags == 0


@given(json_objects, u32)
def test_many_messages_in_one_stream(payload: dict[str, Any], seq: int) -> None:
    frames = [encode_message(9, (seq + i) % 2**32, payload, compress_above=0) for i in range(5)]
    splitter = FrameSplitter(max_frame_bytes=1 << 24)
    stream = b"".join(frames)
    out: list[bytes] = []
    for i in range(0, len(stream), 7):
        out.extend(splitter.feed(stream[i : i + 7]))
    assert out == frames
    assert all(decode_frame(f) == payload for f in out)


# --- decoding untrusted bytes ------------------------------------------------------------


def test_empty_payload_reads_as_empty_object() -> None:
    assert decode_payload(frame_with(b""), 0) == {}
    assert encode_message(7, 1, {}) == encode_frame(7, 1)
    assert encode_message(7, 1, None) == encode_frame(7, 1)


def test_lz4_of_empty_body_reads_as_empty_object() -> None:
    assert decode_payload(frame_with(lz4.frame.compress(b""), FLAG_LZ4), FLAG_LZ4) == {}


BAD_PLAIN = {
    "truncated JSON": b'{"a": 1',
    "not JSON": b"hello",
    "trailing garbage": b'{"a": 1} x',
    "JSON list": b"[1, 2, 3]",
    "JSON number": b"42",
    "JSON string": b'"text"',
    "JSON null": b"null",
    "JSON true": b"true",
    "invalid UTF-8 in a string": b'{"a": "\xff\xfe"}',
    "invalid UTF-8 lead byte": b"\xc3\x28",
    "overlong UTF-8": b'{"a": "\xc0\xaf"}',
    "NUL byte": b"\x00",
    "whitespace only": b"   ",
}


@pytest.mark.parametrize("body", BAD_PLAIN.values(), ids=BAD_PLAIN.keys())
def test_bad_plain_payload_is_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        decode_payload(frame_with(body), 0)


@pytest.mark.parametrize("body", BAD_PLAIN.values(), ids=BAD_PLAIN.keys())
def test_bad_json_inside_valid_lz4_is_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        decode_payload(frame_with(lz4.frame.compress(body), FLAG_LZ4), FLAG_LZ4)


GOOD_LZ4 = lz4.frame.compress(b'{"text": "' + b"hello " * 100 + b'"}')
BAD_LZ4 = {
    "not LZ4 at all": b'{"a": 1}',
    "random bytes": bytes(range(256)),
    "truncated frame": GOOD_LZ4[: len(GOOD_LZ4) // 2],
    "magic only": GOOD_LZ4[:4],
    "corrupted block": GOOD_LZ4[:20] + bytes(b ^ 0x5A for b in GOOD_LZ4[20:40]) + GOOD_LZ4[40:],
    "empty body with the flag": b"",
}


@pytest.mark.parametrize("body", BAD_LZ4.values(), ids=BAD_LZ4.keys())
def test_bad_lz4_is_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        decode_payload(frame_with(body, FLAG_LZ4), FLAG_LZ4)


def test_good_lz4_decodes() -> None:
    assert decode_payload(frame_with(GOOD_LZ4, FLAG_LZ4), FLAG_LZ4) == {"text": "hello " * 100}


def test_lz4_bomb_above_the_limit_is_refused() -> None:
    bomb = lz4.frame.compress(b'{"a": "' + b"A" * (2 * MAX_DECOMPRESSED_BYTES) + b'"}')
    assert len(bomb) < 65536  # fits in one frame: this is what a hostile client can send
    with pytest.raises(BadPayload):
        decode_payload(frame_with(bomb, FLAG_LZ4), FLAG_LZ4)


@pytest.mark.parametrize("store_size", [False, True], ids=["no-size", "size-in-header"])
def test_a_bomb_never_allocates_more_than_the_limit(store_size: bool) -> None:
    """Bounded decompression, not decompress-then-check: inflating 12 MiB packed into 48 KiB
    allocates no more than the limit's worth of output, also when the LZ4 header announces
    the full size. (python-lz4 fills a buffer of at most ``max_length`` and copies it into
    the bytes it returns, hence twice the limit at the peak; never anything like 12 MiB.)"""
    limit = 65536
    bomb = lz4.frame.compress(b'{"a":"' + b"0" * (12 << 20) + b'"}', store_size=store_size)
    with pytest.raises(BadPayload):
        decode_payload(frame_with(bomb, FLAG_LZ4), FLAG_LZ4, max_decompressed=limit)
    tracemalloc.start()
    try:
        with pytest.raises(BadPayload):
            decompress(bomb, max_decompressed=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * limit + 16 * 1024, f"peak {peak} bytes for a {limit}-byte limit"


def test_decompression_limit_is_exact() -> None:
    body = b'{"a": "' + b"A" * 991 + b'"}'
    assert len(body) == 1000
    packed = lz4.frame.compress(body)
    assert decompress(packed, max_decompressed=1000) == body
    with pytest.raises(BadPayload):
        decompress(packed, max_decompressed=999)
    with pytest.raises(BadPayload):
        decode_payload(frame_with(packed, FLAG_LZ4), FLAG_LZ4, max_decompressed=999)


@given(st.binary(max_size=200), st.sampled_from([0, FLAG_LZ4]))
def test_arbitrary_bytes_decode_or_raise_bad_payload_only(body: bytes, flags: int) -> None:
    try:
        result = decode_payload(frame_with(body, flags), flags)
    except BadPayload:
        return
    assert isinstance(result, dict)


def test_bad_payload_is_a_value_error() -> None:
    # Callers that catch ValueError around decoding keep working.
    assert issubclass(BadPayload, ValueError)
