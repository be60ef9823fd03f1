"""The cross-node cases of tests/test_cluster.py on a real 3-master Redis Cluster
(``REDIS_MODE=cluster``): duplicate login across GameServers and Gateways, the same user at
the same instant through two Gateways, whisper across nodes, the admin kick (the CLI with
``--redis-mode cluster``), and exactly-once MOVE through a ``kill -9`` and a drain of a
GameServer, run again unchanged. ``cluster`` and ``system_factory`` are this module's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.cluster import Cluster
from tests.support.redis_cluster import LocalRedisCluster, on_redis_cluster, services_on
from tests.test_cluster import (  # noqa: F401 (collected here again)
    CLUSTER_ENV,
    test_admin_kick_wherever_the_user_is,
    test_cross_node_duplicate_login,
    test_kill_9_failover_under_load_is_exactly_once,
    test_quick_reconnect_racing_the_old_close,
    test_same_user_same_instant_through_two_gateways,
    test_sigterm_drain_under_load_has_no_client_visible_errors,
    test_whisper_across_nodes_and_gateways,
)


@pytest.fixture(scope="module")
def cluster(redis_cluster: LocalRedisCluster,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 GameServers and 2 Gateways on the Redis Cluster, under the default prefix (the
    imported tests read keys with ``Keys()``)."""
    with services_on(redis_cluster, tmp_path_factory.mktemp("cluster-on-redis-cluster"),
                     CLUSTER_ENV, gameservers=3, gateways=2) as shared:
        yield shared


@pytest.fixture
def system_factory(system_factory: Callable[..., Cluster],
                   redis_cluster: LocalRedisCluster) -> Callable[..., Cluster]:
    """conftest's ``system_factory``, on the Redis Cluster."""
    return on_redis_cluster(system_factory, redis_cluster)
