"""The Gateway's routing core: client frames to GameServers, their records back to sockets.

It never parses a payload. Per client frame it does a dict lookup and appends to a batch;
per record from a GameServer, a dict lookup and a socket write. Frames for which no
GameServer can be reached are answered with ``ERROR_RES SERVER_UNAVAILABLE`` right here,
so no request goes unanswered because of a routing problem.

It is also where a hostile client is contained, before anything reaches a GameServer: a
token-bucket rate limit (answered ``ERROR_RES RATE_LIMITED``), an in-flight window that
stops reading a socket whose requests are not being answered, the send-buffer cap, the
idle and login timeouts. Time comes from an injected clock, so all of it is tested
in-process with a fake transport and fake links.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway import metrics
from gateway.admission import Admission
from gateway.connection import ClientConnection
from gateway.replies import error_frame, kickout_frame
from protocol.frame import HEADER
from protocol.internal import (
    Kind,
    MalformedBatch,
    Record,
    iter_records,
    unpack_reroute,
)
from protocol.messages import FIRST_NOTIFICATION_TYPE, ErrorCode, KickReason

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.links import GameServerLinks

log = logging.getLogger("gateway")

NO_GAMESERVER_WARNING_INTERVAL_S = 5.0
#: A session handover holds at most this many of a socket's frames.
MAX_HELD_FRAMES = 10_000


class Relay:
    def __init__(self, config: GatewayConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.connections: dict[bytes, ClientConnection] = {}
        self.clock = clock
        self.max_connections = config.max_connections
        self.max_send_buffer_bytes = config.max_send_buffer_bytes
        self.max_inflight = config.client_max_inflight
        self.max_inflight_bytes = config.client_max_inflight_bytes
        self.admission = Admission(config, clock, route=self._route, kick=self._close)
        self.login_timeout_s = config.login_timeout_s
        self.idle_timeout_s = config.idle_timeout_s
        self.handover_timeout_s = config.handover_timeout_s
        #: Named in the warning when no GameServer is live.
        self.nodes_key = config.keys.nodes
        self.links: GameServerLinks | None = None
        self.accepting = True
        self.debug = log.isEnabledFor(logging.DEBUG)
        self.on_empty: Callable[[], None] | None = None
        self._last_no_gameserver_warning = -NO_GAMESERVER_WARNING_INTERVAL_S
        for transport in metrics.TRANSPORTS:
            metrics.connected_clients.labels(transport).set_function(
                functools.partial(self._open_over, transport))
        metrics.pinned_sockets.set_function(
            lambda: sum(1 for c in self.connections.values() if c.session_id))
        metrics.reading_paused_clients.set_function(
            lambda: sum(1 for c in self.connections.values() if c.reading_paused))

    def _open_over(self, transport: str) -> int:
        """Client connections open now over ``transport`` (counted when scraped)."""
        return sum(1 for c in self.connections.values() if c.counters.name == transport)

    # ------------------------------------------------------------- client side
    def on_connect(self, conn: ClientConnection) -> None:
        if not self.accepting:
            metrics.rejected_connections.labels("draining").inc()
            conn.close(kickout_frame(KickReason.SERVER_SHUTDOWN))
            return
        if len(self.connections) >= self.max_connections:
            metrics.rejected_connections.labels("max_connections").inc()
            log.warning("Connection refused: GATEWAY_MAX_CONNECTIONS=%d reached",
                        self.max_connections)
            conn.abort()
            return
        assert conn.transport is not None
        conn.transport.set_write_buffer_limits(high=min(self.max_send_buffer_bytes // 4, 262144))
        now = self.clock()
        self.admission.on_connect(conn, now)
        if self.login_timeout_s:
            conn.login_deadline = now + self.login_timeout_s
        self.connections[conn.socket_id] = conn
        metrics.connections.labels(conn.counters.name).inc()
        log.info("Client connected: SocketId=%s", _sid(conn))

    def forward(self, conn: ClientConnection, frames: list[bytes]) -> None:
        """Whole frames read from a client: through admission control to its GameServer."""
        conn.counters.frames_in[0] += len(frames)
        if self.debug:
            for frame in frames:
                log.debug("Packet received: Socket=%s, Size=%d", _sid(conn), len(frame))
        self.admission.forward(conn, frames)

    # ------------------------------------------------------------- routing
    def _route(self, conn: ClientConnection, frames: list[bytes]) -> None:
        """Send admitted frames to the socket's GameServer (picking one if it has none)."""
        if conn.held is not None:
            self._hold(conn, frames)
            return
        links = self.links
        assert links is not None
        node = conn.node
        if node is None or (not conn.session_id and not links.takes_new_sessions(node)):
            upstream = links.choose()
            if upstream is None:
                self._warn_no_gameserver()
                for frame in frames:
                    self._answer_unavailable(conn, frame, "no_gameserver")
                return
            node = conn.node = upstream.routing_id
        send = links.send
        socket_id = conn.socket_id
        session_id = conn.session_id
        for frame in frames:
            send(node, Kind.FRAME, socket_id, session_id, frame)

    def _warn_no_gameserver(self) -> None:
        """The seed's troubleshooting line, at most every few seconds (not per frame)."""
        now = self.clock()
        if now - self._last_no_gameserver_warning >= NO_GAMESERVER_WARNING_INTERVAL_S:
            self._last_no_gameserver_warning = now
            log.warning("Failed to connect to GameServer: none is live. Check that a GameServer "
                        "is running and registered in Redis (SMEMBERS %s), and that this "
                        "Gateway can reach its GAMESERVER_ADVERTISE_HOST:GAMESERVER_P2P_PORT",
                        self.nodes_key)

    def _answer_unavailable(self, conn: ClientConnection, frame: bytes, reason: str) -> None:
        """Answer an admitted frame here (it frees its window slot; the caller pumps, as
        admission is usually still on the stack)."""
        metrics.dropped_frames.labels(reason).inc()
        sequence_id = HEADER.unpack_from(frame, 0)[4]
        conn.write(error_frame(sequence_id, ErrorCode.SERVER_UNAVAILABLE,
                               "no GameServer could take this request; retry shortly"))
        conn.window.answered()

    def protocol_error(self, conn: ClientConnection, detail: str) -> None:
        metrics.protocol_errors.inc()
        log.warning("Protocol error, closing: Socket=%s: %s", _sid(conn), detail)
        self._close(conn, KickReason.PROTOCOL_ERROR, "protocol_error")

    def sweep(self, now: float) -> None:
        """Periodic timeouts of every connection: unfinished handovers, connections that
        never logged in, and idle ones. Activity is a flag set per read and turned into
        a timestamp here, so the read path never reads the clock for it."""
        idle_timeout = self.idle_timeout_s
        for conn in list(self.connections.values()):
            if conn.closing:
                continue
            if conn.held is not None and now - conn.held_since > self.handover_timeout_s:
                log.warning("Handover did not complete, closing: Socket=%s", _sid(conn))
                self._close(conn, KickReason.SERVER_SHUTDOWN, "handover_timeout")
            elif conn.login_deadline and now >= conn.login_deadline:
                log.info("Login timeout, closing: Socket=%s", _sid(conn))
                self._close(conn, KickReason.LOGIN_TIMEOUT, "login_timeout")
            elif conn.active:
                conn.active = False
                conn.idle_since = now
            elif now - conn.idle_since >= idle_timeout:
                log.info("Idle timeout, closing: Socket=%s", _sid(conn))
                self._close(conn, KickReason.IDLE_TIMEOUT, "idle_timeout")

    def _close(self, conn: ClientConnection, reason: KickReason, label: str) -> None:
        if conn.closing:
            return
        metrics.disconnects.labels(label).inc()
        conn.close(kickout_frame(reason))
        self._notify_closed(conn, label)

    def check_backpressure(self, conn: ClientConnection) -> None:
        transport = conn.transport
        if transport is None or conn.closing:
            return
        if transport.get_write_buffer_size() > self.max_send_buffer_bytes:
            metrics.backpressure_disconnects.inc()
            metrics.disconnects.labels("backpressure").inc()
            log.warning("Client not reading, disconnecting: Socket=%s, Buffered=%d bytes",
                        _sid(conn), transport.get_write_buffer_size())
            conn.abort()
            self._notify_closed(conn, "backpressure")

    def on_disconnect(self, conn: ClientConnection) -> None:
        if self.connections.pop(conn.socket_id, None) is None:
            return
        if not conn.closing:
            conn.closing = True
            metrics.disconnects.labels("client_closed").inc()
            self._notify_closed(conn, "client_closed")
        log.info("Client disconnected: SocketId=%s", _sid(conn))
        if not self.connections and self.on_empty is not None:
            self.on_empty()

    def _notify_closed(self, conn: ClientConnection, reason: str) -> None:
        """Tell the socket's GameServer once, so the session enters its reconnect grace."""
        if conn.node is not None and self.links is not None:
            self.links.send(conn.node, Kind.CLOSED, conn.socket_id, conn.session_id,
                            reason.encode())
            conn.node = None

    # ------------------------------------------------------------- GameServer side
    def on_records(self, routing_id: bytes, records: list[Record]) -> None:
        connections = self.connections
        for kind, socket_id, arg, body in records:
            if kind == Kind.SEND:
                conn = connections.get(socket_id)
                if conn is None:
                    metrics.unroutable_records.labels("send").inc()
                    continue
                conn.write(body)
                counters = conn.counters
                counters.frames_out[0] += 1
                counters.bytes_out[0] += len(body)
                # An answer (type below the notifications; u16 at offset 4) frees a slot.
                if len(body) > 5 and not body[4] and body[5] < FIRST_NOTIFICATION_TYPE:
                    self.admission.answered(conn)
            elif kind == Kind.PIN:
                conn = connections.get(socket_id)
                if conn is None:
                    metrics.unroutable_records.labels("pin").inc()
                    continue
                node = body or routing_id
                moved = conn.node is not None and conn.node != node
                if arg:
                    conn.login_deadline = 0.0
                elif conn.session_id and self.login_timeout_s:
                    # Logged out (or its session is gone): log in again, in time.
                    conn.login_deadline = self.clock() + self.login_timeout_s
                conn.session_id = arg
                conn.node = node
                if arg:
                    log.info("Session pinned: SocketId=%s, SessionId=%d%s", _sid(conn), arg,
                             f", Node={node.decode(errors='replace')}" if moved else "")
                if conn.held is not None:
                    self._release_held(conn)
            elif kind == Kind.HOLD:
                conn = connections.get(socket_id)
                if conn is not None and conn.held is None and not conn.closing:
                    conn.held = []
                    conn.held_since = self.clock()
                # Acknowledged even for a vanished socket: the GameServer counts the answers.
                if self.links is not None:
                    self.links.send(routing_id, Kind.HOLD_ACK, socket_id, arg, b"")
            elif kind == Kind.REROUTE:
                conn = connections.get(socket_id)
                if conn is None or self.links is None:
                    continue
                try:
                    target, frame = unpack_reroute(body)
                except MalformedBatch:
                    log.error("Malformed REROUTE from %s", routing_id.decode(errors="replace"))
                    continue
                conn.node = target
                self.links.send(target, Kind.FRAME, socket_id, conn.session_id, frame)
            elif kind == Kind.CLOSE:
                conn = connections.get(socket_id)
                if conn is None:
                    continue
                if not conn.closing:
                    metrics.disconnects.labels("kicked").inc()
                    conn.close(body)
                    # The GameServer asked for this; it still gets CLOSED to tidy up its side.
                    self._notify_closed(conn, "closed_by_server")
            elif kind == Kind.HELLO_ACK and self.links is not None:
                self.links.on_ack(routing_id, arg, body)

    def on_undeliverable(self, routing_id: bytes, batch: bytes, reason: str) -> None:
        """A batch for a GameServer could not be queued: answer every request in it."""
        try:
            records = list(iter_records(batch))
        except MalformedBatch:
            return
        frames = [r for r in records if r.kind == Kind.FRAME]
        if frames:
            log.warning("GameServer %s unreachable (%s): answering %d requests with "
                        "SERVER_UNAVAILABLE", routing_id.decode(errors="replace"), reason,
                        len(frames))
        for record in frames:
            conn = self.connections.get(record.socket_id)
            if conn is not None:
                self._answer_unavailable(conn, record.body, reason)
                if not conn.session_id:
                    conn.node = None  # let the next frame pick another GameServer
                if conn.reading_paused:
                    self.admission.pump(conn)

    # ------------------------------------------------------------- handover and failover
    def _hold(self, conn: ClientConnection, frames: list[bytes]) -> None:
        assert conn.held is not None
        conn.held.extend(frames)
        if len(conn.held) > MAX_HELD_FRAMES:
            log.warning("Too many frames held during a handover, closing: Socket=%s",
                        _sid(conn))
            self._close(conn, KickReason.SERVER_SHUTDOWN, "handover_overflow")

    def _release_held(self, conn: ClientConnection) -> None:
        held, conn.held = conn.held, None
        if held and conn.node is not None and self.links is not None:
            for frame in held:
                self.links.send(conn.node, Kind.FRAME, conn.socket_id, conn.session_id, frame)

    def node_down(self, routing_id: bytes) -> None:
        """A GameServer died: every client that talked to it gets SERVER_SHUTDOWN, so
        nobody waits in silence for an answer that died with it. The client library
        reconnects through any Gateway and resumes with its key (re-sending unanswered
        requests with their sequence ids), or logs in again if it had no session yet."""
        kicked = 0
        owed: list[tuple[bytes, int]] = []
        for conn in list(self.connections.values()):
            if conn.node != routing_id or conn.closing:
                continue
            conn.node = None
            if conn.session_id:
                owed.append((conn.socket_id, conn.session_id))
            metrics.disconnects.labels("gameserver_down").inc()
            conn.close(kickout_frame(KickReason.SERVER_SHUTDOWN))
            kicked += 1
        if owed and self.links is not None:
            # A node that was only paused or cut off must still learn these sockets are gone
            # (else their sessions stay attached in its memory): told when it answers again.
            self.links.owe_closed(routing_id, owed)
        if kicked:
            log.warning("GameServer %s is down: %d clients told to resume elsewhere",
                        routing_id.decode(errors="replace"), kicked)

    # ------------------------------------------------------------- shutdown
    def announce_shutdown(self) -> None:
        """Tell every client SERVER_SHUTDOWN but keep serving it: answers already on their
        way still arrive while a well-behaved client moves to another Gateway."""
        frame = kickout_frame(KickReason.SERVER_SHUTDOWN)
        for conn in self.connections.values():
            conn.write(frame)

    def close_all(self, label: str) -> None:
        for conn in list(self.connections.values()):
            if not conn.closing:
                metrics.disconnects.labels(label).inc()
                conn.close()
                self._notify_closed(conn, label)


def _sid(conn: ClientConnection) -> str:
    return conn.socket_id_text
