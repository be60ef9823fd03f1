"""The session suite behind real Redis Sentinel (``REDIS_MODE=sentinel``): a master, a
replica and three sentinels; the tests of tests/test_e2e_session.py run here again
unchanged, and after ``SENTINEL FAILOVER`` promotes the replica the services follow the new
master by themselves: every player's next MOVE counts on from where it was.

``system`` is this module's own (it shadows conftest's for the imported tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from protocol import ErrorCode, MsgType
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.redis_sentinel import LocalRedisSentinel
from tests.support.users import new_user_id
from tests.support.waiting import wait_until
from tests.test_e2e_session import (  # noqa: F401 (collected here again)
    test_duplicate_login_kicks_old_socket_and_kills_its_key,
    test_login_echo_move_ping,
    test_reconnect_restores_snapshot_and_rotates_key,
    test_retry_gets_identical_cached_bytes_and_move_is_not_applied_twice,
    test_state_survives_logout_and_login,
    test_whisper_same_node,
)


@pytest.fixture(scope="module")
def system(redis_sentinel: LocalRedisSentinel,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One GameServer and one Gateway behind the sentinels."""
    services = Cluster(redis_sentinel, tmp_path_factory.mktemp("system-sentinel"))  # type: ignore[arg-type]
    try:
        yield services.start()
    finally:
        services.stop()


async def move_until_answered(client: RawClient, seq: int, timeout: float = 20.0) -> int:
    """MOVE with sequence id ``seq``, again (the same id) while the answer is
    SERVER_UNAVAILABLE; the ``moves`` of the answer."""
    async with asyncio.timeout(timeout):
        while True:
            answer = await client.request(MsgType.MOVE_REQ, seq, {"x": seq, "y": 0})
            if answer.msg_type == MsgType.MOVE_RES:
                return int(answer.payload["moves"])
            assert answer.payload["code"] == ErrorCode.SERVER_UNAVAILABLE.value, answer
            await asyncio.sleep(0.2)


async def test_services_follow_a_sentinel_failover(system: Cluster,
                                                    redis_sentinel: LocalRedisSentinel) -> None:
    players = []
    for _ in range(5):
        client = await RawClient.connect(system.gateway_address)
        await client.login(new_user_id())
        assert await move_until_answered(client, 2) == 1
        players.append(client)
    old_master = redis_sentinel.master_address()
    with redis_sentinel.client() as master:
        assert master.wait(1, 5000) == 1  # the replica has every acknowledged MOVE
    with redis.Redis(host="127.0.0.1", port=redis_sentinel.sentinel_ports[0]) as sentinel:
        sentinel.sentinel_failover(redis_sentinel.master_name)
    wait_until(lambda: redis_sentinel.master_address() != old_master, timeout=20,
               message="the sentinels did not promote the replica")
    # Every player's next MOVE lands on the new master: counted on, not lost, not twice.
    for client in players:
        assert await move_until_answered(client, 3) == 2
        assert await move_until_answered(client, 3) == 2  # a retry: the cached answer
        await client.close()
    # And both services say they are ready (their Redis checks go to the new master).
    system.gameserver.wait_ready(10)
    system.gateway.wait_ready(10)
