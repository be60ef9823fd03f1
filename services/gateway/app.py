"""Wires the Gateway together and runs it until SIGTERM/SIGINT, then drains."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import signal
import ssl
import time
from collections.abc import Callable

import orjson
import zmq

from gateway import metrics
from gateway.config import GatewayConfig
from gateway.connection import ClientConnection
from gateway.links import GameServerLinks
from gateway.relay import Relay
from gateway.tls import ServerTls
from gateway.tls_connection import TlsConnection
from gateway.ws_connection import WsConnection
from protocol.internal import gateway_routing_id
from servicekit.config import describe
from servicekit.curve import load_keys, log_curve
from servicekit.fdlimit import apply_nofile_limit
from servicekit.http import start_ops_server
from servicekit.redis_client import open_redis
from servicekit.redis_health import REDIS_FAILURES, RedisHealth, RetryDelays
from servicekit.redis_url import display_address, uses_tls
from servicekit.registry import read_registry
from servicekit.startup import bind_failed

log = logging.getLogger("gateway")


#: A registry read that takes longer counts as a Redis failure: a Redis that hangs instead of
#: refusing turns /readyz unready this fast, not after the client's socket timeouts (~13 s).
REGISTRY_READ_TIMEOUT_S = 2.0


class GatewayApp:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.redis_address = display_address(config.redis_connection)
        self.redis = open_redis(config.redis_connection, tls=config.redis_tls,
                                mode=config.redis_mode,
                                sentinel_master=config.redis_sentinel_master)
        self.keys = config.keys
        self.zmq = zmq.Context()
        #: Checked by the config already (a bad file stopped the start with one line).
        self.curve = load_keys(config.curve_secret_file)
        self.instance = secrets.token_hex(4)
        self.relay = Relay(config)
        self.stopping = asyncio.Event()
        #: Reported by the discovery loop; /readyz is not ready while Redis is unreachable.
        self.health = RedisHealth(self.redis_address, log,
                                  tls=uses_tls(config.redis_connection))
        self.listening = False

    def readiness(self) -> tuple[bool, str]:
        if not self.listening or not self.relay.accepting:
            return False, "not accepting clients (starting or draining)"
        links = self.relay.links
        live = len(links.live()) if links is not None else 0
        if live == 0:
            return False, "no live GameServer"
        if not self.health.reachable:
            # Logins cannot work; routing of logged-in clients still does (the last known
            # GameServers are kept), so this only steers new clients elsewhere.
            return False, (f"Redis at {self.redis_address} {self.health.state} for "
                           f"{self.health.unreachable_for():.1f}s")
        return True, f"ready: {live} GameServer(s), {len(self.relay.connections)} clients"

    async def run(self) -> int:
        config = self.config
        loop = asyncio.get_running_loop()
        log.info("Gateway starting: node %d (instance %s) %s", config.node_id, self.instance,
                 describe(config))
        apply_nofile_limit(log, config.max_connections, "GATEWAY_MAX_CONNECTIONS")
        log_curve(log, self.curve, config.curve_secret_file)
        try:
            ops = await start_ops_server(config.metrics_host, config.metrics_port,
                                         self.readiness)
        except OSError as exc:
            return bind_failed(log, exc, config.metrics_port, "GATEWAY_METRICS_PORT")
        liveness = max(3 * config.discovery_interval_s, 3.0)
        links = GameServerLinks(self.zmq, gateway_routing_id(config.node_id, self.instance),
                                self.relay.on_records, self.relay.on_undeliverable, liveness,
                                self.relay.node_down, self.curve)
        self.relay.links = links
        metrics.create_known_series()
        metrics.gameservers_live.set_function(lambda: len(links.live()))
        metrics.ready.set_function(lambda: 1 if self.readiness()[0] else 0)
        servers: list[asyncio.Server] = []

        def give_up() -> None:
            for server in servers:
                server.close()
            links.close()
            ops.close()

        tls: ServerTls | None = None
        if config.tls_enabled:
            try:
                tls = ServerTls(config.tls_cert_file, config.tls_key_file)
            except (OSError, ssl.SSLError) as exc:
                log.error("Cannot load the TLS certificate and key: %s (GATEWAY_TLS_CERT_FILE=%s,"
                          " GATEWAY_TLS_KEY_FILE=%s)", exc, config.tls_cert_file,
                          config.tls_key_file)
                give_up()
                return 2

        def client_over(transport: str) -> Callable[[], ClientConnection]:
            return functools.partial(ClientConnection, self.relay, config.max_frame_bytes,
                                     transport)

        client = client_over("tcp")

        if config.plaintext:
            try:
                servers.append(await loop.create_server(
                    client, config.client_host, config.client_port, reuse_address=True,
                    reuse_port=config.reuse_port, backlog=4096))
            except OSError as exc:
                give_up()
                return bind_failed(log, exc, config.client_port, "GATEWAY_CLIENT_PORT")
            log.info("Listening for clients on %s:%d", config.client_host, config.client_port)
        if tls is not None:
            server_tls = tls
            tls_client = client_over("tls")
            try:
                # The idle timeout covers the handshake too.
                servers.append(await loop.create_server(
                    lambda: TlsConnection(server_tls, tls_client, config.idle_timeout_s),
                    config.client_host, config.tls_port, reuse_address=True,
                    reuse_port=config.reuse_port, backlog=4096))
            except OSError as exc:
                give_up()
                return bind_failed(log, exc, config.tls_port, "GATEWAY_TLS_PORT")
            loop.add_signal_handler(signal.SIGHUP, server_tls.reload)
            log.info("Listening for TLS clients on %s:%d (certificate %s; SIGHUP reloads it)",
                     config.client_host, config.tls_port, config.tls_cert_file)
        for port, over_tls, variable in ((config.ws_port if config.plaintext else 0, False,
                                          "GATEWAY_WS_PORT"),
                                         (config.wss_port if tls is not None else 0, True,
                                          "GATEWAY_WSS_PORT")):
            if not port:
                continue
            try:
                servers.append(await loop.create_server(
                    self._websocket_factory(client_over("wss" if over_tls else "ws"),
                                            tls if over_tls else None),
                    config.client_host, port, reuse_address=True,
                    reuse_port=config.reuse_port, backlog=4096))
            except OSError as exc:
                give_up()
                return bind_failed(log, exc, port, variable)
            log.info("Listening for WebSocket%s clients on %s:%d (path /, origins: %s)",
                     " over TLS" if over_tls else "", config.client_host, port,
                     ", ".join(config.ws_origins) or "any")
        if tls is None:
            # SIGHUP's default action would end the process: an operator reloading every
            # Gateway must not kill those without TLS.
            loop.add_signal_handler(signal.SIGHUP, log.info,
                                    "SIGHUP received: no TLS certificate to reload")
        self.listening = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        tasks = [asyncio.create_task(self._discovery_loop()),
                 asyncio.create_task(self._hello_loop()),
                 asyncio.create_task(self._sweep_loop())]
        await self.stopping.wait()
        await self._drain(servers)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        links.close()
        ops.close()
        await self.redis.aclose()
        self.zmq.term()
        log.info("Gateway stopped: node %d", config.node_id)
        return 0

    def _websocket_factory(self, client: Callable[[], ClientConnection],
                           tls: ServerTls | None) -> Callable[[], asyncio.Protocol]:
        """The protocol factory of a WebSocket port: WebSocket over TCP, or over TLS. The
        idle timeout covers the TLS handshake and the upgrade too."""
        config = self.config
        origins = config.ws_origins

        def websocket() -> WsConnection:
            return WsConnection(client, config.max_frame_bytes, origins,
                                config.idle_timeout_s)

        if tls is None:
            return websocket
        return lambda: TlsConnection(tls, websocket, config.idle_timeout_s)

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            log.info("%s received: draining", sig.name)
            self.stopping.set()

    async def _hello_loop(self) -> None:
        """Liveness of the GameServers we know, independent of Redis: a slow or dead Redis
        must not make live GameServers look dead."""
        links = self.relay.links
        assert links is not None
        hello = orjson.dumps({"gateway_id": self.config.node_id})
        while True:
            links.say_hello(hello)
            links.check_liveness()
            await asyncio.sleep(self.config.discovery_interval_s)

    async def _discovery_loop(self) -> None:
        links = self.relay.links
        assert links is not None
        delays = RetryDelays(cap_s=self.config.discovery_interval_s)
        while True:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(REGISTRY_READ_TIMEOUT_S):
                    registry = await read_registry(self.redis, self.keys)
            except REDIS_FAILURES as exc:
                metrics.redis_errors.labels("discovery").inc()
                self.health.failed(exc, "keeping the last known GameServers and retrying")
                await asyncio.sleep(delays.next())
                continue
            else:
                self.health.succeeded()
                delays.reset()
                metrics.redis_duration.labels("discovery").observe(
                    time.perf_counter() - started)
                links.update(registry)
                metrics.gameservers_known.set(len(registry))
            await asyncio.sleep(self.config.discovery_interval_s)

    async def _sweep_loop(self) -> None:
        """Timeouts (idle, login, handover) are checked a few times per shortest timeout."""
        config = self.config
        timeouts = [config.idle_timeout_s, config.login_timeout_s or config.idle_timeout_s]
        interval = min(1.0, min(timeouts) / 4)
        while True:
            await asyncio.sleep(interval)
            self.relay.sweep(self.relay.clock())

    async def _drain(self, servers: list[asyncio.Server]) -> None:
        """Stop accepting, tell every client SERVER_SHUTDOWN, close after a grace.

        During the grace the connections keep working, so answers in flight arrive; clients
        that leave on their own (the client library reconnects elsewhere at once) shorten
        it. Then the rest are closed, their buffers flushed, and stragglers aborted.
        """
        relay = self.relay
        relay.accepting = False
        for server in servers:
            server.close()
        grace = self.config.drain_grace_s
        log.info("Draining %d client connections (grace %.1fs)", len(relay.connections), grace)
        emptied = asyncio.Event()
        relay.on_empty = emptied.set
        relay.announce_shutdown()
        if relay.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(emptied.wait(), grace)
        if relay.connections:
            relay.close_all("shutdown")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(emptied.wait(), 1.0)
        if relay.connections:
            log.warning("Aborting %d connections that did not close", len(relay.connections))
            for conn in list(relay.connections.values()):
                conn.abort()
        if relay.links is not None:
            relay.links.flush()
