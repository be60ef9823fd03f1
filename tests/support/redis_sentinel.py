"""A real Redis Sentinel set for tests: a master, its replica(s) and three sentinels, all
``redis-server`` processes on free loopback ports.

One replica by default: with ``REDIS_WAIT_REPLICAS=1`` that is the set-up where no
failover, forced or not, can lose an acknowledged MOVE (docs/OPERATIONS.md §1.4.2).

Why real processes: what Sentinel changes (asking the sentinels for the master, following a
failover) only shows against real sentinels. The master and the replicas are
:class:`~tests.support.redis_servers.LocalRedisServer`, so a test can ``kill()`` one.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from redis.sentinel import Sentinel

from tests.support.ports import free_port
from tests.support.processes import die_with_parent, stop_child, track_child
from tests.support.redis_servers import LocalRedisServer, RedisUnavailable, redis_binary

MASTER_NAME = "mymaster"
SYNC_AT_ONCE = ["--repl-diskless-sync-delay", "0"]


class LocalRedisSentinel:
    """Master + ``replicas`` replicas + 3 sentinels (quorum 2, master down after 1 s)."""

    #: The services' REDIS_MODE for it.
    mode = "sentinel"

    def __init__(self, data_dir: Path, master_name: str = MASTER_NAME,
                 replicas: int = 1) -> None:
        binary = redis_binary()
        if binary is None:
            raise RedisUnavailable("Sentinel needs redis-server on PATH")
        self.binary = binary
        self.data_dir = data_dir
        self.master_name = master_name
        # Either may be master after a failover; a full sync then starts at once, not after
        # the default 5 s.
        self.master = LocalRedisServer(data_dir / "master", extra_args=SYNC_AT_ONCE)
        self.replicas = [LocalRedisServer(data_dir / f"replica-{n}", extra_args=SYNC_AT_ONCE)
                         for n in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """What ``REDIS_CONNECTION`` gets with ``REDIS_MODE=sentinel``: the sentinels."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self, timeout: float = 30.0) -> LocalRedisSentinel:
        self.master.start()
        for replica in self.replicas:
            replica.extra_args += ["--replicaof", self.master.host, str(self.master.port)]
            replica.start()
        for index, port in enumerate(self.sentinel_ports):
            directory = self.data_dir / f"sentinel-{index}"
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"logfile {directory / 'sentinel.log'}\n"
                f"sentinel monitor {self.master_name} {self.master.host} {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                f"sentinel failover-timeout {self.master_name} 5000\n"
                f"sentinel parallel-syncs {self.master_name} 1\n")
            process = subprocess.Popen([self.binary, str(config), "--sentinel"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True,
                                       preexec_fn=die_with_parent)
            track_child(process)
            self._sentinels.append(process)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every sentinel names the master and knows the replicas and the others,
        and the replicas are in sync (REDIS_WAIT_REPLICAS needs it)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._replica_in_sync() and all(
                        self._sentinel_sees_everything(port) for port in self.sentinel_ports):
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise RedisUnavailable("the sentinels did not settle")
            time.sleep(0.1)

    def _replica_in_sync(self) -> bool:
        for server in self.replicas:
            with server.client(decode_responses=True) as replica:
                if replica.info("replication").get("master_link_status") != "up":
                    return False
        return True

    def _sentinel_sees_everything(self, port: int) -> bool:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1,
                         decode_responses=True) as sentinel:
            master = sentinel.sentinel_master(self.master_name)
            return (int(master["num-slaves"]) >= len(self.replicas)
                    and int(master["num-other-sentinels"]) >= 2)

    def sentinel(self) -> Sentinel:
        return Sentinel([("127.0.0.1", port) for port in self.sentinel_ports],
                        socket_timeout=2)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A synchronous client of whichever server is master now."""
        client: redis.Redis = self.sentinel().master_for(self.master_name, **kwargs)
        return client

    def master_address(self) -> tuple[str, int]:
        host, port = self.sentinel().discover_master(self.master_name)
        return str(host), int(port)

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def close(self) -> None:
        for process in self._sentinels:
            def terminate(process: subprocess.Popen[bytes] = process) -> None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()

            stop_child(process, 10, terminate)
        for replica in self.replicas:
            replica.kill()
        self.master.kill()
