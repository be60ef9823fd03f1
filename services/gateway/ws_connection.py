"""One WebSocket client connection: RFC 6455 by the ``websockets`` package's sans-I/O
``ServerProtocol``, inside the TCP (or TLS) protocol.

The shape of tls_connection: this shell moves bytes between the transport below and the
WebSocket protocol object, which does all of RFC 6455 (the upgrade handshake, the Origin
check, framing, masking, ping/pong, the close handshake, size limits), and hands the
Gateway's connection protocol a transport (gateway.layered_transport) whose every ``write``
is one binary message. The Gateway writes one v1 frame per call (an answer, a push, a
KICKOUT), and each binary message a client sends must carry exactly one v1 frame, header
included: the session protocol is the same byte for byte as on TCP, so everything after
this shell (limits, login, sessions, RECONNECT across transports) is the TCP path's.

Why the sans-I/O protocol and not ``websockets``' own asyncio server: the client
connection stays one ``asyncio.Protocol`` on uvloop, with no task, stream or queue per
connection, as for TCP and TLS.

What it refuses, closing that connection only:
- an upgrade that is not a WebSocket GET of ``/``, or from an Origin not in
  ``GATEWAY_WS_ALLOWED_ORIGINS``: an HTTP error answer (``websockets`` writes it), counted;
- a text message: KICKOUT ``PROTOCOL_ERROR``, then close 1003 (unsupported data);
- a binary message that is not exactly one v1 frame: KICKOUT ``PROTOCOL_ERROR``, then close
  1002 (protocol error), as a bad frame on TCP;
- a message over ``MAX_FRAME_BYTES`` (plus the 4-byte length): close 1009, sent by
  ``websockets`` before the message is buffered (no KICKOUT: the frame was never read);
- an upgrade not finished within the idle timeout: the TCP connection is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from websockets.exceptions import InvalidState
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin

from gateway import metrics
from gateway.connection import ClientConnection
from gateway.layered_transport import LayeredTransport, LayerProtocol
from gateway.replies import kickout_frame
from protocol.frame import LENGTH_PREFIX_SIZE, MIN_LENGTH
from protocol.messages import KickReason

log = logging.getLogger("gateway.ws")
#: ``websockets``' own log lines ("connection open" per connection at INFO, which "Client
#: connected" already says): its warnings and errors only.
_RFC6455_LOG = logging.getLogger("gateway.ws.rfc6455")
_RFC6455_LOG.setLevel(logging.WARNING)

#: The one path the WebSocket listener serves.
WS_PATH = "/"


class WsConnection(LayerProtocol):
    """The transport protocol of the WebSocket port: runs the upgrade, then carries the
    connection protocol made by ``make_protocol()`` over WebSocket messages."""

    def __init__(self, make_protocol: Callable[[], ClientConnection], max_frame_bytes: int,
                 origins: Sequence[str], timeout_s: float) -> None:
        super().__init__()
        self._make_protocol = make_protocol
        self._max_message = LENGTH_PREFIX_SIZE + max_frame_bytes
        self._origins: list[Origin | None] | None = (
            [Origin(origin) for origin in origins] if origins else None)
        self._timeout_s = timeout_s
        #: The connection protocol, once the upgrade succeeded.
        self._app: ClientConnection | None = None
        #: The parts of a fragmented binary message received so far (None: not inside one).
        self._parts: list[bytes] | None = None
        #: Bytes read since frames were last handed over (WebSocket framing included).
        self._read = 0
        self._peer: Any = None

    # ------------------------------------------------------------------ upgrade
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._start_timer(transport, self._timeout_s)
        self._ws = ServerProtocol(origins=self._origins, max_size=self._max_message,
                                  logger=_RFC6455_LOG)
        self._peer = transport.get_extra_info("peername")

    def _timed_out(self) -> None:
        self._timer = None
        if self._app is None and not self._closing:
            self._refused("timeout", "upgrade not finished within the idle timeout")
            self.abort()

    def _upgrade(self, request: Request) -> None:
        ws = self._ws
        if request.path.partition("?")[0] != WS_PATH:
            response = ws.reject(404, f"WebSocket is served on {WS_PATH} only\n")
        else:
            response = ws.accept(request)
        ws.send_response(response)
        self._flush()
        if response.status_code != 101:
            reason = "origin" if response.status_code == 403 else (
                "path" if response.status_code == 404 else "handshake")
            self._refused(reason, f"HTTP {response.status_code} {response.reason_phrase}")
            self._close_below()
            return
        self._cancel_timer()
        metrics.ws_upgrades.inc()
        app = self._app = self._make_protocol()
        assert self._below is not None
        app.connection_made(cast(asyncio.Transport, LayeredTransport(self, self._below)))

    def _refused(self, reason: str, detail: str) -> None:
        metrics.ws_upgrade_failures.labels(reason).inc()
        log.debug("WebSocket upgrade refused: Peer=%s, Reason=%s (%s)", self._peer, reason,
                  detail)

    # ------------------------------------------------------------------ incoming
    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        ws = self._ws
        ws.receive_data(data)
        self._read += len(data)
        messages: list[bytes] = []
        for event in ws.events_received():
            if isinstance(event, Request):
                self._upgrade(event)
            elif isinstance(event, Frame) and not self._frame(event, messages):
                break
        self._flush()  # pongs, the close handshake, a close 1009 from websockets
        app = self._app
        if messages and app is not None and not self._closing:
            # Whole frames, each checked (_message): no byte stream to split.
            app.frames_received(messages, self._read)
            self._read = 0
        if self._app is None and ws.handshake_exc is not None and not self._closing:
            self._refused("handshake", str(ws.handshake_exc))  # not even an HTTP request
        if ws.state is not State.OPEN and (ws.state is State.CLOSED or ws.close_expected()):
            self._close_below()

    def _frame(self, frame: Frame, messages: list[bytes]) -> bool:
        """Take one WebSocket frame; False when the connection is being closed."""
        opcode = frame.opcode
        if opcode is Opcode.BINARY or (opcode is Opcode.CONT and self._parts is not None):
            if opcode is Opcode.BINARY and frame.fin:
                return self._message(bytes(frame.data), messages)
            parts = self._parts = (self._parts or [])
            parts.append(bytes(frame.data))
            if not frame.fin:
                return True
            self._parts = None
            return self._message(b"".join(parts), messages)
        if opcode is Opcode.TEXT or opcode is Opcode.CONT:
            self._fail(CloseCode.UNSUPPORTED_DATA, "text messages are not accepted",
                       "text_message")
            return False
        return True  # ping (websockets queued the pong), pong, close (handshake answered)

    def _message(self, data: bytes, messages: list[bytes]) -> bool:
        size = len(data)
        if size < LENGTH_PREFIX_SIZE + MIN_LENGTH or int.from_bytes(
                data[:LENGTH_PREFIX_SIZE], "big") != size - LENGTH_PREFIX_SIZE:
            self._fail(CloseCode.PROTOCOL_ERROR, "a message must be exactly one frame",
                       "bad_message")
            return False
        messages.append(data)
        return True

    def _fail(self, code: CloseCode, reason: str, label: str) -> None:
        """KICKOUT PROTOCOL_ERROR, then the close handshake with ``code``."""
        metrics.ws_protocol_errors.labels(label).inc()
        log.info("Protocol error, closing: Peer=%s, Reason=%s", self._peer, reason)
        if self._app is not None:
            self._send(kickout_frame(KickReason.PROTOCOL_ERROR))
        self._send_close(code, reason)

    def eof_received(self) -> bool:
        self._ws.receive_eof()
        if self._app is not None and not self._closing:
            self._app.eof_received()
        return False  # the transport below closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._closing = True
        self._below = None
        if self._app is not None:
            self._app.connection_lost(exc)

    # ------------------------------------------------------------------ outgoing
    def write(self, data: bytes) -> None:
        """One v1 frame out, as one binary message (the hot path: no more than that)."""
        below = self._below
        if self._closing or below is None:
            return
        ws = self._ws
        if ws.state is not State.OPEN:
            return  # closing already (the peer's close came first): dropped, as on TCP
        ws.send_binary(data)
        below.write(b"".join(ws.data_to_send()))

    def _send(self, data: bytes) -> None:
        # Closing already (the peer's close came first): dropped, as on a closing TCP socket.
        with contextlib.suppress(InvalidState):
            self._ws.send_binary(data)

    def _send_close(self, code: CloseCode, reason: str = "") -> None:
        ws = self._ws
        if ws.state is State.OPEN:
            ws.send_close(code, reason)
        self._flush()
        self._close_below()

    def _flush(self) -> None:
        below = self._below
        if below is None:
            return
        chunks = self._ws.data_to_send()
        if chunks:  # (the TLS transport below WSS has no writelines)
            below.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _close_below(self) -> None:
        """Close the transport below once what is queued has left (the server closes the
        TCP connection first, as RFC 6455 §7.1.1 asks)."""
        if self._closing or self._below is None:
            return
        self._closing = True
        self._cancel_timer()
        self._below.close()

    def close(self) -> None:
        """The connection protocol closes: close 1000 (after what it wrote), then TCP."""
        if self._closing:
            return
        self._send_close(CloseCode.NORMAL_CLOSURE)
