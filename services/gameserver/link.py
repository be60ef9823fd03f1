"""The GameServer's end of the data plane: a bound ROUTER that every Gateway connects to.

Gateways dial in and identify themselves by routing id (``gw-<id>-<instance>``) and HELLO; a batch
for a Gateway that is no longer connected is counted and logged (its clients are gone
with it, so there is nobody left to answer).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable

import zmq

from gameserver import metrics
from protocol.internal import Kind, Record, iter_records
from servicekit import zmqsockets
from servicekit.batchrouter import BatchRouter, RecordHandler
from servicekit.curve import ClusterKeys

log = logging.getLogger("gameserver.link")

GATEWAY_LIVENESS_S = 10.0


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
        curve: ClusterKeys | None = None,
    ) -> None:
        self._on_records = on_records
        self._router = BatchRouter(context, routing_id, self._received, self._undeliverable,
                                   handover=True, curve=curve, serves=zmqsockets.P2P,
                                   records=metrics.p2p_records, batches=metrics.p2p_batches)
        self.socket = self._router.socket
        try:
            self._router.socket.bind(f"tcp://{bind_host}:{port}")
        except zmq.ZMQError as exc:
            self._router.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(port) from None
            raise CannotBind(f"tcp://{bind_host}:{port}: {exc}") from None
        self.gateways: dict[bytes, float] = {}
        #: Told about records that could not be sent (the hub stops waiting for answers).
        self.on_dropped: Callable[[list[Record]], None] | None = None
        self.flush = self._router.flush

    def _received(self, gateway_id: bytes, records: list[Record]) -> None:
        self._on_records(gateway_id, records)

    def send(self, gateway_id: bytes, kind: Kind, socket_id: bytes, arg: int, body: bytes) -> None:
        self._router.send(gateway_id, kind, socket_id, arg, body)

    def _undeliverable(self, gateway_id: bytes, batch: bytes, reason: str) -> None:
        records = list(iter_records(batch))
        metrics.p2p_dropped.labels(reason).inc()
        log.warning("Dropped %d records to %s: %s", len(records),
                    gateway_id.decode(errors="replace"),
                    "send queue full" if reason == "high_water_mark" else "gateway not connected")
        if self.on_dropped is not None:
            self.on_dropped(records)

    def note_hello(self, gateway_id: bytes) -> bool:
        """Remember a Gateway's HELLO; True when it is new."""
        is_new = gateway_id not in self.gateways
        self.gateways[gateway_id] = time.monotonic()
        return is_new

    def live_gateways(self) -> list[bytes]:
        cutoff = time.monotonic() - GATEWAY_LIVENESS_S
        return [gw for gw, seen in self.gateways.items() if seen >= cutoff]

    def close(self) -> None:
        self._router.close()
