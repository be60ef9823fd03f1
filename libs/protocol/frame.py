"""Frame layout of wire protocol v1 and an incremental, I/O-free frame splitter.

Every message is ``u32 length | u16 msg_type | u8 flags | u8 reserved | u32 sequence_id |
payload`` (big-endian), where ``length`` counts the 8 header bytes after it plus the payload.
The splitter only looks at the header: the Gateway forwards frames without parsing JSON, so
this is the one piece of protocol code on its per-byte hot path.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

HEADER = struct.Struct(">IHBBI")
HEADER_SIZE = HEADER.size  # 12
LENGTH_PREFIX_SIZE = 4
MIN_LENGTH = HEADER_SIZE - LENGTH_PREFIX_SIZE  # 8: a frame with an empty payload
DEFAULT_MAX_FRAME_BYTES = 65536

FLAG_LZ4 = 0x01
KNOWN_FLAGS = FLAG_LZ4


class ProtocolViolation(Exception):
    """A framing error after which the byte stream cannot be trusted: the connection must end."""


class FrameHeader(NamedTuple):
    length: int
    msg_type: int
    flags: int
    reserved: int
    sequence_id: int


def read_header(frame: bytes | bytearray | memoryview) -> FrameHeader:
    """Header fields of a complete frame (as returned by :class:`FrameSplitter`)."""
    return FrameHeader._make(HEADER.unpack_from(frame, 0))


def encode_frame(msg_type: int, sequence_id: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """One frame: header plus the already-encoded payload bytes."""
    return HEADER.pack(MIN_LENGTH + len(payload), msg_type, flags, 0, sequence_id) + payload


class FrameSplitter:
    """Turns a TCP byte stream into complete frames (bytes, header included).

    Feeding never raises: frames before a violation are returned, the violation is kept in
    :attr:`error` and the splitter yields nothing more. The length is checked as soon as its
    four bytes arrive, so an oversized frame is refused before its body is buffered.
    """

    __slots__ = ("_buffer", "error", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self.error: ProtocolViolation | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None:
            return []
        if self._buffer:
            self._buffer += data
            source: bytes | bytearray = self._buffer
        else:
            source = data
        frames: list[bytes] = []
        pos = 0
        end_of_data = len(source)
        max_length = self.max_frame_bytes
        while end_of_data - pos >= LENGTH_PREFIX_SIZE:
            length = int.from_bytes(source[pos : pos + LENGTH_PREFIX_SIZE], "big")
            if length < MIN_LENGTH or length > max_length:
                self.error = ProtocolViolation(
                    f"frame length {length} outside {MIN_LENGTH}..{max_length}"
                )
                self._buffer = bytearray()
                return frames
            frame_end = pos + LENGTH_PREFIX_SIZE + length
            if frame_end > end_of_data:
                break
            flags = source[pos + 6]
            if flags & ~KNOWN_FLAGS or source[pos + 7]:
                self.error = ProtocolViolation(
                    f"nonzero reserved bits (flags=0x{flags:02x}, reserved=0x{source[pos + 7]:02x})"
                )
                self._buffer = bytearray()
                return frames
            frames.append(bytes(source[pos:frame_end]))
            pos = frame_end
        if source is self._buffer:
            del self._buffer[:pos]
        elif pos < end_of_data:
            self._buffer = bytearray(source[pos:])
        return frames
