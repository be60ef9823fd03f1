"""The Gateway's data-plane socket: one ZeroMQ ROUTER connected to every live GameServer.

One socket (one file descriptor for the event loop) reaches all GameServers; each is
addressed by its routing id ``gs-<node_id>``, set with ZMQ_CONNECT_ROUTING_ID when dialling.
Records are batched per GameServer and sent once per event-loop tick. ROUTER_MANDATORY
turns "no such peer" into an error: the owner answers the affected clients instead of
losing their frames in silence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import zmq

from gateway import metrics
from protocol.internal import Kind
from servicekit.batchrouter import BatchRouter, RecordHandler, UndeliverableHandler
from servicekit.curve import ClusterKeys, CurveMismatch, ServerKeys
from servicekit.redial import RedialGuard
from servicekit.zap import describe_handshake_failure

log = logging.getLogger("gateway.links")

#: How long a down node's CLOSED notices are kept for its possible return (past any
#: session lease: by then its sessions have expired or moved anyway).
OWED_CLOSED_KEEP_S = 600.0


@dataclass(slots=True)
class Upstream:
    """A GameServer as this Gateway sees it."""

    node_id: int
    routing_id: bytes
    endpoint: str
    #: The CURVE public key it was dialled with (None: plaintext).
    server_key: bytes | None = None
    sessions: int = 0
    #: Unpinned connections sent its way since its last reported session count.
    assigned: int = 0
    draining: bool = False
    #: Listed in the Redis registry at the last successful read.
    listed: bool = True
    last_ack: float = 0.0
    #: Answered HELLO since it was last declared down.
    up: bool = False


class GameServerLinks:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        routing_id: bytes,
        on_records: RecordHandler,
        on_undeliverable: UndeliverableHandler,
        liveness_s: float,
        on_node_down: Callable[[bytes], None],
        curve: ClusterKeys | None = None,
    ) -> None:
        self.liveness_s = liveness_s
        self._on_node_down = on_node_down
        self._router = BatchRouter(context, routing_id, on_records, on_undeliverable,
                                   on_disconnected=self._disconnected,
                                   on_handshake_failed=self._handshake_failed, curve=curve,
                                   records=metrics.p2p_records, batches=metrics.p2p_batches)
        self._server_keys = ServerKeys(curve, log, "GameServer")
        #: Endpoints whose failed handshake is already logged (until the node answers).
        self._failed_handshakes: set[str] = set()
        self.send = self._router.send
        self.flush = self._router.flush
        self.upstreams: dict[bytes, Upstream] = {}
        #: A node hung up on is dialled again only after a pause (libzmq would abort).
        self._redial = RedialGuard()
        #: CLOSED records a down node must get if it comes back (even after leaving the
        #: registry: a paused process re-registers): routing id -> (kept until, sockets).
        self._owed_closed: dict[bytes, tuple[float, list[tuple[bytes, int]]]] = {}

    # ------------------------------------------------------------- membership
    def update(self, registry: dict[int, tuple[str, int, dict[str, str]]]) -> None:
        """Dial new GameServers, hang up on vanished ones, follow changed addresses."""
        seen: set[bytes] = set()
        for node_id, (host, port, fields) in registry.items():
            routing_id = f"gs-{node_id}".encode()
            endpoint = f"tcp://{host}:{port}"
            try:
                key = self._server_keys.for_node(node_id, endpoint, fields.get("curve_key", ""))
            except CurveMismatch:
                continue  # not dialled (logged); treated as gone below
            seen.add(routing_id)
            upstream = self.upstreams.get(routing_id)
            if upstream is not None and upstream.endpoint != endpoint:
                log.info("GameServer moved: node %d %s -> %s", node_id, upstream.endpoint,
                         endpoint)
                self._hang_up(upstream)
                upstream = None
            elif upstream is not None and upstream.server_key != key:
                log.info("GameServer node %d at %s changed its CURVE key", node_id, endpoint)
                self._hang_up(upstream)
                upstream = None
            if upstream is None:
                if not self._redial.may_dial(routing_id):
                    continue  # hung up a moment ago: dialled at the next update
                upstream = Upstream(node_id, routing_id, endpoint, key)
                self._router.connect(endpoint, routing_id, key)
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
        self._router.disconnect(upstream.endpoint)
        self._redial.hung_up(upstream.routing_id)
        self.upstreams.pop(upstream.routing_id, None)
        self._down(upstream)

    def _down(self, upstream: Upstream) -> None:
        """The node is dead to us: its sockets must move on (the relay decides how)."""
        was_up = upstream.up
        upstream.up = False
        upstream.last_ack = 0.0
        if was_up:
            log.warning("GameServer down: node %d at %s", upstream.node_id, upstream.endpoint)
            self._on_node_down(upstream.routing_id)

    def _handshake_failed(self, endpoint: str, event: int, value: int) -> None:
        if endpoint not in self._failed_handshakes:
            self._failed_handshakes.add(endpoint)
            log.error("GameServer at %s: %s", endpoint,
                      describe_handshake_failure(event, value))

    def _disconnected(self, endpoint: str) -> None:
        for upstream in self.upstreams.values():
            if upstream.endpoint == endpoint:
                self._down(upstream)

    def owe_closed(self, routing_id: bytes, sockets: list[tuple[bytes, int]]) -> None:
        _, owed = self._owed_closed.get(routing_id, (0.0, []))
        owed.extend(sockets)
        self._owed_closed[routing_id] = (time.monotonic() + OWED_CLOSED_KEEP_S, owed)

    def check_liveness(self) -> None:
        """Declare down every node that stopped answering HELLO (hung, partitioned)."""
        now = time.monotonic()
        for routing_id, (keep_until, _) in list(self._owed_closed.items()):
            if keep_until < now:
                del self._owed_closed[routing_id]
        for upstream in list(self.upstreams.values()):
            if upstream.up and not self._is_live(upstream, now):
                self._down(upstream)

    def say_hello(self, body: bytes) -> None:
        for routing_id in self.upstreams:
            self.send(routing_id, Kind.HELLO, bytes(16), 0, body)

    def on_ack(self, routing_id: bytes, node_id: int, body: bytes) -> None:
        upstream = self.upstreams.get(routing_id)
        if upstream is None:
            return
        if not upstream.up:
            log.info("GameServer connected: node %d at %s", node_id, upstream.endpoint)
            self._failed_handshakes.discard(upstream.endpoint)
            _, owed = self._owed_closed.pop(routing_id, (0.0, []))
            for socket_id, session_id in owed:
                self.send(routing_id, Kind.CLOSED, socket_id, session_id, b"gameserver_down")
        upstream.up = True
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

    def takes_new_sessions(self, routing_id: bytes) -> bool:
        """Live and not draining: fit for a connection that has no session yet."""
        upstream = self.upstreams.get(routing_id)
        return (upstream is not None and not upstream.draining
                and self._is_live(upstream, time.monotonic()))

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

    def close(self) -> None:
        self._router.close()
