"""The request object every middleware and handler sees, and how a handler refuses one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from protocol.frame import HEADER, LENGTH_PREFIX_SIZE
from protocol.messages import RESPONSE_TYPE, ErrorCode, MsgType
from protocol.payload import decode_payload, encode_message
from servicekit.redis_health import REDIS_FAILURES

if TYPE_CHECKING:
    from gameserver.hub import Hub
    from gameserver.state import Session

_UNDECODED = object()


class Reject(Exception):
    """Raised by a handler to answer ``ERROR_RES {code, message}``; nothing else happens."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@contextmanager
def store_unavailable_as_reject(log: logging.Logger | None = None, message: str = "",
                                *args: object) -> Iterator[None]:
    """Turn a Redis failure inside the block into ``Reject(SERVER_UNAVAILABLE)``.

    A request whose Redis work failed (or ran past its deadline) is answered, never dropped:
    the client learns to retry, and every such answer carries the same message. ``message``
    % ``args`` is logged at ERROR with ``: <the error>`` appended; without ``log`` nothing
    is logged.
    """
    try:
        yield
    except REDIS_FAILURES as exc:
        if log is not None:
            log.error(message + ": %s", *args, str(exc) or type(exc).__name__)
        raise Reject(ErrorCode.SERVER_UNAVAILABLE, "session store unavailable") from None


class RequestContext:
    __slots__ = (
        "_payload",
        "close_after",
        "flags",
        "frame",
        "gateway_id",
        "hold",
        "hub",
        "msg_type",
        "needs_commit",
        "pinned_session_id",
        "response",
        "result",
        "sequence_id",
        "session",
        "socket_id",
    )

    def __init__(
        self,
        hub: Hub,
        gateway_id: bytes,
        socket_id: bytes,
        pinned_session_id: int,
        frame: bytes,
        session: Session | None,
    ) -> None:
        self.hub = hub
        self.gateway_id = gateway_id
        self.socket_id = socket_id
        self.pinned_session_id = pinned_session_id
        self.frame = frame
        _, self.msg_type, self.flags, _, self.sequence_id = HEADER.unpack_from(frame, 0)
        self.session = session
        #: The encoded response frame, once a handler or middleware produced one.
        self.response: bytes | None = None
        #: "ok" or the error code: the ``result`` label of the request metrics.
        self.result = "ok"
        #: The handler changed state that must reach Redis before the response is sent.
        self.needs_commit = False
        #: The response is a cached one still waiting for its commit.
        self.hold = False
        #: Close the socket after the response (LOGOUT).
        self.close_after = False
        self._payload: Any = _UNDECODED

    @property
    def payload(self) -> dict[str, Any]:
        """The decoded JSON object; raises :class:`protocol.BadPayload` on bad input."""
        if self._payload is _UNDECODED:
            # A compressed payload may not inflate beyond what an uncompressed frame could
            # carry: that also bounds every response that echoes it back.
            self._payload = decode_payload(self.frame, self.flags,
                                           self.hub.config.max_frame_bytes)
        payload: dict[str, Any] = self._payload
        return payload

    @property
    def msg_name(self) -> str:
        try:
            return MsgType(self.msg_type).name
        except ValueError:
            return "UNKNOWN"

    def reply(self, payload: Any, msg_type: int | None = None) -> None:
        if msg_type is None:
            msg_type = RESPONSE_TYPE[self.msg_type]
        session = self.session
        compress_above = session.compress_above if session is not None else None
        response = encode_message(msg_type, self.sequence_id, payload, compress_above)
        if len(response) - LENGTH_PREFIX_SIZE > self.hub.config.max_frame_bytes:
            raise Reject(ErrorCode.BAD_PAYLOAD, "the response would exceed MAX_FRAME_BYTES")
        self.response = response

    def fail(self, code: ErrorCode, message: str) -> None:
        self.result = code.value
        self.needs_commit = False
        self.response = encode_message(
            MsgType.ERROR_RES, self.sequence_id, {"code": code.value, "message": message}
        )
