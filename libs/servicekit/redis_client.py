"""One way to open Redis for both services: a bounded, *blocking* connection pool.

redis-py's default pool raises "Too many connections" when a burst (1000 clients logging in
at once) wants more connections than it allows; a blocking pool makes the burst queue for a
connection instead, and keeps the number of connections to a shared Redis bounded.

Worst case of one call, by construction: ``POOL_WAIT_S`` for a free connection, then
``CONNECT_TIMEOUT_S`` to connect, ``SOCKET_TIMEOUT_S`` for the health-check PING of a
connection idle longer than ``health_check_interval``, and ``SOCKET_TIMEOUT_S`` for the
command itself: about 13 s. redis-py 8's ``Redis()`` would add its default ``Retry`` (10
retries with backoff) — but only when it builds the pool itself; a pool built here gets the
connection's own default, and ``retry=Retry(NoBackoff(), 0)`` states it: no hidden retries.
Our loops retry themselves, with one jittered policy (servicekit.redis_health), and request
paths cut every call short at their own deadline (GameServer ``REDIS_REQUEST_TIMEOUT_S``).
A call cancelled mid-command disconnects its connection (redis-py does that on any
exception while reading or writing), so a cancelled call never leaves a half-read reply in
the pool.

``rediss://`` gets its certificate checks from servicekit.redis_tls (``REDIS_TLS_*``), the
same keyword arguments the admin CLI's synchronous client gets.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import RedisClusterException
from redis.utils import HIREDIS_AVAILABLE

from servicekit.redis_tls import NO_TLS, RedisTls
from servicekit.redis_url import seed_urls, to_redis_url


async def _replace_if_closed(conn: aioredis.Connection) -> None:
    """Before a command: if the server has closed this pooled connection since its last use
    (Redis restarted, failed over, or dropped idle clients), open a new one instead of
    sending into the dead one. The command has not been sent, so this is safe for every
    command, unlike a retry after a failure (the script may have run). It costs no round
    trip: the event loop has already seen the EOF or reset of the socket. (redis-py has no
    public "closed by the peer" check: ``is_connected`` only says a reader exists, hence
    the look at its stream reader.)"""
    reader = conn._reader
    if reader is not None and (reader.at_eof() or reader.exception() is not None):
        await conn.disconnect()
        await conn.connect()  # type: ignore[no-untyped-call]


class _HiredisPacking(AbstractConnection):
    """Commands packed by hiredis's C packer, as redis-py's *synchronous* connection already
    does when hiredis is installed (its ``HiredisRespSerializer``); the asyncio connection
    packs in Python, argument by argument. During logins that packing was 8.7% of the
    GameServer's profile samples, 4.2% with this (docs/BENCHMARKS.md, "Logins"). The bytes
    on the wire are the same."""

    _packer = HiredisRespSerializer() if HIREDIS_AVAILABLE else None

    def pack_command(self, *args: Any) -> list[bytes]:
        if self._packer is None:
            return super().pack_command(*args)
        packed: list[bytes] = self._packer.pack(*args)
        return packed


class _FreshConnection(_HiredisPacking, aioredis.Connection):
    """A pooled connection that never sends into a socket the server closed (see above)."""

    async def check_health(self) -> None:
        await _replace_if_closed(self)
        await super().check_health()  # type: ignore[no-untyped-call]


class _FreshSSLConnection(_HiredisPacking, aioredis.SSLConnection):
    """The same for ``rediss://``."""

    async def check_health(self) -> None:
        await _replace_if_closed(self)
        await super().check_health()  # type: ignore[no-untyped-call]


#: Without it, after a Redis restart each of up to POOL_SIZE idle connections would fail
#: its next command once ("Connection closed by server"), and with no hidden retries that
#: is a request answered SERVER_UNAVAILABLE after the outage is over.
_FRESH_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {
    aioredis.Connection: _FreshConnection,
    aioredis.SSLConnection: _FreshSSLConnection,
}

POOL_SIZE = 32
POOL_WAIT_S = 5.0
SOCKET_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 2.0


#: What the services talk to: one Redis, or a Redis Cluster (same commands; a script call's
#: keys must then share a slot, which servicekit.keys arranges).
RedisClient = aioredis.Redis | RedisCluster


def open_redis(connection: str, pool_size: int = POOL_SIZE, tls: RedisTls = NO_TLS,
               mode: str = "standalone", sentinel_master: str = "mymaster") -> RedisClient:
    """``mode`` is REDIS_MODE: ``standalone`` (one server), ``cluster`` (``connection``
    lists seed nodes) or ``sentinel`` (``connection`` lists the sentinels that know the
    master ``sentinel_master``)."""
    if mode == "cluster":
        return _open_cluster(connection, pool_size, tls)
    if mode == "sentinel":
        return _open_sentinel(connection, sentinel_master, pool_size, tls)
    url = to_redis_url(connection)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=POOL_WAIT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=10,
        retry=Retry(NoBackoff(), 0),
        **tls.client_kwargs(url),
    )
    pool.connection_class = _FRESH_CLASSES.get(pool.connection_class, pool.connection_class)
    return aioredis.Redis(connection_pool=pool)



