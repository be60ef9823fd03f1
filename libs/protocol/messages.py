"""Message types, error codes and kick reasons of wire protocol v1.

These numbers are the contract with every client ever shipped: never renumber,
only add. docs/PROTOCOL.md is generated from nothing; keep it in step by hand.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class MsgType(IntEnum):
    LOGIN_REQ = 1
    LOGIN_RES = 2
    RECONNECT_REQ = 3
    RECONNECT_RES = 4
    LOGOUT_REQ = 5
    LOGOUT_RES = 6
    PING_REQ = 7
    PONG_RES = 8
    ECHO_REQ = 9
    ECHO_RES = 10
    MOVE_REQ = 11
    MOVE_RES = 12
    WHISPER_REQ = 13
    WHISPER_RES = 14
    ERROR_RES = 100
    KICKOUT_NTF = 200
    WHISPER_NTF = 201


#: Types from here up are notifications: server-initiated, sequence id 0, answering no
#: request. Every type below it that a server sends (a ``*_RES`` or ``ERROR_RES``) answers
#: exactly one request, which is how the Gateway counts a connection's requests in flight
#: without parsing payloads (it compares the header's type bytes with this).
FIRST_NOTIFICATION_TYPE = 200


#: Request type -> its success response type.
RESPONSE_TYPE: dict[int, int] = {
    MsgType.LOGIN_REQ: MsgType.LOGIN_RES,
    MsgType.RECONNECT_REQ: MsgType.RECONNECT_RES,
    MsgType.LOGOUT_REQ: MsgType.LOGOUT_RES,
    MsgType.PING_REQ: MsgType.PONG_RES,
    MsgType.ECHO_REQ: MsgType.ECHO_RES,
    MsgType.MOVE_REQ: MsgType.MOVE_RES,
    MsgType.WHISPER_REQ: MsgType.WHISPER_RES,
}


class ErrorCode(StrEnum):
    NOT_LOGGED_IN = "NOT_LOGGED_IN"
    ALREADY_LOGGED_IN = "ALREADY_LOGGED_IN"
    UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"
    BAD_PAYLOAD = "BAD_PAYLOAD"
    DUPLICATE_SEQUENCE = "DUPLICATE_SEQUENCE"
    AUTH_FAILED = "AUTH_FAILED"
    INVALID_SESSION = "INVALID_SESSION"
    SESSION_EXPIRED = "SESSION_EXPIRED"
    SERVER_UNAVAILABLE = "SERVER_UNAVAILABLE"
    SERVER_BUSY = "SERVER_BUSY"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    #: The Gateway's per-connection rate limit refused this frame; retry it later.
    RATE_LIMITED = "RATE_LIMITED"


class KickReason(StrEnum):
    DUPLICATE_LOGIN = "DUPLICATE_LOGIN"
    SESSION_RESUMED_ELSEWHERE = "SESSION_RESUMED_ELSEWHERE"
    IDLE_TIMEOUT = "IDLE_TIMEOUT"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    SERVER_SHUTDOWN = "SERVER_SHUTDOWN"
    ADMIN_KICK = "ADMIN_KICK"
    #: Stayed over the per-connection rate limit for RATE_LIMIT_KICK_S.
    RATE_LIMITED = "RATE_LIMITED"
    #: No successful LOGIN or RECONNECT within LOGIN_TIMEOUT_S of connecting.
    LOGIN_TIMEOUT = "LOGIN_TIMEOUT"
