"""The GameServer node registry in Redis: claimed and kept alive by GameServers, read by
Gateways (to dial them) and by GameServers (to find their service-mesh peers).

Layout (key names: servicekit.keys): a node's entry is a hash (instance, host, ports,
sessions, draining, heartbeat time) with a TTL of NODE_TTL_S, refreshed by the owner's
heartbeat; a set holds the ids. Both share one hash tag, so a claim is one script on Redis
Cluster too. No per-field expiry is needed, so Redis 7.0 works. An entry names the process
instance holding it, so a second process claiming the same id is refused instead of
silently sharing it. An entry whose key has expired is a dead node: readers drop it and
prune it from the set.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from servicekit.keys import Keys
from servicekit.redis_client import RedisClient

MAX_NODE_ID = 65535

#: node id -> (host, p2p port, all fields)
Registry = dict[int, tuple[str, int, dict[str, str]]]


def _script(name: str) -> str:
    return resources.files("servicekit").joinpath("lua", f"{name}.lua").read_text()


async def read_registry(client: RedisClient, keys: Keys) -> Registry:
    members = await client.smembers(keys.nodes)
    node_ids = sorted(int(m) for m in members if m.isdigit())
    if not node_ids:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for node_id in node_ids:
            pipe.hgetall(keys.node(node_id))
        entries = await pipe.execute()
    registry: Registry = {}
    stale: list[int] = []
    for node_id, raw in zip(node_ids, entries, strict=True):
        if not raw:
            stale.append(node_id)
            continue
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        try:
            registry[node_id] = (fields["host"], int(fields["p2p_port"]), fields)
        except (KeyError, ValueError):
            continue
    if stale:
        await client.srem(keys.nodes, *stale)
    return registry


class NodeRegistry:
    """Claims, refreshes and releases one process's entry."""

    def __init__(self, client: RedisClient, keys: Keys, instance: str) -> None:
        self.instance = instance
        self._keys = keys
        self._claim = client.register_script(_script("node_claim"))
        self._release = client.register_script(_script("node_release"))

    async def claim(self, node_id: int, ttl_ms: int, fields: dict[str, Any]) -> str | None:
        """Register or refresh; returns the other holder's instance when the id is taken."""
        flat: list[Any] = []
        for name, value in fields.items():
            flat += [name, value]
        holder = await self._claim(keys=[self._keys.node(node_id), self._keys.nodes],
                                   args=[node_id, self.instance, ttl_ms, *flat])
        if not holder:
            return None
        return holder.decode() if isinstance(holder, bytes) else str(holder)

    async def release(self, node_id: int) -> None:
        await self._release(keys=[self._keys.node(node_id), self._keys.nodes],
                            args=[node_id, self.instance])

    async def claim_free_id(self, ttl_ms: int, fields: dict[str, Any]) -> int:
        """The lowest id nobody holds, claimed for this instance (for identical replicas
        without per-replica config: docker compose --scale)."""
        for node_id in range(1, MAX_NODE_ID + 1):
            if await self.claim(node_id, ttl_ms, fields) is None:
                return node_id
        raise RuntimeError("no free GameServer node id left")


STATEFULSET_HOSTNAME = re.compile(r"^.+-(\d+)$")


def ordinal_node_id(hostname: str | None = None) -> int | None:
    """Node id from a Kubernetes StatefulSet pod name (``gameserver-0`` -> 1), else None.

    Stable across pod restarts, unique within the StatefulSet, no configuration needed.
    """
    name = (hostname or socket.gethostname()).split(".", 1)[0]
    match = STATEFULSET_HOSTNAME.match(name)
    if match is None:
        return None
    return int(match.group(1)) + 1


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a GameServer publishes about itself."""

    instance: str
    host: str
    p2p_port: int
    mesh_port: int
    metrics_port: int
    started_ms: int
    #: Z85 CURVE public key of its P2P and mesh ports ("" without CURVE): dialling
    #: clients expect it, when it is one of the keys they accept (servicekit.curve).
    curve_key: str = ""

    def fields(self, sessions: int, draining: bool) -> dict[str, str | int]:
        return {
            "curve_key": self.curve_key,
            "host": self.host,
            "p2p_port": self.p2p_port,
            "mesh_port": self.mesh_port,
            "metrics_port": self.metrics_port,
            "started_ms": self.started_ms,
            "sessions": sessions,
            "draining": int(draining),
            "heartbeat_ms": int(time.time() * 1000),
        }
