"""Admission control between a client's socket and the relay's routing: the rate limit, the
in-flight window and the frames parked while the window is full.

Everything here runs before a frame reaches a GameServer, so a hostile client is contained
at the edge. It decides on plain attributes of the connection (see
:mod:`gateway.limits` for the two pure counters) with an injected clock; the relay hands
it the frames, tells it about answers, and gets back only the frames it may route.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway import metrics
from gateway.connection import ClientConnection
from gateway.limits import RateLimiter
from gateway.replies import error_frame
from protocol.frame import HEADER
from protocol.internal import format_socket_id
from protocol.messages import ErrorCode, KickReason

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

log = logging.getLogger("gateway")

Route = Callable[[ClientConnection, list[bytes]], None]
Kick = Callable[[ClientConnection, KickReason, str], None]


class Admission:
    def __init__(self, config: GatewayConfig, clock: Callable[[], float], route: Route,
                 kick: Kick) -> None:
        self.clock = clock
        self.rate_limit = config.client_rate_limit
        self.rate_burst = config.rate_burst
        self.rate_limit_kick_s = config.rate_limit_kick_s
        self._route = route
        self._kick = kick

    def on_connect(self, conn: ClientConnection, now: float) -> None:
        if self.rate_limit:
            conn.limiter = RateLimiter(self.rate_limit, self.rate_burst, now)

    def forward(self, conn: ClientConnection, frames: list[bytes]) -> None:
        """Whole frames read from a client: rate-limit, then admit into its window."""
        limiter = conn.limiter
        if limiter is not None:
            now = self.clock()
            granted = limiter.take(now, len(frames))
            if granted < len(frames):
                self._refuse(conn, frames[granted:], limiter, now)
                if conn.closing:
                    return
                frames = frames[:granted]
        if conn.backlog is not None:
            conn.backlog.extend(frames)
        elif frames:
            self._admit(conn, frames)
        if conn.reading_paused:
            self.pump(conn)

    def answered(self, conn: ClientConnection) -> None:
        """An answer to one of the connection's requests was sent: it frees a slot."""
        conn.window.answered()
        if conn.reading_paused:
            self.pump(conn)

    def pump(self, conn: ClientConnection) -> None:
        """Answers made room: forward parked frames, and read again once none are left."""
        while conn.backlog and not conn.window.full and not conn.closing:
            backlog, conn.backlog = conn.backlog, None
            self._admit(conn, backlog)
        if not conn.backlog:
            conn.backlog = None
            if not conn.window.full:
                conn.resume_reading()

    def _refuse(self, conn: ClientConnection, frames: list[bytes], limiter: RateLimiter,
                now: float) -> None:
        """Over the rate limit: each frame answered RATE_LIMITED with its own sequence id
        (so it can be retried as it is), or, past RATE_LIMIT_KICK_S of this, the kick."""
        metrics.rate_limited_frames.inc(len(frames))
        if limiter.over_for(now) >= self.rate_limit_kick_s:
            log.warning("Rate limit exceeded for %.1fs, closing: Socket=%s",
                        self.rate_limit_kick_s, format_socket_id(conn.socket_id))
            self._kick(conn, KickReason.RATE_LIMITED, "rate_limited")
            return
        for frame in frames:
            sequence_id = HEADER.unpack_from(frame, 0)[4]
            conn.write(error_frame(sequence_id, ErrorCode.RATE_LIMITED,
                                   f"over {self.rate_limit:g} messages/s; retry later"))

    def _admit(self, conn: ClientConnection, frames: list[bytes]) -> None:
        """Route as many frames as the in-flight window has room for; park the rest and
        stop reading the socket until answers make room (uvicorn's flow control, per
        request instead of per byte: a client that does not wait for its answers can
        make us hold at most one window of its requests, plus one socket read)."""
        window = conn.window
        count = len(frames)
        admitted = 0
        while admitted < count and not window.full:
            window.add(len(frames[admitted]))
            admitted += 1
        if admitted < count:
            conn.backlog = frames[admitted:]
            frames = frames[:admitted]
        if window.full and not conn.reading_paused:
            metrics.reading_pauses.inc()
            conn.pause_reading()
        if frames:
            self._route(conn, frames)
