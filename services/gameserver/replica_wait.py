"""Durable acknowledgements (``REDIS_WAIT_REPLICAS``): a write counts as done only once
``WAIT`` has seen it on that many replicas of its master.

Redis replicates asynchronously: a master that acknowledged a write and died before its
replica copied it takes the write with it, and the promoted replica never had it. ``WAIT N
T`` blocks the connection that sent the writes until N replicas have everything that
connection wrote, or T ms have passed, and answers how many did. So the ``WAIT`` rides in the
same pipeline, on the same connection, right behind the tick's durable script calls: one
``WAIT`` per tick on one Redis, one per master on a cluster (redis-py's cluster pipeline
sends each master's commands in order on one connection, and ``target_nodes`` puts the
``WAIT`` behind them). A call whose master answered fewer than N is failed with
:class:`~servicekit.redis_problems.NotReplicated`; its caller retries it, which the group
commit does anyway (a commit is idempotent).

Why not Redis' ``min-replicas-to-write``: it refuses writes when replicas are *connected*
too few, it does not wait for a write to arrive, so an acknowledged write can still be lost.

What ``WAIT`` does not promise: the replica has the write in memory (on disk only per its
own AOF settings), and a master that comes back with its old data set after a restart
without persistence can still win. docs/OPERATIONS.md §1.4.3 has the whole table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from servicekit.redis_client import SOCKET_TIMEOUT_S, RedisClient
from servicekit.redis_problems import NotReplicated

#: WAIT's own timeout stays this far under the connection's socket timeout, so a slow
#: replica shows as a short count, not as a broken connection.
_SOCKET_MARGIN_S = 0.5


def wait_timeout_ms(request_timeout_s: float) -> int:
    """How long one ``WAIT`` may block: half the time a MOVE's answer may be held
    (REDIS_REQUEST_TIMEOUT_S), so a failed wait still leaves time for one retry, and under
    the socket timeout. Never 0: ``WAIT n 0`` blocks for ever."""
    seconds = min(request_timeout_s / 2, SOCKET_TIMEOUT_S - _SOCKET_MARGIN_S)
    return max(1, int(seconds * 1000))


@dataclass(frozen=True, slots=True)
class ReplicaWait:
    """``WAIT replicas timeout_ms`` behind the durable calls of each pipeline."""

    replicas: int
    timeout_ms: int

    @staticmethod
    def configured(replicas: int, request_timeout_s: float) -> ReplicaWait | None:
        """REDIS_WAIT_REPLICAS's wait (None for 0: acknowledged once the master has it)."""
        if replicas <= 0:
            return None
        return ReplicaWait(replicas, wait_timeout_ms(request_timeout_s))

    async def queue(self, pipe: Any, client: RedisClient, queued: int,
                    durable: Sequence[tuple[int, str]]) -> WaitPlan:
        """Queue the ``WAIT``\\s on ``pipe``, which holds ``queued`` calls, among them the
        ``durable`` ones: (position in the pipeline, first key) each."""
        if not isinstance(client, RedisCluster):  # one connection: one WAIT
            pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
            return WaitPlan(self, 1, {position: (queued, "", key)
                                      for position, key in durable})
        await client.initialize()  # the slot table (a no-op once known; refreshed after
        # a failure, so the WAIT goes to the master the calls go to)
        waits: dict[str, int] = {}
        covers: dict[int, tuple[int, str, str]] = {}
        for position, key in durable:
            node = _master_of(client, key)
            if node is None:  # no master known for the slot: the call itself fails too
                covers[position] = (-1, "", key)
                continue
            if node.name not in waits:
                waits[node.name] = queued + len(waits)
                pipe.execute_command("WAIT", self.replicas, self.timeout_ms,
                                     target_nodes=node)
            covers[position] = (waits[node.name], node.name, key)
        return WaitPlan(self, len(waits), covers, client)


@dataclass(slots=True)
class WaitPlan:
    """Which ``WAIT`` answer covers which call of one pipeline."""

    wait: ReplicaWait
    #: WAITs queued after the calls.
    waits: int
    #: position of a durable call -> (position of its WAIT, its master's name on a cluster,
    #: its first key)
    covers: dict[int, tuple[int, str, str]]
    cluster: RedisCluster | None = None

    def apply(self, results: list[Any]) -> list[Any]:
        """The calls' results (the WAITs' answers taken off), a durable one replaced by
        NotReplicated where its master confirmed too few replicas, or where, on a cluster,
        the call ran on another master than the one that waited (redis-py re-sends a call
        answered ``MOVED`` alone, to the slot's new master)."""
        calls = results[:len(results) - self.waits]
        for position, (at, node_name, key) in self.covers.items():
            if isinstance(calls[position], Exception):
                continue  # failed anyway (a NOSCRIPT one is sent again, with its own WAIT)
            confirmed = results[at] if at >= 0 else RuntimeError("no master for the slot")
            if isinstance(confirmed, Exception):
                calls[position] = NotReplicated(f"WAIT failed: {confirmed}")
            elif int(confirmed) < self.wait.replicas:
                calls[position] = NotReplicated(
                    f"WAIT: {int(confirmed)} of {self.wait.replicas} replicas within "
                    f"{self.wait.timeout_ms} ms")
            elif self.cluster is not None and not self._still_on(key, node_name):
                calls[position] = NotReplicated(
                    "the write was redirected away from the master that waited")
        return calls

    def _still_on(self, key: str, node_name: str) -> bool:
        assert self.cluster is not None
        node = _master_of(self.cluster, key)
        return node is not None and node.name == node_name


def _master_of(cluster: RedisCluster, key: str) -> ClusterNode | None:
    """The master serving ``key``'s slot in redis-py's slot table (None: not covered)."""
    try:
        return cluster.get_node_from_key(key)
    except RedisClusterException:  # SlotNotCoveredError (not a RedisError)
        return None
