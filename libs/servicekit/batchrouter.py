"""One ZeroMQ ROUTER socket carrying batched data-plane records, driven by the event loop.

Both ends of the Gateway <-> GameServer data plane are this: records for a peer are
collected in a :class:`protocol.internal.BatchWriter` and sent as one ZeroMQ message per
peer per event-loop tick; incoming batches are split into records for the owner.
ROUTER_MANDATORY turns "no such peer" into an error, handed to ``on_undeliverable`` with
the batch, so the owner can count it, log it and answer whoever waits: never a silent drop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

from protocol.internal import BatchWriter, Kind, MalformedBatch, Record, iter_records
from servicekit import zmqsockets
from servicekit.curve import ClusterKeys
from servicekit.fastmetrics import FastCounter
from servicekit.redial import hang_up
from servicekit.zap import HANDSHAKE_FAILED
from servicekit.zmqloop import ZmqReader

log = logging.getLogger(__name__)

HIGH_WATER_MARK = 100_000
#: On close, queued batches get this long to leave (a drain's last answers).
LINGER_MS = 1000

#: (peer routing id, records)
RecordHandler = Callable[[bytes, list[Record]], None]
#: (peer routing id, the batch that could not be queued, reason: high_water_mark|unreachable)
UndeliverableHandler = Callable[[bytes, bytes, str], None]


def _cells(counter: FastCounter | None) -> tuple[list[float], list[float]]:
    """The (in, out) cells of a counter by direction; throwaway cells without one."""
    if counter is None:
        return [0.0], [0.0]
    return counter.child("in"), counter.child("out")


class BatchRouter:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        routing_id: bytes,
        on_records: RecordHandler,
        on_undeliverable: UndeliverableHandler,
        *,
        handover: bool = False,
        on_disconnected: Callable[[str], None] | None = None,
        on_handshake_failed: Callable[[str, int, int], None] | None = None,
        curve: ClusterKeys | None = None,
        serves: str = "",
        records: FastCounter | None = None,
        batches: FastCounter | None = None,
    ) -> None:
        """``handover``: a peer reconnecting with a known routing id takes the route over
        (the bound side wants this: a restarted peer keeps its id). ``on_disconnected``
        (endpoint) and ``on_handshake_failed`` (endpoint, event, value) report the dialling
        side's connections. ``curve``/``serves``: see :func:`servicekit.zmqsockets.router`.
        ``records``/``batches``: counters by direction (``in``/``out``) of the service's
        metrics: records per batch, and batches (ZeroMQ messages) per second, are what tell
        how well a hop batches (docs/BENCHMARKS.md)."""
        self._loop = asyncio.get_running_loop()
        self._on_records = on_records
        self._on_undeliverable = on_undeliverable
        sock = zmqsockets.router(context, routing_id, linger_ms=LINGER_MS,
                                 high_water_mark=HIGH_WATER_MARK, handover=handover,
                                 curve=curve, serves=serves)
        self.socket = sock
        self._records_in, self._records_out = _cells(records)
        self._batches_in, self._batches_out = _cells(batches)
        self._outboxes: dict[bytes, BatchWriter] = {}
        self._flush_scheduled = False
        self._reader = ZmqReader(sock, self._on_messages, self._loop)
        self._monitor: zmq.Socket[bytes] | None = None
        self._monitor_reader: ZmqReader | None = None
        if on_disconnected is not None:
            # A peer process that dies closes its TCP connection at once; the monitor tells
            # us within milliseconds instead of after HEARTBEAT_TIMEOUT.
            self._on_disconnected = on_disconnected
            self._on_handshake_failed = on_handshake_failed
            self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED)
            self._monitor_reader = ZmqReader(self._monitor, self._on_monitor, self._loop)

    def _on_monitor(self, messages: list[list[bytes]]) -> None:
        for message in messages:
            event = parse_monitor_message(message)
            raw = event["endpoint"]
            endpoint = raw.decode() if isinstance(raw, bytes) else str(raw)
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._on_disconnected(endpoint)
            elif self._on_handshake_failed is not None:
                self._on_handshake_failed(endpoint, int(event["event"]), int(event["value"]))

    def connect(self, endpoint: str, peer_routing_id: bytes,
                server_key: bytes | None = None) -> None:
        zmqsockets.dial(self.socket, endpoint, routing_id=peer_routing_id,
                        server_key=server_key)

    def disconnect(self, endpoint: str) -> None:
        """Hang up on a peer; see :mod:`servicekit.redial` before dialling its routing id
        again."""
        hang_up(self.socket, endpoint, LINGER_MS)

    def send(self, peer: bytes, kind: Kind, socket_id: bytes, arg: int, body: bytes) -> None:
        outbox = self._outboxes.get(peer)
        if outbox is None:
            outbox = self._outboxes[peer] = BatchWriter()
        outbox.add(kind, socket_id, arg, body)
        self._records_out[0] += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        for peer, outbox in self._outboxes.items():
            if not outbox:
                continue
            batch = outbox.take()
            self._batches_out[0] += 1
            try:
                self.socket.send_multipart((peer, batch), zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._on_undeliverable(peer, batch, "high_water_mark")
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                self._on_undeliverable(peer, batch, "unreachable")
        # Sending changes the edge-triggered ZMQ_FD state: look for input we may have missed.
        self._reader.poke()

    def _on_messages(self, messages: list[list[bytes]]) -> None:
        self._batches_in[0] += len(messages)
        for message in messages:
            if len(message) != 2:
                log.warning("Ignoring a data-plane message with %d frames", len(message))
                continue
            peer, batch = message
            try:
                records = list(iter_records(batch))
            except MalformedBatch as exc:
                log.error("Malformed batch from %s: %s", peer.decode(errors="replace"), exc)
                continue
            self._records_in[0] += len(records)
            self._on_records(peer, records)

    def close(self) -> None:
        self.flush()
        self._reader.close()
        if self._monitor is not None and self._monitor_reader is not None:
            self._monitor_reader.close()
            self.socket.disable_monitor()
            self._monitor.close(0)
        self.socket.close(linger=LINGER_MS)
