"""Drain handover: on SIGTERM, give every attached session to another GameServer without
its client noticing.

Kept out of the hub because it is a protocol of its own (HOLD, the Gateway's HOLD_ACK,
mesh ``adopt``, PIN to the peer) that runs once in a process's life and keeps its own state
(the sockets still to settle, the peer chooser); the hub only passes it HOLD_ACKs, closed
sockets and records that could not be sent. Choosing the peer (:class:`TargetPicker`) is
apart again: it is pure over the registry as last read, so it is tested without sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gameserver import metrics
from gameserver.mesh import MeshError
from protocol.internal import Kind, Record, pack_reroute
from servicekit.registry import Registry

if TYPE_CHECKING:
    from gameserver.hub import Hub

#: The hub's logger: these lines were the hub's, and keep their ``logger`` field.
log = logging.getLogger("gameserver.hub")

#: Peers tried per session during a drain before it falls back to a SERVER_SHUTDOWN kick.
HANDOVER_ATTEMPTS = 3

#: Picks the peer that gets the next session, not one of those given (None: no peer).
PickTarget = Callable[[set[int]], int | None]


class TargetPicker:
    """Chooses the peer for each session of a drain: a live, non-draining peer with the
    fewest sessions.

    The registry's session counts are only as fresh as each peer's last heartbeat, so what
    this drain already gave a peer is counted on top; without it a whole drain would go to
    whichever peer looked emptiest at the start.
    """

    def __init__(self, node_id: int, peers: Callable[[], Registry],
                 is_down: Callable[[int], bool]) -> None:
        """``peers``: the registry as last read (called per pick: it is re-read while the
        drain runs); ``is_down``: the mesh lost its connection to that node."""
        self.node_id = node_id
        self._peers = peers
        self._is_down = is_down
        #: Sessions given to each peer (node id) so far.
        self.assigned: dict[int, int] = {}

    def pick(self, exclude: set[int]) -> int | None:
        """The least-loaded peer other than this node and those in ``exclude``, counted as
        given one more session; None when no peer qualifies."""
        best: int | None = None
        best_load = 0
        for node_id, (_, _, fields) in self._peers().items():
            if (node_id == self.node_id or node_id in exclude or fields.get("draining") == "1"
                    or self._is_down(node_id)):
                continue
            load = int(fields.get("sessions", "0") or 0) + self.assigned.get(node_id, 0)
            if best is None or load < best_load:
                best, best_load = node_id, load
        if best is not None:
            self.assigned[best] = self.assigned.get(best, 0) + 1
        return best


class Handover:
    """Hands the hub's attached sessions to peers while the node drains.

    Holds a reference to the hub rather than to its parts: it works on the hub's sessions,
    link and commit queue, and on its mesh client, which the app sets after the hub exists.
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        #: Set by :meth:`hand_over_all`; until then nothing is rerouted.
        self._pick_target: PickTarget = lambda tried: None
        self._waiting: set[bytes] = set()
        self._settled = asyncio.Event()

    def reroute(self, gateway_id: bytes, socket_id: bytes, frame: bytes) -> bool:
        """Draining: a frame for a session we do not hold goes to a peer, with its socket."""
        target = self._pick_target(set())
        if target is None:
            return False
        self._hub.link.send(gateway_id, Kind.REROUTE, socket_id, 0,
                            pack_reroute(f"gs-{target}".encode(), frame))
        return True

    async def hand_over_all(self, pick_target: PickTarget, timeout_s: float) -> None:
        """Give every attached session to another GameServer, invisibly to its client.

        Per socket: the Gateway is asked to HOLD the socket's frames; its HOLD_ACK comes
        after every frame it sent us before, and is processed in the socket's queue after
        them (:meth:`hand_over`); then pending writes are committed, a peer adopts the
        session from Redis (mesh ``adopt``), and PIN points the Gateway, and the held
        frames, at that peer.
        """
        hub = self._hub
        self._pick_target = pick_target
        live = set(hub.link.live_gateways())
        sessions = [s for s in hub.sessions.by_id.values()
                    if s.socket_id is not None and s.gateway_id in live]
        if not sessions:
            return
        log.info("Handing %d sessions over to other GameServers", len(sessions))
        self._waiting = {s.socket_id for s in sessions if s.socket_id is not None}
        self._settled.clear()
        for session in sessions:
            assert session.gateway_id is not None and session.socket_id is not None
            hub.link.send(session.gateway_id, Kind.HOLD, session.socket_id,
                          session.session_id, b"")
        try:
            await asyncio.wait_for(self._settled.wait(), timeout_s)
        except TimeoutError:
            log.error("Handover incomplete after %.1fs: %d sessions left", timeout_s,
                      len(self._waiting))

    async def hand_over(self, gateway_id: bytes, socket_id: bytes) -> None:
        """The socket's HOLD_ACK: every frame before it has been processed."""
        try:
            outcome = await self._hand_over_socket(gateway_id, socket_id)
        finally:
            self.done(socket_id)
        metrics.handovers.labels(outcome).inc()

    def done(self, socket_id: bytes) -> None:
        """The socket needs no (further) handover; the last one settles the drain."""
        if socket_id in self._waiting:
            self._waiting.discard(socket_id)
            if not self._waiting:
                self._settled.set()

    def records_dropped(self, records: list[Record]) -> None:
        """A HOLD that never reached its Gateway will never be acknowledged."""
        for record in records:
            if record.kind == Kind.HOLD:
                self.done(record.socket_id)
                metrics.handovers.labels("unreachable").inc()

    async def _hand_over_socket(self, gateway_id: bytes, socket_id: bytes) -> str:
        hub = self._hub
        session = hub.sessions.by_socket.get(socket_id)
        if session is None:
            hub.link.send(gateway_id, Kind.PIN, socket_id, 0, hub.routing_id)  # un-hold
            return "gone"
        await hub.commits.barrier()
        tried: set[int] = set()
        while True:
            target = self._pick_target(tried)
            if target is None or hub.mesh is None or session.closed:
                hub.pin(session)  # un-hold: we keep it; the shutdown kick follows
                if session.closed:
                    return "gone"
                return "no_target" if not tried else "failed"
            tried.add(target)
            try:
                reply = await hub.mesh.call(target, "adopt", {
                    "session_id": session.session_id, "user_id": session.user_id,
                    "gateway": gateway_id.decode(), "socket": socket_id.hex()},
                    hub.mesh_deadline_s)
            except MeshError as exc:
                log.warning("Handover of SessionId=%d to node %d failed: %s",
                            session.session_id, target, exc)
                if exc.code == "UNREACHABLE" and len(tried) < HANDOVER_ATTEMPTS:
                    continue  # never reached it: another peer may take the session
                hub.pin(session)
                return "failed"
            if reply.get("adopted"):
                break
            hub.pin(session)
            return "failed"
        hub.sessions.forget(session)
        hub.link.send(gateway_id, Kind.PIN, socket_id, session.session_id,
                      f"gs-{target}".encode())
        log.info("Session handed over: SessionId=%d -> node %d", session.session_id, target)
        return "ok"
