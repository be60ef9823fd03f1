"""The session suite on a real 3-master Redis Cluster (``REDIS_MODE=cluster``): the tests of
tests/test_e2e_session.py, and the kill -9 / restart cases of tests/test_e2e_faults.py, run
here again unchanged against GameServers and Gateways whose Redis is the cluster; and the
keys really spread over every master.

The fixtures ``system`` and ``system_factory`` are this module's own (they shadow those of
conftest.py for the imported tests); each cluster of services keeps to its own
``REDIS_KEY_PREFIX`` on the shared Redis Cluster, so they never see each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from protocol import MsgType
from servicekit.keys import Keys
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.redis_cluster import LocalRedisCluster, on_redis_cluster, services_on
from tests.support.users import new_user_id
from tests.test_e2e_faults import (  # noqa: F401 (collected here again)
    test_move_retry_after_gameserver_kill_9_and_restart,
    test_reconnect_after_gameserver_kill_9_and_restart,
)
from tests.test_e2e_session import (  # noqa: F401 (collected here again)
    test_duplicate_login_kicks_old_socket_and_kills_its_key,
    test_empty_payload_reads_as_empty_object,
    test_logged_out_session_cannot_be_resumed,
    test_login_echo_move_ping,
    test_lz4_compression_both_ways,
    test_reconnect_restores_snapshot_and_rotates_key,
    test_reconnect_while_old_socket_open_takes_over,
    test_reconnect_with_wrong_key_or_unknown_session,
    test_response_cache_is_bounded,
    test_retry_after_reconnect_returns_cached_move,
    test_retry_gets_identical_cached_bytes_and_move_is_not_applied_twice,
    test_state_survives_logout_and_login,
    test_whisper_same_node,
)

SUITE_PREFIX = "suite:"


@pytest.fixture(scope="module")
def system(redis_cluster: LocalRedisCluster,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One GameServer and one Gateway on the Redis Cluster."""
    with services_on(redis_cluster, tmp_path_factory.mktemp("system-redis-cluster"),
                     {"REDIS_KEY_PREFIX": SUITE_PREFIX}) as shared:
        yield shared


@pytest.fixture
def system_factory(system_factory: Callable[..., Cluster],
                   redis_cluster: LocalRedisCluster) -> Callable[..., Cluster]:
    """conftest's ``system_factory``, on the Redis Cluster."""
    return on_redis_cluster(system_factory, redis_cluster)


async def test_sessions_spread_over_every_master(system: Cluster,
                                                 redis_cluster: LocalRedisCluster) -> None:
    keys = Keys(SUITE_PREFIX)
    clients = []
    for _ in range(24):
        client = await RawClient.connect(system.gateway_address)
        await client.login(new_user_id())
        await client.request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})
        clients.append(client)
    per_master = {}
    for master in redis_cluster.masters_now():
        with master.client() as direct:
            per_master[master.port] = sum(1 for _ in direct.scan_iter(f"{SUITE_PREFIX}*"))
    # 24 users (player, user key, session, responses, tombstone each) over 3 masters.
    assert len(per_master) == 3 and all(count > 0 for count in per_master.values()), per_master
    with redis_cluster.client() as cluster_client:
        registry = cluster_client.smembers(keys.nodes)
    assert registry == {str(system.gameserver.node_id).encode()}
    for client in clients:
        await client.close()
