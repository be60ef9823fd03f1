"""Durable acknowledgements and a master's failover on a real Redis Cluster of 3 masters
with a replica each (``REDIS_MODE=cluster``, ``REDIS_WAIT_REPLICAS=1``).

First the group commit's ``WAIT`` itself: one per master, each behind that master's calls,
so a SIGSTOPped replica fails only the calls of its own master. Then ``kill -9`` of the
master that holds players' sessions, under MOVE load: its replica is promoted, the services
follow by themselves, ``/readyz`` says so while it lasts, and the history checker finds no
acknowledged MOVE lost or doubled. The kill comes last: it leaves the cluster one node short.
The Sentinel failover under load is in tests/test_e2e_redis_sentinel.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from gameserver.replica_wait import ReplicaWait
from gameserver.script_calls import ScriptCalls
from servicekit.keys import Keys
from servicekit.redis_client import open_redis
from servicekit.redis_problems import NotReplicated
from tests.support.chaos_players import Player
from tests.support.failover_load import ReadyzSamples, moves_through_a_fault
from tests.support.redis_cluster import LocalRedisCluster, services_on
from tests.support.redis_servers import LocalRedisServer, RedisUnavailable
from tests.support.users import new_user_id
from tests.support.waiting import wait_until_async

APPEND = {"append": "return redis.call('RPUSH', KEYS[1], ARGV[1])"}
#: Keys spread over every master (30 hash tags land on all three of 3 masters).
SPREAD = [f"test:wait:{{t{n}}}" for n in range(30)]


@pytest.fixture
async def cluster_calls(replicated_redis_cluster: LocalRedisCluster
                        ) -> AsyncIterator[ScriptCalls]:
    with replicated_redis_cluster.client() as client:
        client.delete(*SPREAD)  # (redis-py splits a multi-key DEL per slot)
    cluster = open_redis(replicated_redis_cluster.connection, mode="cluster")
    calls = ScriptCalls(cluster, APPEND, ReplicaWait(1, 300))
    try:
        yield calls
    finally:
        await calls.close()
        await cluster.aclose()


def read_on_replica(replica: LocalRedisServer, key: str) -> list[bytes]:
    with replica.client() as client:
        client.execute_command("READONLY")  # a replica answers reads of its master's slots
        return list(client.lrange(key, 0, -1))


async def test_each_master_waits_for_its_own_replica(
        replicated_redis_cluster: LocalRedisCluster, cluster_calls: ScriptCalls) -> None:
    rc = replicated_redis_cluster
    masters = {key: rc.master_of_key(key) for key in SPREAD}
    assert len({m.port for m in masters.values()}) == 3, "the keys do not reach every master"
    answers = await asyncio.gather(*(cluster_calls.call("append", [key], ["a"], durable=True)
                                     for key in SPREAD))
    assert answers == [1] * len(SPREAD)
    for key, master in masters.items():  # read at once: each answer waited for its replica
        assert read_on_replica(rc.replica_of(master), key) == [b"a"], key

    # One master's replica stops acknowledging: only that master's calls fail.
    lagging = masters[SPREAD[0]]
    replica = rc.replica_of(lagging)
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        answers = await asyncio.gather(
            *(cluster_calls.call("append", [key], ["b"], durable=True) for key in SPREAD),
            return_exceptions=True)
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    for key, answer in zip(SPREAD, answers, strict=True):
        if masters[key].port == lagging.port:
            assert isinstance(answer, NotReplicated), (key, answer)
        else:
            assert answer == 2, (key, answer)


@pytest.mark.timeout(180)
async def test_a_killed_master_loses_no_acknowledged_move(
        replicated_redis_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    rc = replicated_redis_cluster
    users = [new_user_id() for _ in range(24)]
    home = {uid: rc.master_of_key(Keys().player(uid)).port for uid in users}
    victim = next(n for n in rc.masters_now()
                  if n.port == max(home.values(), key=list(home.values()).count))
    on_victim = [uid for uid in users if home[uid] == victim.port]
    assert on_victim, "no player has its keys on the master to kill"

    async def kill_the_master(_: list[Player]) -> None:
        victim.kill()
        await wait_until_async(lambda: _promoted(rc, victim), timeout=30, interval=0.2,
                               message="no replica took over the killed master's slots")
        # The promoted replica has no replica of its own: with REDIS_WAIT_REPLICAS=1 its
        # players' MOVEs are refused (never acknowledged undurably) until the old master,
        # restarted, has rejoined as its replica.
        victim.start()
        await asyncio.to_thread(rc.wait_ok, 30)

    env = {"REDIS_WAIT_REPLICAS": "1", "CLIENT_RATE_LIMIT": "0"}
    with services_on(rc, tmp_path, env) as services:
        with ReadyzSamples(services.gameserver.metrics_port) as readyz:
            result = await moves_through_a_fault([services.gateway_address], users,
                                                 kill_the_master)
        print(result.summary())
        # Every player, those of the killed master included, was served again (the helper
        # waits for it), and no acknowledged MOVE was lost or applied twice.
        assert result.findings == [], result.summary()
        assert not any(p.stopped for p in result.players), result.summary()
        # /readyz said so while the commits failed, and is 200 again afterwards.
        assert 503 in readyz.statuses(result.fault_at), readyz.samples[-20:]
        services.gameserver.wait_ready(10)


def _promoted(rc: LocalRedisCluster, dead: LocalRedisServer) -> bool:
    """A surviving node serves the dead master's slots and every survivor says ok."""
    try:
        with rc.client() as client:
            masters = {node.port for node in client.get_primaries()}
        rc.wait_ok(timeout=0.5, replicas_online=False)
    except (redis.RedisError, OSError, RedisUnavailable):
        return False
    return dead.port not in masters
