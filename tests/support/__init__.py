"""Test helpers shared by the unit and integration tests: real processes, real Redis.

Nothing in here mocks a service. The helpers exist so that every test starts the Gateway, the
GameServer and Redis the same way, waits on conditions instead of sleeping, and leaves no
process behind when it fails.
"""

from tests.support.cluster import Cluster, GameServerNode, GatewayNode
from tests.support.ports import free_port
from tests.support.processes import (
    ProcessGroup,
    ServiceFailed,
    ServiceProcess,
    http_get,
    stop_all_processes,
)
from tests.support.redis_servers import (
    ContainerRedisServer,
    LocalRedisServer,
    RedisServer,
    RedisUnavailable,
)
from tests.support.waiting import WaitTimeout, wait_until, wait_until_async

__all__ = [
    "Cluster",
    "ContainerRedisServer",
    "GameServerNode",
    "GatewayNode",
    "LocalRedisServer",
    "ProcessGroup",
    "RedisServer",
    "RedisUnavailable",
    "ServiceFailed",
    "ServiceProcess",
    "WaitTimeout",
    "free_port",
    "http_get",
    "stop_all_processes",
    "wait_until",
    "wait_until_async",
]
