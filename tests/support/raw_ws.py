"""The bare-bones protocol client of tests.support.raw, over WebSocket: one v1 frame per
binary message, sent and received exactly as given. Built on the ``websockets`` package's
asyncio client (a well-kept client, so the server is tested against someone else's RFC 6455).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from protocol import encode_message
from tests.support.raw import DEFAULT_TIMEOUT, Frame, FrameExchange


class WsRawClient(FrameExchange):
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> WsRawClient:
        """``kwargs`` go to ``websockets.asyncio.client.connect`` (``origin=``, ...)."""
        return cls(await connect(url, max_size=None, open_timeout=DEFAULT_TIMEOUT, **kwargs))

    async def send(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def send_msg(self, msg_type: int, seq: int, payload: Any = None) -> None:
        await self.send(encode_message(msg_type, seq, payload or {}))

    async def next_frame(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        async with asyncio.timeout(timeout):
            message = await self.ws.recv()
        assert isinstance(message, bytes), f"a text message from the server: {message!r}"
        return Frame(message)

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[list[Frame], int]:
        """Read until the server closes; the frames that came first and the close code
        (1006 when the connection ended without a close frame)."""
        frames: list[Frame] = []
        async with asyncio.timeout(timeout):
            try:
                while True:
                    message = await self.ws.recv()
                    assert isinstance(message, bytes), message
                    frames.append(Frame(message))
            except ConnectionClosed as closed:
                received = closed.rcvd
                return frames, received.code if received is not None else 1006

    async def close(self) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            await self.ws.close()
