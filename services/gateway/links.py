"""The Gateway's data-plane socket: one ZeroMQ ROUTER connected to every live GameServer.

One socket (one file descriptor for the event loop) reaches all GameServers; each is
addressed by its routing id ``gs-<node_id>``, set with ZMQ_CONNECT_ROUTING_ID when dialling.
Records are batched per GameServer and sent once per event-loop tick. ROUTER_MANDATORY
turns "no such peer" into an error: the owner answers the affected clients instead of
losing their frames in silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import zmq

from protocol.internal import BatchWriter, Kind, MalformedBatch, Record, iter_records
from servicekit.zmqloop import ZmqReader

log = logging.getLogger("gateway.links")

HIGH_WATER_MARK = 100_000


@dataclass(slots=True)
class Upstream:
    """A GameServer as this Gateway sees it."""

    node_id: int
    routing_id: bytes
    endpoint: str
    sessions: int = 0
    #: Unpinned connections sent its way since its last reported session count.
    assigned: int = 0
    draining: bool = False
    #: Listed in the Redis registry at the last successful read.
    listed: bool = True
    last_ack: float = 0.0


class GameServerLinks:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        routing_id: bytes,
        on_records: Callable[[bytes, list[Record]], None],
        on_undeliverable: Callable[[bytes, bytes, str], None],
        liveness_s: float,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_records = on_records
        self._on_undeliverable = on_undeliverable
        self.liveness_s = liveness_s
        sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
        sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.LINGER, 1000)
        self._socket = sock
        self.upstreams: dict[bytes, Upstream] = {}
        self._outboxes: dict[bytes, BatchWriter] = {}
        self._flush_scheduled = False
        self._reader = ZmqReader(sock, self._on_messages, self._loop)

    # ------------------------------------------------------------- membership
    def update(self, registry: dict[int, tuple[str, int, dict[str, str]]]) -> None:
        """Dial new GameServers, hang up on vanished ones, follow changed addresses."""
        seen: set[bytes] = set()
        for node_id, (host, port, fields) in registry.items():
            routing_id = f"gs-{node_id}".encode()
            endpoint = f"tcp://{host}:{port}"
            seen.add(routing_id)
            upstream = self.upstreams.get(routing_id)
            if upstream is not None and upstream.endpoint != endpoint:
                log.info("GameServer moved: node %d %s -> %s", node_id, upstream.endpoint,
                         endpoint)
                self._hang_up(upstream)
                upstream = None
            if upstream is None:
                upstream = Upstream(node_id, routing_id, endpoint)
                self._socket.setsockopt(zmq.CONNECT_ROUTING_ID, routing_id)
                self._socket.connect(endpoint)
                self.upstreams[routing_id] = upstream
                log.info("GameServer discovered: node %d at %s", node_id, endpoint)
            upstream.listed = True
            upstream.draining = upstream.draining or fields.get("draining") == "1"
        now = time.monotonic()
        for routing_id in list(self.upstreams):
            if routing_id in seen:
                continue
            upstream = self.upstreams[routing_id]
            if upstream.listed:
                upstream.listed = False
                log.warning("GameServer left the registry: node %d at %s", upstream.node_id,
                            upstream.endpoint)
            # Membership comes from the registry, liveness from HELLO_ACKs: a node whose
            # entry vanished (Redis restarted without it, say) but still answers keeps its
            # pinned clients until it stops answering.
            if not self._is_live(upstream, now):
                log.warning("GameServer gone: node %d at %s", upstream.node_id,
                            upstream.endpoint)
                self._hang_up(upstream)

    def _hang_up(self, upstream: Upstream) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._socket.disconnect(upstream.endpoint)
        self.upstreams.pop(upstream.routing_id, None)

    def say_hello(self, body: bytes) -> None:
        for routing_id in self.upstreams:
            self.send(routing_id, Kind.HELLO, bytes(16), 0, body)

    def on_ack(self, routing_id: bytes, node_id: int, body: bytes) -> None:
        upstream = self.upstreams.get(routing_id)
        if upstream is None:
            return
        if not self._is_live(upstream, time.monotonic()):
            log.info("GameServer connected: node %d at %s", node_id, upstream.endpoint)
        upstream.last_ack = time.monotonic()
        try:
            status = orjson.loads(body)
            sessions, draining = int(status["sessions"]), bool(status["draining"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("Unreadable HELLO_ACK from node %d", node_id)
            return
        if draining and not upstream.draining:
            log.info("GameServer draining, no new sessions for it: node %d", node_id)
        upstream.draining = draining
        if sessions != upstream.sessions:
            upstream.sessions = sessions
            upstream.assigned = 0

    def _is_live(self, upstream: Upstream, now: float) -> bool:
        return now - upstream.last_ack < self.liveness_s

    def live(self) -> list[Upstream]:
        now = time.monotonic()
        return [u for u in self.upstreams.values() if self._is_live(u, now)]

    def is_live(self, routing_id: bytes) -> bool:
        upstream = self.upstreams.get(routing_id)
        return upstream is not None and self._is_live(upstream, time.monotonic())

    def choose(self) -> Upstream | None:
        """Least sessions first (reported count plus what we sent since), skipping drainers."""
        best: Upstream | None = None
        best_load = 0
        now = time.monotonic()
        for upstream in self.upstreams.values():
            if upstream.draining or not self._is_live(upstream, now):
                continue
            load = upstream.sessions + upstream.assigned
            if best is None or load < best_load:
                best, best_load = upstream, load
        if best is not None:
            best.assigned += 1
        return best

    # ------------------------------------------------------------- data plane
    def send(self, routing_id: bytes, kind: Kind, socket_id: bytes, arg: int, body: bytes) -> None:
        outbox = self._outboxes.get(routing_id)
        if outbox is None:
            outbox = self._outboxes[routing_id] = BatchWriter()
        outbox.add(kind, socket_id, arg, body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        for routing_id, outbox in self._outboxes.items():
            if not outbox:
                continue
            batch = outbox.take()
            try:
                self._socket.send_multipart((routing_id, batch), zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._on_undeliverable(routing_id, batch, "high_water_mark")
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                self._on_undeliverable(routing_id, batch, "unreachable")
        self._reader.poke()

    def _on_messages(self, messages: list[list[bytes]]) -> None:
        for message in messages:
            if len(message) != 2:
                log.warning("Ignoring a data-plane message with %d frames", len(message))
                continue
            routing_id, batch = message
            try:
                records = list(iter_records(batch))
            except MalformedBatch as exc:
                log.error("Malformed batch from %s: %s", routing_id.decode(errors="replace"), exc)
                continue
            self._on_records(routing_id, records)

    def close(self) -> None:
        self.flush()
        self._reader.close()
        self._socket.close(linger=1000)
