"""The GameServer's per-tick pipeline of Lua script calls (gameserver.script_calls), against
a real redis-server: one connection per tick's calls, order kept, a failing call fails alone,
a flushed script cache is reloaded, and a dead Redis fails every call of the batch."""

from __future__ import annotations

import asyncio

import redis.exceptions

from gameserver.script_calls import ScriptCalls
from servicekit.redis_client import open_redis
from servicekit.redis_health import REDIS_FAILURES
from tests.support.redis_servers import LocalRedisServer, RedisServer

SCRIPTS = {
    # Appends ARGV[1] to the list KEYS[1]; returns the list's new length.
    "append": "return redis.call('RPUSH', KEYS[1], ARGV[1])",
    "fail": "return redis.error_reply('NOPE on purpose')",
}


def client_count(server: RedisServer) -> int:
    return len(server.client().client_list())


async def test_calls_of_one_tick_share_one_connection_and_keep_their_order(
        redis_server: RedisServer) -> None:
    client = open_redis(redis_server.connection)
    calls = ScriptCalls(client, SCRIPTS)
    key = "test:script_calls:order"
    redis_server.client().delete(key)
    try:
        before = client_count(redis_server)  # the async client has not connected yet
        lengths = await asyncio.gather(*(calls.call("append", [key], [i]) for i in range(50)))
        assert lengths == list(range(1, 51))
        assert await client.lrange(key, 0, -1) == [str(i).encode() for i in range(50)]
        # Unbatched, 50 concurrent calls would have opened up to POOL_SIZE (32) connections.
        assert client_count(redis_server) - before == 1
    finally:
        await calls.close()
        await client.aclose()


async def test_a_failing_call_fails_alone(redis_server: RedisServer) -> None:
    client = open_redis(redis_server.connection)
    calls = ScriptCalls(client, SCRIPTS)
    key = "test:script_calls:alone"
    await client.delete(key)
    try:
        results = await asyncio.gather(calls.call("append", [key], ["a"]),
                                       calls.call("fail", [], []),
                                       calls.call("append", [key], ["b"]),
                                       return_exceptions=True)
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], redis.exceptions.ResponseError)
        assert "NOPE on purpose" in str(results[1])
    finally:
        await calls.close()
        await client.aclose()


async def test_scripts_are_loaded_again_after_a_script_flush(redis_server: RedisServer) -> None:
    client = open_redis(redis_server.connection)
    calls = ScriptCalls(client, SCRIPTS)
    key = "test:script_calls:flush"
    await client.delete(key)
    try:
        assert await calls.call("append", [key], ["first"]) == 1
        await client.script_flush()
        # Both calls of this tick get NOSCRIPT, neither ran; each runs exactly once after
        # the reload.
        assert await asyncio.gather(calls.call("append", [key], ["second"]),
                                    calls.call("append", [key], ["third"])) == [2, 3]
        assert await client.lrange(key, 0, -1) == [b"first", b"second", b"third"]
    finally:
        await calls.close()
        await client.aclose()


async def test_a_dead_redis_fails_every_call_of_the_batch(redis_factory) -> None:  # type: ignore[no-untyped-def]
    server: LocalRedisServer = redis_factory(persistent=False)
    client = open_redis(server.connection)
    calls = ScriptCalls(client, SCRIPTS)
    try:
        assert await calls.call("append", ["k"], ["x"]) == 1
        server.kill()
        results = await asyncio.wait_for(asyncio.gather(
            *(calls.call("append", ["k"], [i]) for i in range(3)), return_exceptions=True),
            timeout=10)
        assert all(isinstance(r, REDIS_FAILURES) for r in results), results
    finally:
        await calls.close()
        await client.aclose()


async def test_a_call_abandoned_before_it_was_sent_is_not_sent(
        redis_server: RedisServer) -> None:
    client = open_redis(redis_server.connection)
    calls = ScriptCalls(client, SCRIPTS)
    key = "test:script_calls:give_up"
    await client.delete(key)
    try:
        impatient = asyncio.ensure_future(calls.call("append", [key], ["gone"]))
        patient = calls.call("append", [key], ["kept"])
        impatient.cancel()
        assert await patient == 1
        assert impatient.cancelled()
        assert await client.lrange(key, 0, -1) == [b"kept"]
    finally:
        await calls.close()
        await client.aclose()
