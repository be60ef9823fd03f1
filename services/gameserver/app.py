"""Wires the GameServer together and runs it until SIGTERM/SIGINT, then drains."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import signal
import socket
import time

import zmq

from gameserver import metrics
from gameserver.config import GameServerConfig
from gameserver.handlers import router
from gameserver.hub import REDIS_FAILURES, Hub
from gameserver.keys import Keys
from gameserver.link import CannotBind, GatewayLink, PortInUse
from gameserver.middlewares import standard_middlewares
from gameserver.registry import NodeIdConflict, NodeInfo
from gameserver.store import SessionStore
from protocol.internal import gameserver_routing_id
from servicekit.config import describe
from servicekit.http import start_ops_server
from servicekit.redis_client import open_redis
from servicekit.redis_url import display_address

log = logging.getLogger("gameserver")

KEY_PREFIX = "gb:"


def advertise_host(configured: str) -> str:
    if configured:
        return configured
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class GameServerApp:
    def __init__(self, config: GameServerConfig) -> None:
        self.config = config
        self.instance = secrets.token_hex(6)
        self.redis_address = display_address(config.redis_connection)
        self.redis = open_redis(config.redis_connection)
        self.store = SessionStore(self.redis, Keys(KEY_PREFIX), f"{config.node_id}:{self.instance}",
                                  config.node_id)
        self.zmq = zmq.Context()
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.registered_at = 0.0
        self.redis_ok = True
        self.hub: Hub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.node = NodeInfo(
            node_id=config.node_id, instance=self.instance,
            host=advertise_host(config.advertise_host), p2p_port=config.p2p_port,
            mesh_port=config.mesh_port, metrics_port=config.metrics_port,
            started_ms=int(time.time() * 1000),
        )

    def readiness(self) -> tuple[bool, str]:
        fresh = time.monotonic() - self.registered_at < self.config.node_ttl_s
        if self.hub is None or not self.hub.accepting:
            return False, "not accepting sessions (starting or draining)"
        if not fresh:
            return False, f"not registered: Redis at {self.redis_address} unreachable"
        if not self.hub.commits.redis_ok:
            return False, f"session writes failing: Redis at {self.redis_address}"
        return True, f"ready: node {self.config.node_id}, {len(self.hub.sessions)} sessions"

    async def run(self) -> int:
        config = self.config
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        log.info("GameServer starting: node %d (instance %s) %s", config.node_id,
                 self.instance, describe(config))
        try:
            ops = await start_ops_server(config.metrics_host, config.metrics_port,
                                         self.readiness)
        except OSError as exc:
            return self._bind_failed(exc, config.metrics_port, "GAMESERVER_METRICS_PORT")
        try:
            link = GatewayLink(self.zmq, gameserver_routing_id(config.node_id),
                               config.bind_host, config.p2p_port, self._on_records)
        except PortInUse:
            ops.close()
            return self._bind_failed(OSError(errno.EADDRINUSE, "in use"), config.p2p_port,
                                     "GAMESERVER_P2P_PORT")
        except CannotBind as exc:
            ops.close()
            log.error("Cannot listen for Gateways (GAMESERVER_BIND_HOST, GAMESERVER_P2P_PORT): "
                      "%s", exc)
            return 1
        self.hub = Hub(config, self.store, link, standard_middlewares(), router)
        metrics.node_info.labels(str(config.node_id), self.instance).set(1)
        metrics.ready.set_function(lambda: 1 if self.readiness()[0] else 0)
        link = self.hub.link
        metrics.gateways_connected.set_function(lambda: len(link.live_gateways()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        log.info("P2P listening: tcp://%s:%d (advertised as %s)", config.bind_host,
                 config.p2p_port, self.node.host)
        self._tasks = [asyncio.create_task(self._heartbeat_loop()),
                       asyncio.create_task(self._lease_loop())]
        await self.stopping.wait()
        await self._drain()
        link.close()
        ops.close()
        await self.redis.aclose()
        self.zmq.term()
        log.info("GameServer stopped: node %d", config.node_id)
        return self.exit_code

    def _on_records(self, gateway_id: bytes, records: list) -> None:  # type: ignore[type-arg]
        assert self.hub is not None
        self.hub.on_records(gateway_id, records)

    def _bind_failed(self, exc: OSError, port: int, variable: str) -> int:
        if exc.errno == errno.EADDRINUSE:
            log.error("Address already in use: port %d (%s)", port, variable)
        else:
            log.error("Cannot listen on port %d (%s): %s", port, variable, exc)
        return 1

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            log.info("%s received: draining", sig.name)
            self.stopping.set()

    async def _heartbeat_loop(self) -> None:
        config = self.config
        ttl_ms = int(config.node_ttl_s * 1000)
        first = True
        waited = False
        claim_deadline = time.monotonic() + 2 * config.node_ttl_s
        while True:
            assert self.hub is not None
            try:
                holder = await self.store.claim_node(
                    ttl_ms, self.node.fields(len(self.hub.sessions), not self.hub.accepting))
            except REDIS_FAILURES as exc:
                if self.redis_ok:
                    log.error("Redis is NOT reachable at %s (%s); retrying every %.1fs",
                              self.redis_address, exc, config.heartbeat_s)
                self.redis_ok = False
            else:
                if holder is not None:
                    if first and time.monotonic() < claim_deadline:
                        # Most likely our own previous incarnation (kill -9, restart): its
                        # entry expires within NODE_TTL_S unless that process is still alive.
                        if not waited:
                            log.warning("Node id %d is held by instance %s; waiting up to "
                                        "%.1fs for that entry to expire", config.node_id,
                                        holder, 2 * config.node_ttl_s)
                            waited = True
                        await asyncio.sleep(min(config.heartbeat_s, 0.25))
                        continue
                    log.error("%s", NodeIdConflict(config.node_id, holder))
                    self.exit_code = 1
                    self.stopping.set()
                    return
                if not self.redis_ok:
                    log.info("Redis is reachable again at %s", self.redis_address)
                self.redis_ok = True
                self.registered_at = time.monotonic()
                if first:
                    log.info("Registered in node registry: node %d at %s:%d",
                             config.node_id, self.node.host, config.p2p_port)
                    first = False
            if self.redis_ok:
                with contextlib.suppress(*REDIS_FAILURES):  # counted next time round
                    await self.hub.count_expired()
            await asyncio.sleep(config.heartbeat_s)

    async def _lease_loop(self) -> None:
        interval = self.config.session_lease_s / 3
        while True:
            await asyncio.sleep(interval)
            assert self.hub is not None
            try:
                await self.hub.renew_leases()
            except REDIS_FAILURES as exc:
                log.error("Could not renew session leases: %s", exc)

    async def _drain(self) -> None:
        assert self.hub is not None
        self.hub.accepting = False
        try:
            await self.hub.shutdown()
        except REDIS_FAILURES as exc:
            log.error("Redis unavailable during drain: %s", exc)
        # No heartbeat may re-register the node after it is released.
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.store.release_node()
        except REDIS_FAILURES as exc:
            log.error("Could not remove the registry entry (it expires in NODE_TTL_S): %s",
                      exc)
