"""``/metrics``, ``/healthz``, ``/readyz`` (and optional ``/admin/...``) on the metrics port.

A few dozen lines of HTTP/1.0 instead of a web framework: probes and Prometheus only ever
send a bare GET, and a separate thread (prometheus-client's own server) could not see the
service's readiness without locking.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

#: Returns (ready, human-readable detail).
ReadinessCheck = Callable[[], tuple[bool, str]]
MAX_REQUEST_BYTES = 8192
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class AdminRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]


#: Handles everything under /admin/: returns (status, body).
AdminHandler = Callable[[AdminRequest], Awaitable[tuple[int, bytes]]]


class _OpsHttpProtocol(asyncio.Protocol):
    def __init__(self, readiness: ReadinessCheck, registry: CollectorRegistry,
                 admin: AdminHandler | None) -> None:
        self._readiness = readiness
        self._registry = registry
        self._admin = admin
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._handled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._handled:
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            end = self._buffer.find(b"\n\n")
        if end < 0:
            if len(self._buffer) > MAX_REQUEST_BYTES:
                self._respond(431, b"request too large\n")
            return
        self._handled = True
        lines = bytes(self._buffer[:end]).decode("latin-1").splitlines()
        parts = lines[0].split() if lines else []
        if len(parts) < 2:
            self._respond(400, b"bad request line\n")
            return
        method, target = parts[0], parts[1]
        path, _, query = target.partition("?")
        if path.startswith("/admin/") and self._admin is not None:
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            request = AdminRequest(method, path, query, headers)
            asyncio.get_running_loop().create_task(self._serve_admin(self._admin, request))
            return
        if method not in ("GET", "HEAD"):
            self._respond(405, b"only GET\n")
        elif path == "/metrics":
            self._respond(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._respond(200, b"ok\n")
        elif path == "/readyz":
            ready, detail = self._readiness()
            self._respond(200 if ready else 503, (detail + "\n").encode())
        else:
            self._respond(404, b"not found; try /metrics, /healthz, /readyz\n")

    async def _serve_admin(self, admin: AdminHandler, request: AdminRequest) -> None:
        try:
            status, body = await admin(request)
        except Exception:
            log.exception("Admin request %s %s failed", request.method, request.path)
            status, body = 500, b"internal error\n"
        self._respond(status, body)

    def _respond(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        head = (
            f"HTTP/1.0 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        transport.write(head + body)
        transport.close()


async def start_ops_server(
    host: str,
    port: int,
    readiness: ReadinessCheck,
    registry: CollectorRegistry = REGISTRY,
    admin: AdminHandler | None = None,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _OpsHttpProtocol(readiness, registry, admin), host, port, reuse_address=True
    )
