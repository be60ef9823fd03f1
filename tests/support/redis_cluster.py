"""A real Redis Cluster for tests: ``redis-server`` processes in cluster mode on free loopback
ports, joined with ``redis-cli --cluster create`` (3 masters, optionally a replica each).

Why real processes: what a cluster changes (slots, ``CROSSSLOT``, ``MOVED``, a master's
failover) is exactly what a fake would not show. Each node is a
:class:`~tests.support.redis_servers.LocalRedisServer`, so a test can ``kill()`` one.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from tests.support.ports import free_port
from tests.support.redis_servers import LocalRedisServer, RedisUnavailable, redis_binary


def redis_cli() -> str | None:
    return shutil.which("redis-cli")


class LocalRedisCluster:
    """``masters`` masters (and ``replicas`` replicas each) on 127.0.0.1."""

    def __init__(self, data_dir: Path, masters: int = 3, replicas: int = 0) -> None:
        if redis_binary() is None or redis_cli() is None:
            raise RedisUnavailable("a Redis Cluster needs redis-server and redis-cli on PATH")
        self.data_dir = data_dir
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[LocalRedisServer] = []

    #: The services' REDIS_MODE for it.
    mode = "cluster"

    @property
    def connection(self) -> str:
        """What ``REDIS_CONNECTION`` gets with ``REDIS_MODE=cluster``: every seed node."""
        return ",".join(node.connection for node in self.nodes)

    @property
    def url(self) -> str:
        """What tests.support.cluster passes as ``--redis-connection`` (the seeds)."""
        return self.connection

    def start(self, timeout: float = 30.0) -> LocalRedisCluster:
        for index in range(self.masters * (1 + self.replicas)):
            node_dir = self.data_dir / f"node-{index}"
            node = LocalRedisServer(node_dir, extra_args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "2000",
                # A replica's first full sync starts at once, not after the default 5 s.
                "--repl-diskless-sync-delay", "0",
                # The bus port, named: the default (port + 10000) may be taken, or too high.
                "--cluster-port", str(free_port()),
            ])
            self.nodes.append(node.start())
        cli = redis_cli()
        assert cli is not None
        created = subprocess.run(
            [cli, "--cluster", "create", *(n.connection for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False)
        if created.returncode != 0:
            self.close()
            raise RedisUnavailable(f"redis-cli --cluster create failed:\n{created.stdout}"
                                   f"\n{created.stderr}")
        self.wait_ok(timeout)
        return self

    def wait_ok(self, timeout: float = 30.0, replicas_online: bool = True) -> None:
        """Until every running node reports ``cluster_state:ok`` (slots assigned, agreed)
        and, with ``replicas_online``, every master has its replicas online (a master's
        ``WAIT`` counts a replica only from its first acknowledgement after the sync)."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                if not node.running:
                    continue
                try:
                    with node.client(decode_responses=True) as client:
                        states.append(client.cluster("INFO")["cluster_state"])
                        replication = client.info("replication")
                except (redis.RedisError, OSError):
                    states.append("down")
                    continue
                if replicas_online and replication["role"] == "master":
                    online = [r for r in _replicas(replication) if r.get("state") == "online"]
                    states.append("ok" if len(online) >= self.replicas else "replica syncing")
            if states and all(state == "ok" for state in states):
                return
            if time.monotonic() >= deadline:
                raise RedisUnavailable(f"the Redis Cluster did not settle: {states}")
            time.sleep(0.1)

    def client(self, **kwargs: Any) -> RedisCluster:
        """A synchronous cluster client for a test's own checks (bytes, like
        :meth:`RedisServer.client`), seeded with a node that runs (a test may have killed
        others)."""
        first = next(node for node in self.nodes if node.running)
        return RedisCluster(host=first.host, port=first.port, **kwargs)

    def replica_of(self, master: LocalRedisServer) -> LocalRedisServer:
        """A running replica of ``master``."""
        with master.client(decode_responses=True) as client:
            ports = {int(replica["port"]) for replica in _replicas(client.info("replication"))}
        return next(n for n in self.nodes if n.port in ports and n.running)

    def master_of_key(self, key: str) -> LocalRedisServer:
        """The node serving ``key``'s slot now."""
        with self.client() as client:
            node = client.get_node_from_key(key)
            return next(n for n in self.nodes if n.port == node.port)

    def masters_now(self) -> list[LocalRedisServer]:
        with self.client() as client:
            ports = {node.port for node in client.get_primaries()}
        return [n for n in self.nodes if n.port in ports]

    def flush(self) -> None:
        for node in self.masters_now():
            with node.client() as client:
                client.flushall()

    def close(self) -> None:
        for node in self.nodes:
            node.kill()


def _replicas(info: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``slaveN`` entries of ``INFO replication`` (redis-py parses each into a dict)."""
    return [value for key, value in info.items()
            if key.startswith("slave") and isinstance(value, Mapping)]


_prefixes = (f"rc{n}:" for n in itertools.count(1))


def on_redis_cluster(system_factory: Callable[..., Any],
                     redis_cluster: LocalRedisCluster) -> Callable[..., Any]:
    """conftest's ``system_factory``, making its clusters of services on ``redis_cluster``,
    each under a ``REDIS_KEY_PREFIX`` of its own (they share the Redis Cluster, never a
    key)."""
    def make(*, env: Mapping[str, str | None] | None = None, **kwargs: Any) -> Any:
        return system_factory(redis=redis_cluster,
                              env={"REDIS_KEY_PREFIX": next(_prefixes), **(env or {})},
                              **kwargs)
    return make


@contextmanager
def services_on(redis_cluster: LocalRedisCluster, log_dir: Path,
                env: Mapping[str, str | None], gameservers: int = 1,
                gateways: int = 1) -> Iterator[Any]:
    """GameServers and Gateways on ``redis_cluster`` (a tests.support.cluster.Cluster,
    started), stopped on the way out."""
    from tests.support.cluster import Cluster

    services = Cluster(redis_cluster, log_dir, env=env)  # type: ignore[arg-type]
    try:
        yield services.start(gameservers=gameservers, gateways=gateways)
    finally:
        services.stop()
