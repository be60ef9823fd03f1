"""The few frames the Gateway writes on its own behalf (it never parses or builds any other)."""

from __future__ import annotations

from protocol.messages import ErrorCode, KickReason, MsgType
from protocol.payload import encode_message


def kickout_frame(reason: KickReason) -> bytes:
    return encode_message(MsgType.KICKOUT_NTF, 0, {"reason": reason.value})


def error_frame(sequence_id: int, code: ErrorCode, message: str) -> bytes:
    return encode_message(MsgType.ERROR_RES, sequence_id, {"code": code.value,
                                                           "message": message})
