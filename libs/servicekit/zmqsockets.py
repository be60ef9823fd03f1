"""Every ZeroMQ socket the services open, with its options, in one place.

The data plane (Gateway <-> GameServer, :mod:`servicekit.batchrouter`), the service mesh
(``gameserver.mesh``) and the admin CLI used to set their options each on its own, and the
copies drifted. They share one liveness policy: ZMTP heartbeats every second, a peer silent
for three is dropped (so a Gateway notices a hung GameServer without waiting for TCP), and
a lost connection is redialled after 100 ms, backing off to 2 s (libzmq randomises the
interval itself).

Security lives here too. With the cluster's CURVE keys (:mod:`servicekit.curve`) a bound
socket is a CURVE server whose ZAP domain names the port (``p2p``, ``mesh``) so the ZAP
handler (:mod:`servicekit.zap`) can say which port refused whom; a dialling socket is a
CURVE client that holds the cluster key pair and learns, per connection, the public key
the server it dials must prove (set just before ``connect``: libzmq copies the socket's
options into each new connection, which is also how ZMQ_CONNECT_ROUTING_ID works).
"""

from __future__ import annotations

import zmq

from servicekit.curve import ClusterKeys

HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 2000

#: The ports a GameServer serves, by the name that is their ZAP domain and metric label.
P2P = "p2p"
MESH = "mesh"

Context = zmq.Context[zmq.Socket[bytes]]
Socket = zmq.Socket[bytes]


def router(context: Context, routing_id: bytes, *, linger_ms: int,
           high_water_mark: int | None = None, handover: bool = False,
           curve: ClusterKeys | None = None, serves: str = "") -> Socket:
    """A ROUTER that addresses its peers by routing id.

    ROUTER_MANDATORY makes a message to an unknown or unreachable peer an error (the
    caller answers whoever waits) instead of a silent drop. ``handover``: a peer that
    reconnects with a known routing id takes the route over (the bound side of the data
    plane wants this: a restarted Gateway keeps its id). ``linger_ms``: how long queued
    messages may delay close. ``curve``: the cluster keys, or None for plaintext;
    ``serves``: the name of the port a bound socket serves (its ZAP domain), empty for a
    socket that only dials.
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
    _secure(sock, curve, serves)
    sock.setsockopt(zmq.LINGER, linger_ms)
    return sock


def dealer(context: Context, curve: ClusterKeys | None = None) -> Socket:
    """A DEALER for a one-off request (the admin CLI): nothing lingers after close."""
    sock: Socket = context.socket(zmq.DEALER)
    _liveness(sock)
    _secure(sock, curve, "")
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def dial(sock: Socket, endpoint: str, *, routing_id: bytes | None = None,
         server_key: bytes | None = None) -> None:
    """Connect ``sock`` to ``endpoint``: naming the peer's routing id (a ROUTER addressing
    it), and, on a CURVE socket, the public key that server must prove it holds
    (:func:`servicekit.curve.server_key` picks it)."""
    if routing_id is not None:
        sock.setsockopt(zmq.CONNECT_ROUTING_ID, routing_id)
    if server_key is not None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
    sock.connect(endpoint)


def _secure(sock: Socket, curve: ClusterKeys | None, serves: str) -> None:
    if curve is None:
        return
    if serves:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, serves.encode())
    else:
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)


def _liveness(sock: Socket) -> None:
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
