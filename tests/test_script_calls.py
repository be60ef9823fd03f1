"""The GameServer's per-tick pipeline of Lua script calls (gameserver.script_calls), against
a real redis-server: one connection per tick's calls, order kept, a failing call fails alone,
a flushed script cache is reloaded, and a dead Redis fails every call of the batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.crc import key_slot

from gameserver.script_calls import ScriptCalls
from servicekit.redis_client import open_redis
from servicekit.redis_health import REDIS_FAILURES
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.redis_servers import LocalRedisServer, RedisServer

SCRIPTS = {
    # Appends ARGV[1] to the list KEYS[1]; returns the list's new length.
    "append": "return redis.call('RPUSH', KEYS[1], ARGV[1])",
    "fail": "return redis.error_reply('NOPE on purpose')",
    "broken": "return (",  # Redis refuses to load it
}
KEY = "test:script_calls"


@pytest.fixture
async def redis_and_calls(
        redis_server: RedisServer) -> AsyncIterator[tuple[aioredis.Redis, ScriptCalls]]:
    """A fresh async client (not connected yet) and its ScriptCalls; ``KEY`` empty."""
    redis_server.client().delete(KEY)
    client = open_redis(redis_server.connection)
    calls = ScriptCalls(client, SCRIPTS)
    try:
        yield client, calls
    finally:
        await calls.close()
        await client.aclose()


async def test_calls_of_one_tick_share_one_connection_and_keep_their_order(
        redis_server: RedisServer,
        redis_and_calls: tuple[aioredis.Redis, ScriptCalls]) -> None:
    client, calls = redis_and_calls
    before = len(redis_server.client().client_list())
    lengths = await asyncio.gather(*(calls.call("append", [KEY], [i]) for i in range(50)))
    assert lengths == list(range(1, 51))
    assert await client.lrange(KEY, 0, -1) == [str(i).encode() for i in range(50)]
    # Unbatched, 50 concurrent calls would have opened up to POOL_SIZE (32) connections.
    assert len(redis_server.client().client_list()) - before == 1


async def test_a_failing_call_fails_alone(
        redis_and_calls: tuple[aioredis.Redis, ScriptCalls]) -> None:
    _, calls = redis_and_calls
    results = await asyncio.gather(calls.call("append", [KEY], ["a"]),
                                   calls.call("fail", [], []),
                                   calls.call("append", [KEY], ["b"]),
                                   return_exceptions=True)
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], redis.exceptions.ResponseError)
    assert "NOPE on purpose" in str(results[1])


async def test_scripts_are_loaded_again_after_a_script_flush(
        redis_and_calls: tuple[aioredis.Redis, ScriptCalls]) -> None:
    client, calls = redis_and_calls
    assert await calls.call("append", [KEY], ["first"]) == 1
    await client.script_flush()
    # Both calls of this tick get NOSCRIPT, neither ran; each runs exactly once after the
    # reload.
    assert await asyncio.gather(calls.call("append", [KEY], ["second"]),
                                calls.call("append", [KEY], ["third"])) == [2, 3]
    assert await client.lrange(KEY, 0, -1) == [b"first", b"second", b"third"]


async def test_a_call_that_ran_is_answered_even_when_a_reload_beside_it_fails(
        redis_and_calls: tuple[aioredis.Redis, ScriptCalls]) -> None:
    client, calls = redis_and_calls
    assert await calls.call("append", [KEY], ["loaded"]) == 1
    ran, broken = await asyncio.gather(calls.call("append", [KEY], ["ran"]),
                                       calls.call("broken", [], []), return_exceptions=True)
    # "append" ran in the first pass; only "broken" needed (and failed) the reload.
    assert ran == 2
    assert isinstance(broken, redis.exceptions.ResponseError)
    assert await client.lrange(KEY, 0, -1) == [b"loaded", b"ran"]


async def test_a_call_abandoned_before_it_was_sent_is_not_sent(
        redis_and_calls: tuple[aioredis.Redis, ScriptCalls]) -> None:
    client, calls = redis_and_calls
    impatient = asyncio.ensure_future(calls.call("append", [KEY], ["gone"]))
    patient = calls.call("append", [KEY], ["kept"])
    impatient.cancel()
    assert await patient == 1
    assert impatient.cancelled()
    assert await client.lrange(KEY, 0, -1) == [b"kept"]


async def test_close_sends_what_the_tick_queued(
        redis_and_calls: tuple[aioredis.Redis, ScriptCalls]) -> None:
    client, calls = redis_and_calls
    queued = calls.call("append", [KEY], ["last"])
    await calls.close()  # before the tick's flush: close sends it and waits for it
    assert queued.done() and queued.result() == 1
    assert await client.lrange(KEY, 0, -1) == [b"last"]


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


async def test_a_call_with_its_slot_goes_to_that_master_and_a_wrong_slot_is_redirected(
        redis_cluster: LocalRedisCluster) -> None:
    """A call that names its hash slot is sent straight to the slot's master from redis-py's
    slot table; one that names a wrong slot reaches the wrong master, is answered MOVED and
    re-sent by redis-py: the routing stays redis-py's."""
    client = open_redis(redis_cluster.connection, mode="cluster")
    calls = ScriptCalls(client, SCRIPTS)
    keys = [f"test:script_calls:{{t{n}}}" for n in range(12)]  # on every master
    try:
        slots = [key_slot(key.encode()) for key in keys]
        right = [calls.call("append", [key], ["r"], slot=slot)
                 for key, slot in zip(keys, slots, strict=True)]
        wrong = [calls.call("append", [key], ["w"], slot=(slot + 5461) % 16384)
                 for key, slot in zip(keys, slots, strict=True)]
        assert await asyncio.gather(*right, *wrong) == [1] * len(keys) + [2] * len(keys)
        for key in keys:
            assert await client.lrange(key, 0, -1) == [b"r", b"w"]
    finally:
        await calls.close()
        await client.delete(*keys)
        await client.aclose()
