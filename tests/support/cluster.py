"""A running backbone for integration tests: GameServer(s) and Gateway(s) on one Redis.

The usual shape is one GameServer and one Gateway (:meth:`Cluster.start` with the defaults),
but tests of failover and multi-node routing add more with :meth:`Cluster.add_gameserver` /
:meth:`Cluster.add_gateway`. Every node gets fresh free ports and a node id unique in the
pytest run (so two clusters on one Redis never register the same node), listens on
127.0.0.1 only, and is started with the flags a deployment would use.

Nodes keep their ports and node id across :meth:`GameServerNode.restart`, which is what a
"GameServer crashed and came back" test needs: clients' pinned sessions name the node.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port
from tests.support.processes import ProcessGroup, ServiceProcess
from tests.support.redis_servers import RedisServer

LOOPBACK = "127.0.0.1"

#: Environment every cluster node starts with unless the test overrides it (a value of
#: ``None`` in an override means "unset: use the service's own default"). Faster discovery
#: and heartbeats make failover tests take a second instead of five; shorter drains make
#: teardown quick. These are the only deviations from the service defaults.
DEFAULT_ENV: dict[str, str] = {
    "LOG_LEVEL": "INFO",
    "DISCOVERY_INTERVAL_S": "0.2",
    "NODE_HEARTBEAT_S": "0.25",
    "NODE_TTL_S": "2",
    "GATEWAY_DRAIN_GRACE_S": "0.5",
    "GAMESERVER_DRAIN_TIMEOUT_S": "5",
}

_gameserver_ids = itertools.count(1)
_gateway_ids = itertools.count(1)


class _NodeControl:
    """Process control shared by both kinds of node (they keep node id and ports)."""

    process: ServiceProcess

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.process.wait_ready(timeout)

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful drain) and wait; returns the exit code."""
        return self.process.terminate(timeout)

    def kill(self) -> int | None:
        """SIGKILL: a crash, no drain."""
        return self.process.kill()

    def start(self, wait_ready: bool = True, timeout: float = 20.0) -> None:
        """Start again after terminate()/kill(): same node id, same ports."""
        self.process.start()
        if wait_ready:
            self.process.wait_ready(timeout)

    def restart(
        self, *, kill: bool = False, wait_ready: bool = True, timeout: float = 20.0
    ) -> None:
        self.process.restart(kill=kill, wait_ready=wait_ready, timeout=timeout)


@dataclass
class GameServerNode(_NodeControl):
    """One GameServer process and the ports it was given."""

    node_id: int
    p2p_port: int
    mesh_port: int
    metrics_port: int
    process: ServiceProcess
    host: str = LOOPBACK