async def follow_master(client: RedisClient) -> None:
    """With Sentinel: ask the sentinels where the master is now; if it moved, redis-py drops
    the idle pooled connections to the old one.

    Why: redis-py asks only when it opens a connection, and a deposed master that has not
    been told yet (the sentinels reconfigure it at their next poll, up to 10 s later) still
    accepts writes on the pooled connections, writes that vanish when it is turned into a
    replica. ``WAIT`` catches that (no replica follows a deposed master), and its caller
    calls this so the next attempt goes to the new master. A no-op for one Redis or a
    cluster, whose client follows ``MOVED`` by itself."""
    pool = client.connection_pool if isinstance(client, aioredis.Redis) else None
    if isinstance(pool, SentinelConnectionPool):
        await pool.get_master_address()  # type: ignore[no-untyped-call]


def _open_cluster(connection: str, pool_size: int, tls: RedisTls) -> RedisCluster:
    """redis-py's own cluster client: it learns the slot map from the seeds, sends each
    command (and each part of a pipeline) to its slot's master, and follows ``MOVED``/``ASK``
    after a failover or a resharding. ``retry=0`` as for one Redis: no hidden re-sends of a
    script that may have run; a failed call fails, the caller decides (and the next call
    reloads the slot map). ``pool_size`` bounds the connections per node; unlike the
    standalone pool, a burst past it fails the call instead of waiting."""
    seeds = [urlsplit(url) for url in seed_urls(connection)]
    first = seeds[0]
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(str(seed.hostname), seed.port or 6379) for seed in seeds],
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
        ssl=first.scheme == "rediss",
        max_connections=pool_size,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=10,
        retry=Retry(NoBackoff(), 0),
        **tls.client_kwargs(first.geturl()),
    )
    _pack_with_hiredis(cluster)
    return cluster


def master_of_slot(cluster: RedisCluster, slot: int) -> ClusterNode | None:
    """The master serving hash slot ``slot`` in redis-py's own slot table (None: not covered,
    or the table not loaded yet; the caller then lets redis-py route by key).

    Why: a caller that knows its slot (a session id carries it, servicekit.keys) spares
    redis-py hashing every declared key of every command to find it; with hundreds of slots
    in one tick's commit that hashing was a tenth of the GameServer's CPU. The routing stays
    redis-py's: its table, refreshed by it after ``MOVED`` or a failed node; a command sent
    to the wrong master is answered ``MOVED`` and re-sent by redis-py as usual."""
    try:
        return cluster.nodes_manager.get_node_from_slot(slot)
    except (KeyError, RedisClusterException):
        return None


def _pack_with_hiredis(cluster: RedisCluster) -> None:
    """The cluster's connections get the classes above too (hiredis packing; never a closed
    socket reused). ``RedisCluster`` takes no connection class, so the one its node manager
    gives every node it makes is swapped, and that of the seed nodes made already. Under
    MOVE load on a 3-master cluster, packing was a tenth of the GameServer's CPU."""
    manager = cluster.nodes_manager
    base = manager.connection_kwargs.get("connection_class", aioredis.Connection)
    packing = _FRESH_CLASSES.get(base, base)
    manager.connection_kwargs["connection_class"] = packing
    for node in manager.startup_nodes.values():
        node.connection_class = packing


def _open_sentinel(connection: str, master: str, pool_size: int,
                   tls: RedisTls) -> aioredis.Redis:
    """redis-py's own Sentinel client: each new connection asks the sentinels where the
    master is, and a connection the old master answers ``READONLY`` is dropped, so service
    resumes once the sentinels have promoted a replica (see also :func:`follow_master`).
    The first URL's user, password, database and scheme are the master's (and its
    replicas'); the sentinels are asked without credentials. No hidden retries, as for one Redis."""
    seeds = [urlsplit(url) for url in seed_urls(connection)]
    first = seeds[0]
    tls_kwargs = tls.client_kwargs(first.geturl())
    socket_kwargs: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_S,
                                     "socket_connect_timeout": CONNECT_TIMEOUT_S}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [(str(seed.hostname), seed.port or 26379) for seed in seeds],
        sentinel_kwargs={**socket_kwargs, **({"ssl": True, **tls_kwargs} if tls_kwargs
                                            else {})})
    client: aioredis.Redis = sentinel.master_for(
        master,
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
        db=int(first.path.strip("/") or 0),
        max_connections=pool_size,
        health_check_interval=10,
        retry=Retry(NoBackoff(), 0),
        **socket_kwargs,
        **({"ssl": True, **tls_kwargs} if tls_kwargs else {}),
    )
    return client
