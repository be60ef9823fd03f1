"""Hanging up on a ZeroMQ peer that will be dialled again under the same routing id.

libzmq aborts the whole process (``router.cpp: !has_out_pipe (routing_id)``) when a ROUTER
connect()s with a ZMQ_CONNECT_ROUTING_ID whose previous pipe still exists. After
disconnect() the old pipe lives on until what was queued for the peer is flushed or LINGER
runs out, and even then it goes away asynchronously, in the socket's next command round.
A GameServer that restarts (same address) or moves (a new pod IP) is dialled again under
the same ``gs-<id>``, by the Gateways and by its mesh peers, so every ROUTER that dials
peers by routing id:

1. hangs up with LINGER 0 (:func:`hang_up`): what was queued for a peer we give up on could
   not be delivered anyway, and it must not keep the pipe alive;
2. dials that routing id again only after :data:`REDIAL_AFTER_S` (:class:`RedialGuard`),
   far longer than libzmq needs to remove the pipe (about a millisecond on a loaded
   machine), and shorter than a registry refresh, so nobody waits for it in practice.

pyzmq has no way to ask whether the pipe is gone, hence the wait rather than a check.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import zmq

REDIAL_AFTER_S = 1.0


def hang_up(socket: zmq.Socket[bytes], endpoint: str, linger_ms: int) -> None:
    """Disconnect ``endpoint`` dropping its queued messages; ``linger_ms`` is restored after
    (it still governs the socket's close at shutdown)."""
    socket.setsockopt(zmq.LINGER, 0)
    try:
        with contextlib.suppress(zmq.ZMQError):  # never connected, or already gone
            socket.disconnect(endpoint)
    finally:
        socket.setsockopt(zmq.LINGER, linger_ms)


class RedialGuard:
    """Which routing ids were hung up on too recently to be dialled again (pure; the clock
    is injected)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wait_s: float = REDIAL_AFTER_S) -> None:
        self._clock = clock
        self._wait_s = wait_s
        self._hung_up: dict[bytes, float] = {}

    def hung_up(self, routing_id: bytes) -> None:
        self._hung_up[routing_id] = self._clock()

    def may_dial(self, routing_id: bytes) -> bool:
        now = self._clock()
        for key, when in list(self._hung_up.items()):
            if now - when >= self._wait_s:
                del self._hung_up[key]
        return routing_id not in self._hung_up
