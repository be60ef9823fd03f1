"""``/metrics``, ``/healthz`` and ``/readyz`` on the metrics port, served from the event loop.

A few dozen lines of HTTP/1.0 instead of a web framework: probes and Prometheus only ever
send a bare GET, and a separate thread (prometheus-client's own server) could not see the
service's readiness without locking.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

#: Returns (ready, human-readable detail).
ReadinessCheck = Callable[[], tuple[bool, str]]
MAX_REQUEST_BYTES = 8192


class _OpsHttpProtocol(asyncio.Protocol):
    def __init__(self, readiness: ReadinessCheck, registry: CollectorRegistry) -> None:
        self._readiness = readiness
        self._registry = registry
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        if b"\r\n\r\n" not in self._buffer and b"\n\n" not in self._buffer:
            if len(self._buffer) > MAX_REQUEST_BYTES:
                self._respond(431, b"request too large\n")
            return
        request_line = bytes(self._buffer.split(b"\n", 1)[0]).decode("latin-1").strip()
        parts = request_line.split()
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            self._respond(405, b"only GET\n")
            return
        path = parts[1].split("?", 1)[0]
        if path == "/metrics":
            self._respond(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._respond(200, b"ok\n")
        elif path == "/readyz":
            ready, detail = self._readiness()
            self._respond(200 if ready else 503, (detail + "\n").encode())
        else:
            self._respond(404, b"not found; try /metrics, /healthz, /readyz\n")

    def _respond(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        assert self._transport is not None
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
                  503: "Service Unavailable"}
        head = (
            f"HTTP/1.0 {status} {reason.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self._transport.write(head + body)
        self._transport.close()


async def start_ops_server(
    host: str,
    port: int,
    readiness: ReadinessCheck,
    registry: CollectorRegistry = REGISTRY,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _OpsHttpProtocol(readiness, registry), host, port, reuse_address=True
    )
