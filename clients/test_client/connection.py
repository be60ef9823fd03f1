"""One TCP connection of a :class:`~test_client.client.GameClient`, as an ``asyncio.Protocol``.

A client outlives its connections (it resumes its session on a new one after a drop), so the
per-socket state lives here: the frame splitter, the kick reason the server announced on this
socket, the future that tells when the socket is gone, and the one outstanding handshake
(``RECONNECT_REQ``) that must be answered before the client adopts the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from protocol import DEFAULT_MAX_FRAME_BYTES, FrameSplitter
from test_client.errors import ConnectionLost

log = logging.getLogger(__name__)

Endpoint = tuple[str, int]
#: A decoded message: ``(msg_type, payload)``.
Response = tuple[int, dict[str, Any]]


class Connection(asyncio.Protocol):
    """Splits the byte stream into frames and hands each complete frame to ``on_frame``.

    ``on_lost`` runs exactly once, when the transport is gone, whoever closed it.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        on_frame: Callable[[Connection, bytes], None],
        on_lost: Callable[[Connection, Exception | None], None],
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.splitter = FrameSplitter(max_frame_bytes)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Reason of the ``KICKOUT_NTF`` received on this socket, if any.
        self.kick_reason: str | None = None
        #: Waiter for the answer to a handshake (sequence id 0) sent on this socket.
        self.handshake: asyncio.Future[Response] | None = None
        #: Set when the client dropped this connection on purpose: its loss is no news.
        self.retired = False
        self._on_frame = on_frame
        self._on_lost = on_lost

    def __repr__(self) -> str:
        host, port = self.endpoint
        return f"<Connection {host}:{port} alive={self.alive}>"

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    # asyncio.Protocol callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        for frame in self.splitter.feed(data):
            self._on_frame(self, frame)
        if self.splitter.error is not None:
            # The stream cannot be resynchronised after a framing error: drop the socket.
            log.warning("%r: server broke framing: %s", self, self.splitter.error)
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close our side too: the protocol has no half-closed state

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed.done():
            return
        self.closed.set_result(None)
        if self.handshake is not None and not self.handshake.done():
            self.handshake.set_exception(
                ConnectionLost("connection closed during handshake", self.kick_reason)
            )
        self._on_lost(self, exc)

    # actions ----------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray) -> bool:
        """Send if the socket is still usable; ``False`` means the bytes were dropped.

        Dropped bytes are not lost work: a pending request is re-sent after a resume or
        failed when the connection's loss is reported.
        """
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    def abort(self) -> None:
        """Close immediately, discarding unsent data (``connection_lost`` follows)."""
        if self.transport is not None:
            self.transport.abort()

    def retire(self) -> None:
        """Drop the connection on purpose, so its loss triggers no reconnect."""
        self.retired = True
        self.abort()

    async def handshake_request(self, frame: bytes, limit_s: float) -> Response:
        """Send one sequence-id-0 request and wait for its answer on this very socket."""
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.handshake = waiter
        try:
            if not self.write(frame):
                raise ConnectionLost("connection closed before the handshake", self.kick_reason)
            return await asyncio.wait_for(waiter, limit_s)
        finally:
            self.handshake = None
