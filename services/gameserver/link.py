"""The GameServer's end of the data plane: one ZeroMQ ROUTER that every Gateway connects to.

Outgoing records are collected per Gateway and sent as one batch per event-loop tick.
ROUTER_MANDATORY makes an unroutable batch an error instead of a silent drop; such drops
are counted and logged (the clients of a vanished Gateway are gone with it).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable

import zmq

from gameserver import metrics
from protocol.internal import BatchWriter, Kind, MalformedBatch, Record, iter_records
from servicekit.zmqloop import ZmqReader

log = logging.getLogger("gameserver.link")

HIGH_WATER_MARK = 100_000
GATEWAY_LIVENESS_S = 10.0

RecordHandler = Callable[[bytes, list[Record]], None]


class PortInUse(Exception):
    pass


class CannotBind(Exception):
    """Binding failed for another reason (bad address, permissions)."""


class GatewayLink:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        routing_id: bytes,
        bind_host: str,
        port: int,
        on_records: RecordHandler,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_records = on_records
        sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
        sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sock.setsockopt(zmq.LINGER, 1000)
        try:
            sock.bind(f"tcp://{bind_host}:{port}")
        except zmq.ZMQError as exc:
            sock.close(0)
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(port) from None
            raise CannotBind(f"tcp://{bind_host}:{port}: {exc}") from None
        self._socket = sock
        self._outboxes: dict[bytes, BatchWriter] = {}
        self._flush_scheduled = False
        self.gateways: dict[bytes, float] = {}
        self._records_out = metrics.p2p_records.child("out")
        self._records_in = metrics.p2p_records.child("in")
        self._reader = ZmqReader(sock, self._on_messages, self._loop)

    def _on_messages(self, messages: list[list[bytes]]) -> None:
        for message in messages:
            if len(message) != 2:
                log.warning("Ignoring a data-plane message with %d frames", len(message))
                continue
            gateway_id, batch = message
            try:
                records = list(iter_records(batch))
            except MalformedBatch as exc:
                log.error("Malformed batch from %s: %s", gateway_id.decode(errors="replace"), exc)
                continue
            self._records_in[0] += len(records)
            self._on_records(gateway_id, records)

    def send(self, gateway_id: bytes, kind: Kind, socket_id: bytes, arg: int, body: bytes) -> None:
        outbox = self._outboxes.get(gateway_id)
        if outbox is None:
            outbox = self._outboxes[gateway_id] = BatchWriter()
        outbox.add(kind, socket_id, arg, body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        sent = 0
        for gateway_id, outbox in self._outboxes.items():
            if not outbox:
                continue
            records = outbox.records
            batch = outbox.take()
            try:
                self._socket.send_multipart((gateway_id, batch), zmq.NOBLOCK, copy=False)
                sent += records
            except zmq.Again:
                metrics.p2p_dropped.labels("high_water_mark").inc()
                log.error("Dropped %d records to %s: send queue full", records,
                          gateway_id.decode(errors="replace"))
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                metrics.p2p_dropped.labels("unroutable").inc()
                log.warning("Dropped %d records to %s: gateway not connected", records,
                            gateway_id.decode(errors="replace"))
        self._records_out[0] += sent
        self._reader.poke()

    def note_hello(self, gateway_id: bytes) -> bool:
        """Remember a Gateway's HELLO; True when it is new."""
        is_new = gateway_id not in self.gateways
        self.gateways[gateway_id] = time.monotonic()
        return is_new

    def live_gateways(self) -> list[bytes]:
        cutoff = time.monotonic() - GATEWAY_LIVENESS_S
        return [gw for gw, seen in self.gateways.items() if seen >= cutoff]

    def close(self) -> None:
        self.flush()
        self._reader.close()
        self._socket.close(linger=1000)
