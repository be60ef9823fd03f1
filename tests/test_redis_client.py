"""servicekit.redis_client's connections: packed by hiredis's C packer (redis-py's asyncio
connection packs in Python), byte for byte what redis-py's own packer sends, and read back
unchanged by a real redis-server; and REDIS_MODE: a cluster's seeds open redis-py's cluster
client, and a connection that does not fit its mode stops the service at start."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from servicekit.redis_client import open_redis
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.redis_servers import RedisServer

ARGS: list[tuple[Any, ...]] = [
    ("EVALSHA", "0" * 40, 2, "gb:{u:42}", "gb:s:7", 1.5, -3, 10**20),
    ("SET", "ké ✓", b"\x00\xff raw"),
    ("SCRIPT LOAD", "return 1"),  # a command name with a space is split, as redis-py does
    (b"CLIENT SETNAME", b"x"),
    ("SET", "k", memoryview(b"view")),
]


@pytest.mark.parametrize("args", ARGS, ids=lambda a: str(a[0]))
async def test_packing_is_hiredis_and_byte_identical_to_redis_py(
        redis_server: RedisServer, args: tuple[Any, ...]) -> None:
    client = open_redis(redis_server.connection)
    try:
        conn = client.connection_pool.make_connection()
        assert type(conn).pack_command is not aioredis.Connection.pack_command
        assert conn._packer is not None  # hiredis is a pinned dependency
        python_packed = aioredis.Connection().pack_command(*args)
        assert b"".join(conn.pack_command(*args)) == b"".join(
            bytes(chunk) for chunk in python_packed)
    finally:
        await client.aclose()


async def test_values_round_trip_through_a_real_redis(redis_server: RedisServer) -> None:
    client = open_redis(redis_server.connection)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.set("test:redis_client:s", "ké ✓")
        pipe.set("test:redis_client:b", b"\x00\xff raw\r\n")
        pipe.set("test:redis_client:f", 1.5)
        pipe.mget("test:redis_client:s", "test:redis_client:b", "test:redis_client:f")
        *_, values = await pipe.execute()
        assert values == ["ké ✓".encode(), b"\x00\xff raw\r\n", b"1.5"]
    finally:
        await client.delete("test:redis_client:s", "test:redis_client:b",
                            "test:redis_client:f")
        await client.aclose()


async def test_a_clusters_connections_pack_with_hiredis_too(
        redis_cluster: LocalRedisCluster) -> None:
    """Every node redis-py learns of (not only the seeds) packs with hiredis, and a pipeline
    across the masters round-trips through the real cluster."""
    client = open_redis(redis_cluster.connection, mode="cluster")
    keys = [f"test:redis_client:{{t{n}}}" for n in range(12)]  # spread over the masters
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, f"ké {key}")
        for key in keys:
            pipe.get(key)
        answers = await pipe.execute()
        assert answers[len(keys):] == [f"ké {key}".encode() for key in keys]
        nodes = client.get_nodes()
        assert len(nodes) == 3
        for node in nodes:
            conn = node.acquire_connection()
            assert type(conn).pack_command is not aioredis.Connection.pack_command, node
            assert conn._packer is not None
            node.release(conn)
    finally:
        await client.delete(*keys)
        await client.aclose()


# --------------------------------------------------------------------- REDIS_MODE
def test_cluster_mode_opens_redis_pys_cluster_client_on_every_seed() -> None:
    from redis.asyncio.cluster import RedisCluster

    client = open_redis("10.0.0.1:7000,redis://:s3cret@10.0.0.2:7001", mode="cluster")
    assert isinstance(client, RedisCluster)
    seeds = sorted(node.name for node in client.nodes_manager.startup_nodes.values())
    assert seeds == ["10.0.0.1:7000", "10.0.0.2:7001"]
    # The first seed's credentials apply to every node; no hidden retries.
    assert client.nodes_manager.connection_kwargs["password"] is None
    assert client.retry.get_retries() == 0


@pytest.mark.parametrize(("env", "problem"), [
    ({"REDIS_CONNECTION": "a:1,b:2"}, "needs REDIS_MODE=cluster"),
    ({"REDIS_MODE": "cluster", "REDIS_CONNECTION": "unix:///tmp/r.sock"}, "not unix://"),
    ({"REDIS_MODE": "sentinel", "REDIS_CONNECTION": "h:26379,unix:///s"}, "not unix://"),
    ({"REDIS_MODE": "cluster", "REDIS_CONNECTION": "a:1,b:x"}, "HOST:PORT"),
    ({"REDIS_MODE": "sharded"}, "REDIS_MODE"),
])
def test_redis_mode_and_connection_are_checked_at_start(env: dict[str, str],
                                                       problem: str) -> None:
    from gateway.config import GatewayConfig
    from servicekit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=problem):
        load_config(GatewayConfig, [], env, prog="gateway", description="")


def test_a_cluster_is_shown_by_its_first_seed() -> None:
    from servicekit.redis_url import display_address, uses_tls

    assert display_address("10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002") == (
        "10.0.0.1:7000 (+2 seeds)")
    assert uses_tls("rediss://h:6380,rediss://g:6380")


def test_sentinel_mode_asks_the_sentinels_for_the_master() -> None:
    from redis.asyncio.sentinel import SentinelConnectionPool

    client = open_redis("redis://:pw@10.0.0.5:26379/2,10.0.0.6:26380", mode="sentinel",
                        sentinel_master="gb-master")
    assert isinstance(client, aioredis.Redis)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "gb-master"
    sentinels = [(s.connection_pool.connection_kwargs["host"],
                  s.connection_pool.connection_kwargs["port"])
                 for s in pool.sentinel_manager.sentinels]
    assert sentinels == [("10.0.0.5", 26379), ("10.0.0.6", 26380)]
    # The URL's password and database are the master's; the sentinels get no password.
    assert (pool.connection_kwargs["password"], pool.connection_kwargs["db"]) == ("pw", 2)
    assert all("password" not in s.connection_pool.connection_kwargs
               or s.connection_pool.connection_kwargs["password"] is None
               for s in pool.sentinel_manager.sentinels)
