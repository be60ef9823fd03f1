"""One client TCP connection: framing and flow control only, everything else is the relay's.

A thin asyncio shell: every decision (what to forward, when to pause reading, when to kick)
is the relay's, made on plain attributes kept here, so the relay can be tested with a fake
transport and no event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, cast

from gateway import metrics
from gateway.limits import InflightWindow, RateLimiter
from protocol.frame import FrameSplitter

if TYPE_CHECKING:
    from gateway.relay import Relay


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "active",
        "backlog",
        "closing",
        "counters",
        "held",
        "held_since",
        "idle_since",
        "limiter",
        "login_deadline",
        "node",
        "paused",
        "reading_paused",
        "relay",
        "session_id",
        "socket_id",
        "socket_id_text",
        "splitter",
        "transport",
        "window",
    )

    def __init__(self, relay: Relay, max_frame_bytes: int, transport: str = "tcp") -> None:
        self.relay = relay
        #: This connection's transport (tcp, tls, ws, wss) and its traffic counters.
        self.counters = metrics.COUNTERS[transport]
        socket_uuid = uuid.uuid4()
        self.socket_id = socket_uuid.bytes
        #: As logged (the seed's SocketId, a GUID): formatted once, not per log line.
        self.socket_id_text = str(socket_uuid)
        self.splitter = FrameSplitter(max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        #: Routing id of the GameServer this socket talks to (tentative until pinned).
        self.node: bytes | None = None
        self.session_id = 0
        self.paused = False
        self.closing = False
        #: Set by every read; the idle sweep clears it (cheaper than a clock read per read).
        self.active = True
        self.idle_since = 0.0
        #: Frames kept back during a session handover (HOLD .. PIN), else None.
        self.held: list[bytes] | None = None
        self.held_since = 0.0
        #: Requests forwarded and not yet answered (set up by the relay on connect).
        self.window = InflightWindow(relay.max_inflight, relay.max_inflight_bytes)
        #: Frames read while the window was full, forwarded as answers free it.
        self.backlog: list[bytes] | None = None
        #: We stopped reading the socket (window full), not to be confused with ``paused``.
        self.reading_paused = False
        self.limiter: RateLimiter | None = None
        #: When the connection is kicked unless it logs in first (0: logged in, or no limit).
        self.login_deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.relay.on_connect(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.counters.bytes_in[0] += len(data)
        frames = self.splitter.feed(data)
        if frames:
            # Only whole frames count as activity: a trickle of bytes never completing a
            # frame must not hold a connection open forever.
            self.active = True
            self.relay.forward(self, frames)
        if self.splitter.error is not None:
            self.relay.protocol_error(self, str(self.splitter.error))

    def frames_received(self, frames: list[bytes], size: int) -> None:
        """Whole frames from a message transport (WebSocket: one per message, each checked
        there), ``size`` bytes read for them: what ``data_received`` does after splitting."""
        if self.closing:
            return
        self.counters.bytes_in[0] += size
        self.active = True
        self.relay.forward(self, frames)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.on_disconnect(self)

    def pause_writing(self) -> None:
        self.paused = True
        self.relay.check_backpressure(self)

    def resume_writing(self) -> None:
        self.paused = False

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        transport.write(data)
        if self.paused:
            self.relay.check_backpressure(self)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closing:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closing:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self, final: bytes = b"") -> None:
        """Write ``final`` (a KICKOUT_NTF, say), then close once the buffer has drained."""
        if self.closing or self.transport is None:
            return
        if final:
            self.transport.write(final)
        self.closing = True
        self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
