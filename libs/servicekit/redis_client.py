"""One way to open Redis for both services: a bounded, *blocking* connection pool.

redis-py's default pool raises "Too many connections" when a burst (1000 clients logging in
at once) wants more connections than it allows; a blocking pool makes the burst queue for a
connection instead, and keeps the number of connections to a shared Redis bounded.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from servicekit.redis_url import to_redis_url

POOL_SIZE = 32


def open_redis(connection: str, pool_size: int = POOL_SIZE) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        to_redis_url(connection),
        max_connections=pool_size,
        timeout=5,
        socket_timeout=3.0,
        socket_connect_timeout=2.0,
        health_check_interval=10,
    )
    return aioredis.Redis(connection_pool=pool)
