"""Payload codec: JSON objects, optionally LZ4-framed, inside v1 frames.

Decoding is where untrusted client bytes become Python objects, so every failure here is a
:class:`BadPayload` (answered with ``ERROR_RES BAD_PAYLOAD``) and decompression is bounded to
stop an LZ4 bomb from turning a 64 KiB frame into gigabytes.
"""

from __future__ import annotations

from typing import Any

import lz4.frame
import orjson

from protocol.frame import FLAG_LZ4, HEADER, HEADER_SIZE, MIN_LENGTH

DEFAULT_COMPRESSION_THRESHOLD = 1024
#: Upper bound for a decompressed client payload.
MAX_DECOMPRESSED_BYTES = 1 << 20


class BadPayload(ValueError):
    """The payload is not a (possibly LZ4-compressed) UTF-8 JSON object."""


def decode_payload(
    frame: bytes, flags: int, max_decompressed: int = MAX_DECOMPRESSED_BYTES
) -> dict[str, Any]:
    """The JSON object carried by a complete frame; an empty payload reads as ``{}``."""
    body = frame[HEADER_SIZE:]
    if flags & FLAG_LZ4:
        body = decompress(body, max_decompressed)
    if not body:
        return {}
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadPayload(f"payload is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadPayload(f"payload must be a JSON object, got {type(obj).__name__}")
    return obj


def decompress(body: bytes, max_decompressed: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    decompressor = lz4.frame.LZ4FrameDecompressor()
    try:
        out: bytes = decompressor.decompress(body, max_length=max_decompressed)
    except RuntimeError as exc:
        raise BadPayload(f"payload is not a valid LZ4 frame: {exc}") from None
    if not decompressor.eof:
        raise BadPayload(
            f"LZ4 payload is truncated or expands beyond {max_decompressed} bytes"
        )
    return out


def encode_message(
    msg_type: int,
    sequence_id: int,
    payload: Any,
    compress_above: int | None = None,
) -> bytes:
    """A complete frame carrying ``payload`` as JSON.

    ``compress_above``: when set (the peer accepted lz4), payloads longer than this many bytes
    are LZ4-compressed, unless compression would not make them smaller.
    """
    body = orjson.dumps(payload) if payload else b""
    flags = 0
    if compress_above is not None and len(body) > compress_above:
        packed = lz4.frame.compress(body)
        if len(packed) < len(body):
            body, flags = packed, FLAG_LZ4
    return HEADER.pack(MIN_LENGTH + len(body), msg_type, flags, 0, sequence_id) + body
