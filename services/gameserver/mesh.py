"""Service mesh: request/response between GameServers over ZeroMQ (GAMESERVER_MESH_PORT).

Each GameServer binds a ROUTER (``gs-<id>``) that serves calls, and has one ROUTER that
dials every peer's mesh port to make calls. A call is ``[request_id, method, JSON body]``;
the answer ``[request_id, b"ok" | b"error", JSON body]``. Every call has a deadline and
fails with a typed :class:`MeshError` (``UNREACHABLE``, ``TIMEOUT``, or the remote's own
code), never an opaque exception: callers decide what the client sees. The admin CLI talks
to the same server port with a DEALER.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import zmq
from zmq.utils.monitor import parse_monitor_message

from gameserver import metrics
from servicekit import zmqsockets
from servicekit.curve import ClusterKeys, CurveMismatch, ServerKeys
from servicekit.redial import RedialGuard, hang_up
from servicekit.redis_health import RetryDelays
from servicekit.registry import Registry
from servicekit.zap import HANDSHAKE_FAILED, describe_handshake_failure
from servicekit.zmqloop import ZmqReader

log = logging.getLogger("gameserver.mesh")

MeshHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
DEFAULT_DEADLINE_S = 1.0
#: First retry of a call to a peer whose connection is still being set up (then the shared
#: jittered backoff, within the call's deadline).
UNREACHABLE_RETRY_S = 0.02


class MeshError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def mesh_routing_id(node_id: int) -> bytes:
    return f"gs-{node_id}".encode()


class MeshServer:
    """Serves this node's mesh methods to peers and admin tools."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], node_id: int, bind_host: str,
                 port: int, curve: ClusterKeys | None = None) -> None:
        self.handlers: dict[str, MeshHandler] = {}
        sock = zmqsockets.router(context, mesh_routing_id(node_id), linger_ms=0, curve=curve,
                                 serves=zmqsockets.MESH)
        try:
            sock.bind(f"tcp://{bind_host}:{port}")
        except zmq.ZMQError as exc:
            sock.close(0)
            raise OSError(exc.errno or errno.EINVAL, str(exc)) from None
        self._socket = self.socket = sock
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader = ZmqReader(sock, self._on_messages)

    def register(self, method: str, handler: MeshHandler) -> None:
        self.handlers[method] = handler

    def _on_messages(self, messages: list[list[bytes]]) -> None:
        for message in messages:
            if len(message) != 4:
                log.warning("Ignoring a mesh request with %d frames", len(message))
                continue
            task = asyncio.get_running_loop().create_task(self._serve(*message))
            if not task.done():
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _serve(self, peer: bytes, request_id: bytes, method: bytes, body: bytes) -> None:
        name = method.decode(errors="replace")
        handler = self.handlers.get(name)
        status, reply = b"ok", b"{}"
        if handler is None:
            status, reply = b"error", orjson.dumps(
                {"code": "NO_SUCH_METHOD", "message": f"unknown mesh method {name!r}"})
        else:
            try:
                reply = orjson.dumps(await handler(orjson.loads(body)))
            except MeshError as exc:
                status, reply = b"error", orjson.dumps({"code": exc.code,
                                                        "message": exc.message})
            except Exception as exc:
                log.exception("Mesh method %s failed", name)
                status, reply = b"error", orjson.dumps({"code": "REMOTE_ERROR",
                                                        "message": str(exc)})
        metrics.mesh_served.labels(name, "ok" if status == b"ok" else "error").inc()
        try:
            self._socket.send_multipart((peer, request_id, status, reply), zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("Could not answer mesh call %s from %s: %s", name,
                        peer.decode(errors="replace"), exc)
        self._reader.poke()

    def close(self) -> None:
        self._reader.close()
        self._socket.close(0)


class MeshClient:
    """Calls peers' mesh methods; knows the peers from the node registry."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], node_id: int,
                 instance: str, curve: ClusterKeys | None = None) -> None:
        self.node_id = node_id
        self._server_keys = ServerKeys(curve, log, "mesh peer")
        sock = zmqsockets.router(context, f"gs-{node_id}-{instance}-client".encode(),
                                 linger_ms=0, curve=curve)
        self._socket = sock
        #: node id -> endpoint dialled; and the CURVE key it was dialled with.
        self.peers: dict[int, str] = {}
        self._peer_keys: dict[int, bytes | None] = {}
        #: Endpoints whose handshake failed, already logged (until one succeeds).
        self._failed_handshakes: set[str] = set()
        self._redial = RedialGuard()
        #: Peers whose connection is known to be down (it dropped after being up): calls
        #: to them fail at once instead of waiting out their deadline.
        self._down: set[str] = set()
        self._ids = itertools.count(1)
        self._pending: dict[bytes, asyncio.Future[tuple[bytes, bytes]]] = {}
        #: Which peer endpoint each pending call went to (to fail it if that peer drops).
        self._pending_endpoint: dict[bytes, str] = {}
        self._reader = ZmqReader(sock, self._on_messages)
        self._monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED)
        self._monitor_reader = ZmqReader(self._monitor, self._on_monitor)

    def update(self, registry: Registry) -> None:
        """Dial new peers' mesh ports, hang up on vanished ones."""
        seen: set[int] = set()
        for node_id, (host, _, fields) in registry.items():
            if node_id == self.node_id or "mesh_port" not in fields:
                continue
            endpoint = f"tcp://{host}:{fields['mesh_port']}"
            try:
                key = self._server_keys.for_node(node_id, endpoint, fields.get("curve_key", ""))
            except CurveMismatch:
                continue  # not dialled (logged): calls to it fail UNREACHABLE
            seen.add(node_id)
            if self.peers.get(node_id) == endpoint and self._peer_keys.get(node_id) == key:
                continue
            if node_id in self.peers:
                self._hang_up(node_id)  # moved, or restarted with another key (rotation)
            if not self._redial.may_dial(mesh_routing_id(node_id)):
                continue  # hung up a moment ago (libzmq would abort): the next update dials
            zmqsockets.dial(self._socket, endpoint, routing_id=mesh_routing_id(node_id),
                            server_key=key)
            self.peers[node_id] = endpoint
            self._peer_keys[node_id] = key
        for node_id in list(self.peers):
            if node_id not in seen:
                self._hang_up(node_id)

    def _on_monitor(self, messages: list[list[bytes]]) -> None:
        for message in messages:
            event = parse_monitor_message(message)
            raw = event["endpoint"]
            endpoint = raw.decode() if isinstance(raw, bytes) else str(raw)
            if event["event"] & HANDSHAKE_FAILED:
                if endpoint not in self._failed_handshakes:
                    self._failed_handshakes.add(endpoint)
                    log.error("Mesh peer at %s: %s", endpoint, describe_handshake_failure(
                        int(event["event"]), int(event["value"])))
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._down.add(endpoint)
                # Calls already sent to it will not be answered: fail them now.
                for request_id, target in list(self._pending_endpoint.items()):
                    future = self._pending.get(request_id)
                    if target == endpoint and future is not None and not future.done():
                        future.set_exception(
                            MeshError("UNREACHABLE", f"connection to {endpoint} dropped"))
            else:
                self._down.discard(endpoint)
                self._failed_handshakes.discard(endpoint)

    def is_down(self, node_id: int) -> bool:
        """Its connection dropped (it is probably dead, whatever the registry says)."""
        endpoint = self.peers.get(node_id)
        return endpoint is not None and endpoint in self._down

    def _hang_up(self, node_id: int) -> None:
        endpoint = self.peers.pop(node_id)
        self._peer_keys.pop(node_id, None)
        self._down.discard(endpoint)
        hang_up(self._socket, endpoint, 0)
        self._redial.hung_up(mesh_routing_id(node_id))

    async def call(self, node_id: int, method: str, body: dict[str, Any],
                   deadline_s: float = DEFAULT_DEADLINE_S) -> dict[str, Any]:
        start = time.perf_counter()
        outcome = "ok"
        try:
            return await self._call(node_id, method, body, deadline_s)
        except MeshError as exc:
            outcome = exc.code.lower()
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            metrics.mesh_calls.labels(method, outcome).inc()
            metrics.mesh_call_duration.labels(method).observe(time.perf_counter() - start)

    async def _call(self, node_id: int, method: str, body: dict[str, Any],
                    deadline_s: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        request_id = next(self._ids).to_bytes(8, "big")
        future: asyncio.Future[tuple[bytes, bytes]] = loop.create_future()
        self._pending[request_id] = future
        self._pending_endpoint[request_id] = self.peers.get(node_id, "")
        message = (mesh_routing_id(node_id), request_id, method.encode(), orjson.dumps(body))
        delays = RetryDelays(cap_s=deadline_s / 4, base_s=UNREACHABLE_RETRY_S)
        try:
            while True:
                if node_id not in self.peers:
                    raise MeshError("UNREACHABLE", f"node {node_id} is not a known peer")
                if self.peers[node_id] in self._down:
                    raise MeshError("UNREACHABLE", f"node {node_id}'s connection is down")
                try:
                    self._socket.send_multipart(message, zmq.NOBLOCK)
                    break
                except zmq.ZMQError as exc:
                    if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                        raise
                # Just dialled, handshake not done yet: retry until the deadline.
                delay = delays.next()
                if loop.time() + delay >= deadline:
                    raise MeshError("UNREACHABLE", f"node {node_id} is not connected")
                await asyncio.sleep(delay)
            self._reader.poke()
            try:
                status, reply = await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise MeshError("TIMEOUT", f"node {node_id} did not answer {method} within "
                                           f"{deadline_s:.2f}s") from None
        finally:
            self._pending.pop(request_id, None)
            self._pending_endpoint.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" warning
        payload: dict[str, Any] = orjson.loads(reply)
        if status != b"ok":
            raise MeshError(str(payload.get("code", "REMOTE_ERROR")),
                            str(payload.get("message", "")))
        return payload

    def _on_messages(self, messages: list[list[bytes]]) -> None:
        for message in messages:
            if len(message) != 4:
                continue
            _, request_id, status, body = message
            future = self._pending.get(request_id)
            if future is not None and not future.done():
                future.set_result((status, body))

    def close(self) -> None:
        self._reader.close()
        self._monitor_reader.close()
        self._socket.disable_monitor()
        self._monitor.close(0)
        self._socket.close(0)
