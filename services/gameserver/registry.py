"""Node registry: this GameServer's entry in Redis, kept alive by a heartbeat.

Layout: ``<prefix>node:<id>`` is a hash (instance, host, ports, sessions, heartbeat time)
with a TTL of NODE_TTL_S; ``<prefix>nodes`` is the set of ids. No per-field expiry is
needed, so Redis 7.0 works. The entry names the process instance that holds it, so a
second process with the same node id is refused instead of silently sharing the id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: int
    instance: str
    host: str
    p2p_port: int
    mesh_port: int
    metrics_port: int
    started_ms: int

    def fields(self, sessions: int, draining: bool) -> dict[str, str | int]:
        return {
            "host": self.host,
            "p2p_port": self.p2p_port,
            "mesh_port": self.mesh_port,
            "metrics_port": self.metrics_port,
            "started_ms": self.started_ms,
            "sessions": sessions,
            "draining": int(draining),
            "heartbeat_ms": int(time.time() * 1000),
        }


class NodeIdConflict(Exception):
    def __init__(self, node_id: int, holder: str) -> None:
        super().__init__(
            f"GameServer node id {node_id} is already registered by another live process "
            f"(instance {holder}); give each GameServer its own GAMESERVER_NODE_ID"
        )
