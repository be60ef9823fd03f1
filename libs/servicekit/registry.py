"""Reads the GameServer registry that GameServers keep alive in Redis (see gameserver.registry).

An entry whose key has expired is a dead node: it is dropped here and pruned from the set.
When Redis is unreachable the last known view is kept, so a Redis outage does not take
routing down with it.
"""

from __future__ import annotations

import redis.asyncio as aioredis

KEY_PREFIX = "gb:"
NODES_KEY = f"{KEY_PREFIX}nodes"

#: node id -> (host, p2p port, all fields)
Registry = dict[int, tuple[str, int, dict[str, str]]]


async def read_registry(client: aioredis.Redis) -> Registry:
    members = await client.smembers(NODES_KEY)
    node_ids = sorted(int(m) for m in members if m.isdigit())
    if not node_ids:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for node_id in node_ids:
            pipe.hgetall(f"{KEY_PREFIX}node:{node_id}")
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
        await client.srem(NODES_KEY, *stale)
    return registry
