"""Durable acknowledgements (REDIS_WAIT_REPLICAS, gameserver.replica_wait) against a real
master and replica: a durable script call is answered only once the replica has it, fails
with NotReplicated while the replica cannot confirm it (the replica is SIGSTOPped, a real
lagging replica), and the calls that are not durable in the same pipeline do not wait.
The cluster case (one WAIT per master) is in tests/test_redis_failover.py."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from gameserver.replica_wait import ReplicaWait, wait_timeout_ms
from gameserver.script_calls import ScriptCalls
from servicekit.redis_client import SOCKET_TIMEOUT_S, open_redis
from servicekit.redis_problems import REPLICAS, NotReplicated, diagnose
from tests.support.redis_sentinel import SYNC_AT_ONCE
from tests.support.redis_servers import LocalRedisServer, redis_binary
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(redis_binary() is None,
                                reason="needs redis-server on PATH for a master and replica")

APPEND = {"append": "return redis.call('RPUSH', KEYS[1], ARGV[1])"}
KEY = "test:replica_wait"


def replicating(master: LocalRedisServer, replica: LocalRedisServer) -> bool:
    info = replica.client(decode_responses=True).info("replication")
    return bool(info.get("master_link_status") == "up"
                and master.client().info("replication")["connected_slaves"] >= 1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[LocalRedisServer, LocalRedisServer]]:
    """A master and its replica."""
    base = tmp_path_factory.mktemp("replica-wait")
    master = LocalRedisServer(base / "master", extra_args=SYNC_AT_ONCE).start()
    replica = LocalRedisServer(base / "replica", extra_args=[
        "--replicaof", master.host, str(master.port)]).start()
    try:
        wait_until(lambda: replicating(master, replica), timeout=20,
                   message="the replica did not sync with the master")
        yield master, replica
    finally:
        replica.kill()
        master.kill()


@pytest.fixture
async def calls(pair: tuple[LocalRedisServer, LocalRedisServer]) -> AsyncIterator[ScriptCalls]:
    master, _ = pair
    master.client().delete(KEY)
    client: aioredis.Redis = open_redis(master.connection)  # type: ignore[assignment]
    script_calls = ScriptCalls(client, APPEND, ReplicaWait(1, 300))
    try:
        yield script_calls
    finally:
        await script_calls.close()
        await client.aclose()


async def test_a_durable_call_is_answered_once_the_replica_has_it(
        pair: tuple[LocalRedisServer, LocalRedisServer], calls: ScriptCalls) -> None:
    _, replica = pair
    lengths = await asyncio.gather(*(calls.call("append", [KEY], [i], durable=True)
                                     for i in range(20)))
    assert lengths == list(range(1, 21))
    # Read at once, no waiting: the answer came only after the replica had every write.
    assert replica.client().lrange(KEY, 0, -1) == [str(i).encode() for i in range(20)]


async def test_unconfirmed_durable_calls_fail_and_the_others_do_not_wait(
        pair: tuple[LocalRedisServer, LocalRedisServer], calls: ScriptCalls) -> None:
    master, replica = pair
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)  # a replica that stops acknowledging
    try:
        durable, plain = await asyncio.gather(
            calls.call("append", [KEY], ["durable"], durable=True),
            calls.call("append", [KEY], ["plain"]),
            return_exceptions=True)
        assert isinstance(durable, NotReplicated)
        assert "0 of 1 replicas within 300 ms" in str(durable)
        assert plain == 2
        # The master ran it (WAIT does not undo a write): a retry writes it again, which is
        # why only idempotent calls (the group commit) are made durable.
        assert master.client().lrange(KEY, 0, -1) == [b"durable", b"plain"]
        problem = diagnose(durable)
        assert problem.kind == REPLICAS
        assert "REDIS_WAIT_REPLICAS" in problem.line("127.0.0.1:1")
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    # The replica catches up: the same call is acknowledged again.
    assert await calls.call("append", [KEY], ["again"], durable=True) == 3
    assert replica.client().llen(KEY) == 3


def test_wait_timeout_leaves_room_for_a_retry_and_stays_under_the_socket_timeout() -> None:
    assert wait_timeout_ms(2.0) == 1000
    assert wait_timeout_ms(0.1) == 50
    assert wait_timeout_ms(60.0) < SOCKET_TIMEOUT_S * 1000
    assert wait_timeout_ms(0.001) == 1  # never WAIT n 0, which blocks for ever
    assert ReplicaWait.configured(0, 2.0) is None
    assert ReplicaWait.configured(2, 2.0) == ReplicaWait(2, 1000)
