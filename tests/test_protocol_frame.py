"""Frame layout and FrameSplitter: the only protocol code on the Gateway's per-byte path.

TCP delivers any split of the byte stream, so the splitter must give the same frames whatever
the chunking, and must refuse a bad header before buffering its body (a 4 GiB length field
must not make the Gateway allocate 4 GiB).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    FLAG_LZ4,
    HEADER_SIZE,
    FrameHeader,
    FrameSplitter,
    ProtocolViolation,
    encode_frame,
    read_header,
)

u16 = st.integers(min_value=0, max_value=0xFFFF)
u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
payloads = st.binary(max_size=300)
frame_specs = st.tuples(u16, u32, payloads, st.sampled_from([0, FLAG_LZ4]))


def raw_header(
    length: int, msg_type: int = 1, flags: int = 0, reserved: int = 0, seq: int = 1
) -> bytes:
    """A header with arbitrary (possibly invalid) fields."""
    return struct.pack(">IHBBI", length, msg_type, flags, reserved, seq)


def error_of(splitter: FrameSplitter) -> ProtocolViolation | None:
    """``splitter.error`` read through a call, so a type checker does not keep it narrowed."""
    return splitter.error


def split_all(splitter: FrameSplitter, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    return out


SAMPLE_FRAMES = [
    encode_frame(1, 1, b'{"user_id":1}'),
    encode_frame(7, 2),  # empty payload: the smallest legal frame
    encode_frame(9, 3, b'{"text":"' + b"x" * 100 + b'"}'),
    encode_frame(0xFFFF, 0xFFFFFFFF, b"\x00\xff", flags=FLAG_LZ4),
]
SAMPLE_STREAM = b"".join(SAMPLE_FRAMES)


def test_header_layout_is_big_endian_and_twelve_bytes() -> None:
    frame = encode_frame(0x0102, 0x03040506, b"abc", flags=FLAG_LZ4)
    assert HEADER_SIZE == 12
    assert frame == b"\x00\x00\x00\x0b\x01\x02\x01\x00\x03\x04\x05\x06abc"
    assert read_header(frame) == FrameHeader(11, 0x0102, FLAG_LZ4, 0, 0x03040506)


@given(frame_specs)
def test_encode_then_read_header_round_trips(spec: tuple[int, int, bytes, int]) -> None:
    msg_type, seq, payload, flags = spec
    frame = encode_frame(msg_type, seq, payload, flags)
    header = read_header(frame)
    assert header == FrameHeader(8 + len(payload), msg_type, flags, 0, seq)
    assert frame[HEADER_SIZE:] == payload
    assert len(frame) == 4 + header.length


@given(st.lists(frame_specs, max_size=20), st.data())
def test_any_chunking_gives_the_same_frames(
    specs: list[tuple[int, int, bytes, int]], data: st.DataObject
) -> None:
    frames = [encode_frame(t, s, p, f) for t, s, p, f in specs]
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    splitter = FrameSplitter()
    assert split_all(splitter, chunks) == frames
    assert splitter.error is None
    assert splitter.buffered == 0


@pytest.mark.parametrize("cut", range(len(SAMPLE_STREAM) + 1))
def test_two_pieces_cut_at_every_byte(cut: int) -> None:
    splitter = FrameSplitter()
    assert split_all(splitter, [SAMPLE_STREAM[:cut], SAMPLE_STREAM[cut:]]) == SAMPLE_FRAMES
    assert splitter.error is None
    assert splitter.buffered == 0


def test_one_byte_at_a_time() -> None:
    splitter = FrameSplitter()
    out: list[bytes] = []
    for i in range(len(SAMPLE_STREAM)):
        out.extend(splitter.feed(SAMPLE_STREAM[i : i + 1]))
        assert splitter.error is None
    assert out == SAMPLE_FRAMES
    assert splitter.buffered == 0


def test_many_frames_in_one_chunk() -> None:
    frames = [encode_frame(9, seq, b'{"n":%d}' % seq) for seq in range(1000)]
    splitter = FrameSplitter()
    assert splitter.feed(b"".join(frames)) == frames


def test_incomplete_frame_is_held_back_until_complete() -> None:
    frame = encode_frame(9, 1, b"hello")
    splitter = FrameSplitter()
    assert splitter.feed(frame[:-1]) == []
    assert splitter.buffered == len(frame) - 1
    assert splitter.feed(frame[-1:]) == [frame]
    assert splitter.buffered == 0


def test_empty_feed_is_harmless() -> None:
    splitter = FrameSplitter()
    assert splitter.feed(b"") == []
    assert splitter.feed(SAMPLE_FRAMES[0][:3]) == []
    assert splitter.feed(b"") == []
    assert splitter.feed(SAMPLE_FRAMES[0][3:]) == [SAMPLE_FRAMES[0]]


def test_frames_are_bytes_copies_not_views() -> None:
    splitter = FrameSplitter()
    frame = encode_frame(9, 1, b"x")
    splitter.feed(frame[:5])
    (out,) = splitter.feed(frame[5:])
    assert type(out) is bytes


# --- violations ---------------------------------------------------------------------------

BAD_HEADERS = {
    "length 0": raw_header(0),
    "length 7 (below the 8 header bytes)": raw_header(7),
    "length above max": raw_header(DEFAULT_MAX_FRAME_BYTES + 1),
    "length 2**32-1": raw_header(0xFFFFFFFF),
    **{f"flag bit {bit}": raw_header(8, flags=1 << bit) for bit in range(1, 8)},
    "flags 0xff": raw_header(8, flags=0xFF),
    "reserved 0x01": raw_header(8, reserved=1),
    "reserved 0x80": raw_header(8, reserved=0x80),
}


@pytest.mark.parametrize("bad", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_violation_keeps_earlier_frames_and_drops_everything_after(bad: bytes) -> None:
    good_after = encode_frame(9, 99, b'{"after":true}')
    splitter = FrameSplitter()
    out = splitter.feed(SAMPLE_STREAM + bad + good_after)
    assert out == SAMPLE_FRAMES
    assert isinstance(splitter.error, ProtocolViolation)
    assert splitter.buffered == 0
    assert splitter.feed(good_after) == []
    assert splitter.feed(SAMPLE_STREAM) == []


@pytest.mark.parametrize("bad", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_violation_found_whatever_the_chunking(bad: bytes) -> None:
    stream = SAMPLE_STREAM + bad + encode_frame(9, 99)
    for cut in range(len(stream) + 1):
        splitter = FrameSplitter()
        out = split_all(splitter, [stream[:cut], stream[cut:]])
        assert out == SAMPLE_FRAMES, f"cut at {cut}"
        assert splitter.error is not None, f"cut at {cut}"


@pytest.mark.parametrize("length", [0, 7, DEFAULT_MAX_FRAME_BYTES + 1, 0xFFFFFFFF])
def test_bad_length_detected_from_the_four_length_bytes_alone(length: int) -> None:
    splitter = FrameSplitter()
    first = encode_frame(7, 1)
    out = splitter.feed(first + length.to_bytes(4, "big")[:3])
    assert out == [first]
    assert splitter.error is None  # three bytes do not make a length yet
    assert splitter.feed(length.to_bytes(4, "big")[3:]) == []
    error = error_of(splitter)
    assert error is not None
    assert str(length) in str(error)
    assert splitter.buffered == 0


def test_oversized_frame_is_refused_before_its_body_is_buffered() -> None:
    splitter = FrameSplitter(max_frame_bytes=1000)
    splitter.feed(raw_header(1001)[:4])
    assert splitter.error is not None
    assert splitter.buffered == 0


def test_max_frame_bytes_is_inclusive() -> None:
    limit = 200
    exactly = encode_frame(9, 1, b"x" * (limit - 8))
    assert read_header(exactly).length == limit
    splitter = FrameSplitter(max_frame_bytes=limit)
    assert splitter.feed(exactly) == [exactly]
    assert splitter.error is None
    one_more = encode_frame(9, 2, b"x" * (limit - 7))
    assert splitter.feed(one_more) == []
    assert splitter.error is not None


def test_flag_bit0_is_the_only_allowed_flag() -> None:
    frame = encode_frame(9, 1, b"x", flags=FLAG_LZ4)
    splitter = FrameSplitter()
    assert splitter.feed(frame) == [frame]
    assert splitter.error is None


@given(st.integers(0, 0xFF), st.integers(0, 0xFF))
def test_flags_and_reserved_rule(flags: int, reserved: int) -> None:
    frame = raw_header(8, flags=flags, reserved=reserved)
    splitter = FrameSplitter()
    out = splitter.feed(frame)
    if flags & ~FLAG_LZ4 or reserved:
        assert out == []
        assert splitter.error is not None
    else:
        assert out == [frame]
        assert splitter.error is None
