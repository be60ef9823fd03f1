"""Wire protocol v1 of the game-server backbone: frames, payloads, tokens, internal batches.

Pure and I/O-free so that the Gateway, the GameServer, the test client and any test can share
one implementation and fuzz it without sockets.
"""

from protocol.frame import (
    DEFAULT_MAX_FRAME_BYTES,
    FLAG_LZ4,
    HEADER_SIZE,
    FrameHeader,
    FrameSplitter,
    ProtocolViolation,
    encode_frame,
    read_header,
)
from protocol.messages import (
    FIRST_NOTIFICATION_TYPE,
    RESPONSE_TYPE,
    ErrorCode,
    KickReason,
    MsgType,
)
from protocol.payload import BadPayload, decode_payload, encode_message

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "FIRST_NOTIFICATION_TYPE",
    "FLAG_LZ4",
    "HEADER_SIZE",
    "RESPONSE_TYPE",
    "BadPayload",
    "ErrorCode",
    "FrameHeader",
    "FrameSplitter",
    "KickReason",
    "MsgType",
    "ProtocolViolation",
    "decode_payload",
    "encode_frame",
    "encode_message",
    "read_header",
]
