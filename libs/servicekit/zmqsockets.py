"""Every ZeroMQ socket the services open, with its options, in one place.

The data plane (Gateway <-> GameServer, :mod:`servicekit.batchrouter`), the service mesh
(``gameserver.mesh``) and the admin CLI used to set their options each on its own, and the
copies drifted. They share one liveness policy: ZMTP heartbeats every second, a peer silent
for three is dropped (so a Gateway notices a hung GameServer without waiting for TCP), and
a lost connection is redialled after 100 ms, backing off to 2 s (libzmq randomises the
interval itself). Security options for internal traffic belong here too.
"""

from __future__ import annotations

import zmq

HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 2000

Context = zmq.Context[zmq.Socket[bytes]]
Socket = zmq.Socket[bytes]


def router(context: Context, routing_id: bytes, *, linger_ms: int,
           high_water_mark: int | None = None, handover: bool = False) -> Socket:
    """A ROUTER that addresses its peers by routing id.

    ROUTER_MANDATORY makes a message to an unknown or unreachable peer an error (the
    caller answers whoever waits) instead of a silent drop. ``handover``: a peer that
    reconnects with a known routing id takes the route over (the bound side of the data
    plane wants this: a restarted Gateway keeps its id). ``linger_ms``: how long queued
    messages may delay close.
    """
    sock: Socket = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    if handover:
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    if high_water_mark is not None:
        sock.setsockopt(zmq.SNDHWM, high_water_mark)
        sock.setsockopt(zmq.RCVHWM, high_water_mark)
    _liveness(sock)
    sock.setsockopt(zmq.LINGER, linger_ms)
    return sock


def dealer(context: Context) -> Socket:
    """A DEALER for a one-off request (the admin CLI): nothing lingers after close."""
    sock: Socket = context.socket(zmq.DEALER)
    _liveness(sock)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def _liveness(sock: Socket) -> None:
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
