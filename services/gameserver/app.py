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
from typing import Any
from urllib.parse import parse_qs

import zmq

from gameserver import metrics
from gameserver.config import GameServerConfig
from gameserver.handlers import router
from gameserver.handover import TargetPicker
from gameserver.hub import Hub
from gameserver.link import CannotBind, GatewayLink, PortInUse
from gameserver.mesh import MeshClient, MeshServer
from gameserver.middlewares import standard_middlewares
from gameserver.replica_wait import ReplicaWait
from gameserver.store import SessionStore
from protocol.internal import Record, gameserver_routing_id
from protocol.messages import KickReason
from servicekit import zmqsockets
from servicekit.config import describe
from servicekit.curve import load_keys, log_curve
from servicekit.fdlimit import apply_nofile_limit
from servicekit.http import AdminRequest, start_ops_server
from servicekit.redis_client import open_redis
from servicekit.redis_health import REDIS_FAILURES, RedisHealth, RetryDelays
from servicekit.redis_url import display_address, uses_tls
from servicekit.registry import (
    NodeInfo,
    NodeRegistry,
    Registry,
    ordinal_node_id,
    read_registry,
)
from servicekit.startup import bind_failed
from servicekit.zap import PortGuard

log = logging.getLogger("gameserver")


def advertise_host(configured: str) -> str:
    if configured:
        return configured
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class NodeIdConflict(Exception):
    def __init__(self, node_id: int, holder: str) -> None:
        super().__init__(
            f"GameServer node id {node_id} is already registered by another live process "
            f"(instance {holder}); give each GameServer its own GAMESERVER_NODE_ID, or use "
            "GAMESERVER_NODE_ID=auto")