@dataclass
class GatewayNode(_NodeControl):
    """One Gateway process; clients connect to ``(host, client_port)``."""

    node_id: int
    client_port: int
    p2p_port: int
    metrics_port: int
    process: ServiceProcess
    host: str = LOOPBACK
    #: GATEWAY_WS_PORT (every test Gateway serves WebSocket on a port of its own), and
    #: GATEWAY_WSS_PORT (served when the test gives it a certificate).
    ws_port: int = 0
    wss_port: int = 0

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` for game clients."""
        return (self.host, self.client_port)

    @property
    def ws_url(self) -> str:
        """Where WebSocket game clients connect."""
        return f"ws://{self.host}:{self.ws_port}/"


@dataclass
class Cluster:
    """GameServers and Gateways sharing ``redis``, logging to ``log_dir``.

    ``env`` applies to every node (on top of :data:`DEFAULT_ENV`); per-node ``env`` and
    ``flags`` given to :meth:`add_gameserver` / :meth:`add_gateway` win over it. Both services
    ignore variables they do not know, so ``{"IDLE_TIMEOUT_S": "1"}`` (Gateway) and
    ``{"RECONNECT_GRACE_S": "2"}`` (GameServer) can be passed cluster-wide.
    """

    redis: RedisServer
    log_dir: Path
    env: Mapping[str, str | None] = field(default_factory=dict)
    ready_timeout: float = 30.0
    gameservers: list[GameServerNode] = field(default_factory=list)
    gateways: list[GatewayNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.group = ProcessGroup(self.log_dir)

    # building

    def _node_env(self, extra: Mapping[str, str | None] | None) -> dict[str, str | None]:
        merged: dict[str, str | None] = dict(DEFAULT_ENV)
        merged["REDIS_MODE"] = self.redis.mode
        merged.update(self.env)
        merged.update(extra or {})
        return merged

    def add_gameserver(
        self,
        *,
        node_id: int | None = None,
        env: Mapping[str, str | None] | None = None,
        flags: Sequence[str] = (),
        wait_ready: bool = True,
    ) -> GameServerNode:
        """Start one more GameServer on fresh ports (and wait for ``/readyz``)."""
        node_id = next(_gameserver_ids) if node_id is None else node_id
        p2p_port, mesh_port, metrics_port = free_port(), free_port(), free_port()
        args = [
            "--redis-connection", self.redis.url,
            "--node-id", str(node_id),
            "--p2p-port", str(p2p_port),
            "--mesh-port", str(mesh_port),
            "--metrics-port", str(metrics_port),
            "--advertise-host", LOOPBACK,
            "--bind-host", LOOPBACK,
            "--metrics-host", LOOPBACK,
            *flags,
        ]
        process = self.group.spawn(
            f"gameserver-{node_id}", "gameserver", args,
            metrics_port=metrics_port, env=self._node_env(env),
        )
        node = GameServerNode(node_id, p2p_port, mesh_port, metrics_port, process)
        self.gameservers.append(node)
        if wait_ready:
            node.wait_ready(self.ready_timeout)
        return node

    def add_gateway(
        self,
        *,
        node_id: int | None = None,
        env: Mapping[str, str | None] | None = None,
        flags: Sequence[str] = (),
        wait_ready: bool = True,
    ) -> GatewayNode:
        """Start one more Gateway on fresh ports (and wait for ``/readyz``)."""
        node_id = next(_gateway_ids) if node_id is None else node_id
        client_port, p2p_port, metrics_port = free_port(), free_port(), free_port()
        ws_port, wss_port = free_port(), free_port()
        args = [
            "--redis-connection", self.redis.url,
            "--node-id", str(node_id),
            "--client-host", LOOPBACK,
            "--client-port", str(client_port),
            "--ws-port", str(ws_port),
            "--wss-port", str(wss_port),
            "--p2p-port", str(p2p_port),
            "--metrics-port", str(metrics_port),
            "--metrics-host", LOOPBACK,
            *flags,
        ]
        process = self.group.spawn(
            f"gateway-{node_id}", "gateway", args,
            metrics_port=metrics_port, env=self._node_env(env),
        )
        node = GatewayNode(node_id, client_port, p2p_port, metrics_port, process,
                           ws_port=ws_port, wss_port=wss_port)
        self.gateways.append(node)
        if wait_ready:
            node.wait_ready(self.ready_timeout)
        return node

    def start(self, gameservers: int = 1, gateways: int = 1) -> Cluster:
        """GameServers first (a Gateway is only ready once it knows one), then Gateways."""
        for _ in range(gameservers):
            self.add_gameserver()
        for _ in range(gateways):
            self.add_gateway()
        return self

    def stop(self) -> None:
        """Stop every node: Gateways first (they drain clients), then GameServers."""
        order = [g.process for g in self.gateways] + [g.process for g in self.gameservers]
        self.group.stop_all(order=order)

    # the common single-node case

    @property
    def gameserver(self) -> GameServerNode:
        """The first GameServer."""
        return self.gameservers[0]

    @property
    def gateway(self) -> GatewayNode:
        """The first Gateway."""
        return self.gateways[0]

    @property
    def gateway_host(self) -> str:
        return self.gateway.host

    @property
    def gateway_port(self) -> int:
        return self.gateway.client_port

    @property
    def gateway_address(self) -> tuple[str, int]:
        """``(host, port)`` of the first Gateway's client listener."""
        return self.gateway.address

    def restart_gameserver(
        self, index: int = 0, *, kill: bool = False, wait_ready: bool = True
    ) -> GameServerNode:
        """Stop (SIGTERM, or SIGKILL with ``kill=True``) and start the same node again."""
        node = self.gameservers[index]
        node.restart(kill=kill, wait_ready=wait_ready, timeout=self.ready_timeout)
        return node

    def kill_gameserver(self, index: int = 0) -> int | None:
        """SIGKILL one GameServer (no drain); start it again with ``.gameservers[i].start()``."""
        return self.gameservers[index].kill()

    def processes(self) -> list[ServiceProcess]:
        return list(self.group.processes)