class GameServerApp:
    def __init__(self, config: GameServerConfig) -> None:
        self.config = config
        self.instance = secrets.token_hex(6)
        self.redis_address = display_address(config.redis_connection)
        self.redis = open_redis(config.redis_connection, tls=config.redis_tls,
                                mode=config.redis_mode,
                                sentinel_master=config.redis_sentinel_master)
        self.keys = config.keys
        self.registry = NodeRegistry(self.redis, self.keys, self.instance)
        self.zmq = zmq.Context()
        #: Checked by the config already (a bad file stopped the start with one line).
        self.curve = load_keys(config.curve_secret_file)
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.registered_at = 0.0
        #: The one "Redis reachable" state: the heartbeat and the group commit report to it.
        self.health = RedisHealth(self.redis_address, log,
                                  tls=uses_tls(config.redis_connection))
        self.node_id = 0
        self.hub: Hub | None = None
        self.mesh: MeshClient | None = None
        #: The registry as last read: mesh peers and handover targets.
        self.peers: Registry = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.node = NodeInfo(
            instance=self.instance, host=advertise_host(config.advertise_host),
            p2p_port=config.p2p_port, mesh_port=config.mesh_port,
            metrics_port=config.metrics_port, started_ms=int(time.time() * 1000),
            curve_key=self.curve.public.decode() if self.curve is not None else "",
        )

    def readiness(self) -> tuple[bool, str]:
        fresh = time.monotonic() - self.registered_at < self.config.node_ttl_s
        if self.hub is None or not self.hub.accepting:
            return False, "not accepting sessions (starting or draining)"
        if not fresh:
            return False, f"not registered: Redis at {self.redis_address} {self.health.state}"
        if not self.health.reachable:
            return False, (f"Redis at {self.redis_address} {self.health.state} for "
                           f"{self.health.unreachable_for():.1f}s")
        return True, f"ready: node {self.node_id}, {len(self.hub.sessions)} sessions"

    # ------------------------------------------------------------------ start-up
    async def run(self) -> int:
        config = self.config
        loop = asyncio.get_running_loop()
        loop.set_task_factory(eager_task_factory)
        log.info("GameServer starting (instance %s) %s", self.instance, describe(config))
        apply_nofile_limit(log)
        log_curve(log, self.curve, config.curve_secret_file)
        try:
            ops = await start_ops_server(config.metrics_host, config.metrics_port,
                                         self.readiness, admin=self._admin_http)
        except OSError as exc:
            return bind_failed(log, exc, config.metrics_port, "GAMESERVER_METRICS_PORT")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        node_id = await self._resolve_node_id()
        if node_id is None:
            ops.close()
            return self.exit_code
        self.node_id = node_id
        store = SessionStore(self.redis, self.keys, f"{node_id}:{self.instance}", node_id,
                             per_slot=config.redis_mode == "cluster",
                             wait=ReplicaWait.configured(config.redis_wait_replicas,
                                                         config.redis_request_timeout_s))
        # Before anything binds: without a ZAP handler libzmq admits any CURVE key.
        guard = PortGuard(self.zmq, self.curve, (zmqsockets.P2P, zmqsockets.MESH),
                          lambda port, reason: metrics.internal_refusals.labels(
                              port, reason).inc())
        try:
            link = GatewayLink(self.zmq, gameserver_routing_id(node_id), config.bind_host,
                               config.p2p_port, self._on_records, self.curve)
        except PortInUse:
            ops.close()
            return bind_failed(log, OSError(errno.EADDRINUSE, "in use"), config.p2p_port,
                                "GAMESERVER_P2P_PORT")
        except CannotBind as exc:
            ops.close()
            log.error("Cannot listen for Gateways (GAMESERVER_BIND_HOST, GAMESERVER_P2P_PORT): "
                      "%s", exc)
            return 1
        try:
            mesh_server = MeshServer(self.zmq, node_id, config.bind_host, config.mesh_port,
                                     self.curve)
        except OSError as exc:
            link.close()
            ops.close()
            return bind_failed(log, exc, config.mesh_port, "GAMESERVER_MESH_PORT")
        hub = self.hub = Hub(config, store, link, standard_middlewares(), router, node_id,
                             self.health)
        self.mesh = hub.mesh = MeshClient(self.zmq, node_id, self.instance, self.curve)
        guard.watch(link.socket, zmqsockets.P2P)
        guard.watch(mesh_server.socket, zmqsockets.MESH)
        endpoints = hub.mesh_endpoints
        mesh_server.register("release", endpoints.mesh_release)
        mesh_server.register("whisper", endpoints.mesh_whisper)
        mesh_server.register("kick_user", endpoints.mesh_kick_user)
        mesh_server.register("adopt", endpoints.mesh_adopt)
        mesh_server.register("ping", _pong)
        metrics.node_info.labels(str(node_id), self.instance).set(1)
        metrics.create_known_series()
        metrics.ready.set_function(lambda: 1 if self.readiness()[0] else 0)
        metrics.gateways_connected.set_function(lambda: len(link.live_gateways()))
        log.info("P2P listening: tcp://%s:%d, mesh tcp://%s:%d (advertised as %s)",
                 config.bind_host, config.p2p_port, config.bind_host, config.mesh_port,
                 self.node.host)
        self._tasks = [asyncio.create_task(self._heartbeat_loop()),
                       asyncio.create_task(self._lease_loop())]
        await self.stopping.wait()
        await self._drain()
        guard.close()
        link.close()
        mesh_server.close()
        self.mesh.close()
        ops.close()
        await store.close()
        await self.redis.aclose()
        self.zmq.term()
        log.info("GameServer stopped: node %d", node_id)
        return self.exit_code

    async def _resolve_node_id(self) -> int | None:
        """The configured id, the StatefulSet ordinal, or the lowest free id leased in Redis
        (which needs Redis: wait for it). None when asked to stop meanwhile."""
        configured = self.config.node_id
        if configured.isdigit():
            return int(configured)
        if configured == "ordinal":
            ordinal = ordinal_node_id()
            if ordinal is None:
                log.error("GAMESERVER_NODE_ID=ordinal, but the host name %r does not end in "
                          "-<number> (is this a StatefulSet pod?)", socket.gethostname())
                self.exit_code = 2
                return None
            log.info("Node id %d from the StatefulSet ordinal of %s", ordinal,
                     socket.gethostname())
            return ordinal
        ttl_ms = int(self.config.node_ttl_s * 1000)
        delays = RetryDelays(cap_s=self.config.heartbeat_s)
        while not self.stopping.is_set():
            try:
                node_id = await self.registry.claim_free_id(ttl_ms, self.node.fields(0, False))
            except REDIS_FAILURES as exc:
                self.health.failed(exc, "a node id is leased there (GAMESERVER_NODE_ID=auto), "
                                        "retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delays.next())
                continue
            self.health.succeeded()
            log.info("Node id %d leased in Redis (GAMESERVER_NODE_ID=auto)", node_id)
            self.registered_at = time.monotonic()
            return node_id
        return None

    def _on_records(self, gateway_id: bytes, records: list[Record]) -> None:
        assert self.hub is not None
        self.hub.on_records(gateway_id, records)

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            log.info("%s received: draining", sig.name)
            self.stopping.set()

    # ------------------------------------------------------------------ background
    async def _heartbeat_loop(self) -> None:
        config = self.config
        ttl_ms = int(config.node_ttl_s * 1000)
        first = True
        waited = False
        claim_deadline = time.monotonic() + 2 * config.node_ttl_s
        delays = RetryDelays(cap_s=config.heartbeat_s)
        while True:
            assert self.hub is not None and self.mesh is not None
            started = time.perf_counter()
            try:
                holder = await self.registry.claim(
                    self.node_id, ttl_ms,
                    self.node.fields(len(self.hub.sessions), not self.hub.accepting))
                if holder is None:
                    self.peers = await read_registry(self.redis, self.keys)
            except REDIS_FAILURES as exc:
                metrics.redis_errors.labels("heartbeat").inc()
                self.health.failed(exc, "retrying with backoff")
                await asyncio.sleep(delays.next())
                continue
            else:
                metrics.redis_duration.labels("heartbeat").observe(
                    time.perf_counter() - started)
                if holder is not None:
                    if first and time.monotonic() < claim_deadline:
                        # Most likely our own previous incarnation (kill -9, restart): its
                        # entry expires within NODE_TTL_S unless that process is still alive.
                        if not waited:
                            log.warning("Node id %d is held by instance %s; waiting up to "
                                        "%.1fs for that entry to expire", self.node_id,
                                        holder, 2 * config.node_ttl_s)
                            waited = True
                        await asyncio.sleep(min(config.heartbeat_s, 0.25))
                        continue
                    log.error("%s", NodeIdConflict(self.node_id, holder))
                    self.exit_code = 1
                    self.stopping.set()
                    return
                self.health.succeeded()
                delays.reset()
                self.registered_at = time.monotonic()
                self.mesh.update(self.peers)
                if first:
                    log.info("Registered in node registry: node %d at %s:%d",
                             self.node_id, self.node.host, config.p2p_port)
                    first = False
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

    # ------------------------------------------------------------------ drain
    async def _drain(self) -> None:
        """Stop taking sessions, hand every session to the other GameServers without the
        clients noticing, then leave; whatever could not be handed over is kicked with
        SERVER_SHUTDOWN and stays resumable."""
        assert self.hub is not None and self.mesh is not None
        hub = self.hub
        # The registry is re-read by the heartbeat while the handover runs: the picker
        # sees each new read.
        targets = TargetPicker(self.node_id, lambda: self.peers, self.mesh.is_down)
        hub.accepting = False
        hub.announce_draining()
        with contextlib.suppress(*REDIS_FAILURES):
            # Publish "draining" right away (Gateways also learn it from HELLO_ACK).
            await self.registry.claim(self.node_id, int(self.config.node_ttl_s * 1000),
                                      self.node.fields(len(hub.sessions), True))
            self.peers = await read_registry(self.redis, self.keys)
        try:
            await hub.handover.hand_over_all(targets.pick, self.config.drain_timeout_s)
            await hub.shutdown()
        except REDIS_FAILURES as exc:
            log.error("Redis unavailable during drain: %s", exc)
        # No heartbeat may re-register the node after it is released.
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.registry.release(self.node_id)
        except REDIS_FAILURES as exc:
            log.error("Could not remove the registry entry (it expires in NODE_TTL_S): %s",
                      exc)

    # ------------------------------------------------------------------ admin
    async def _admin_http(self, request: AdminRequest) -> tuple[int, bytes]:
        """``POST /admin/kick?user_id=N`` with ``Authorization: Bearer $ADMIN_TOKEN``."""
        token = self.config.admin_token
        if not token:
            return 404, b"admin endpoints are off; set ADMIN_TOKEN to enable them\n"
        if not secrets.compare_digest(request.headers.get("authorization", ""),
                                      f"Bearer {token}"):
            return 401, b"missing or wrong bearer token\n"
        if request.method != "POST" or request.path != "/admin/kick":
            return 404, b"try POST /admin/kick?user_id=N\n"
        values = parse_qs(request.query).get("user_id", [""])
        if not values[0].isdigit() or self.hub is None:
            return 400, b"user_id must be a positive integer\n"
        try:
            kicked = await self.hub.mesh_endpoints.kick_user(int(values[0]),
                                                             KickReason.ADMIN_KICK)
        except REDIS_FAILURES as exc:
            log.error("Admin kick failed, Redis unavailable: %s",
                      str(exc) or type(exc).__name__)
            return 503, f"Redis at {self.redis_address} unavailable; retry\n".encode()
        return (200, b'{"kicked": true}\n') if kicked else (404, b'{"kicked": false}\n')


def eager_task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
    """asyncio.eager_task_factory that also takes the ``eager_start`` keyword uvloop passes
    on Python 3.13 (asyncio's own factory rejects it there)."""
    kwargs.pop("eager_start", None)
    return asyncio.Task(coro, loop=loop, eager_start=True, **kwargs)


async def _pong(body: dict[str, Any]) -> dict[str, Any]:
    return {"pong": True}
