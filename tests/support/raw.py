"""A bare-bones protocol client for tests that need byte-level control.

The client library hides sequence ids, retries and reconnects; tests of those very rules
(duplicate ids, cached bytes, malformed frames, kicks) need to send exactly what they say
and see exactly what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from protocol import FrameSplitter, MsgType, decode_payload, encode_message, read_header

DEFAULT_TIMEOUT = 10.0


class Frame:
    def __init__(self, raw: bytes) -> None:
        header = read_header(raw)
        self.raw = raw
        self.msg_type = header.msg_type
        self.sequence_id = header.sequence_id
        self.flags = header.flags
        self.payload: dict[str, Any] = decode_payload(raw, header.flags)

    def __repr__(self) -> str:
        return f"Frame({self.msg_type}, seq={self.sequence_id}, {self.payload})"


class FrameExchange:
    """What both raw clients (TCP here, WebSocket in tests.support.raw_ws) do on top of
    sending one message and reading the next frame."""

    async def send_msg(self, msg_type: int, seq: int, payload: Any = None) -> None:
        raise NotImplementedError

    async def next_frame(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        raise NotImplementedError

    async def expect(self, msg_type: int, seq: int | None = None,
                     timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The next frame that is not a push of another type; asserts its type and seq."""
        frame = await self.next_frame(timeout)
        assert frame.msg_type == msg_type, f"expected type {msg_type}, got {frame}"
        if seq is not None:
            assert frame.sequence_id == seq, f"expected seq {seq}, got {frame}"
        return frame

    async def request(self, msg_type: int, seq: int, payload: Any = None,
                      timeout: float = DEFAULT_TIMEOUT) -> Frame:
        await self.send_msg(msg_type, seq, payload)
        return await self.next_frame(timeout)

    async def login(self, user_id: int, seq: int = 1, **extra: Any) -> Frame:
        frame = await self.request(MsgType.LOGIN_REQ, seq, {"user_id": user_id, **extra})
        assert frame.msg_type == MsgType.LOGIN_RES and frame.payload.get("ok"), frame
        return frame


class RawClient(FrameExchange):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.splitter = FrameSplitter(1 << 24)
        self.inbox: list[Frame] = []

    @classmethod
    async def connect(cls, address: tuple[str, int],
                      tls: ssl.SSLContext | None = None) -> RawClient:
        """``tls``: a client context (server name "localhost") for the Gateway's TLS port."""
        if tls is None:
            reader, writer = await asyncio.open_connection(*address)
        else:
            reader, writer = await asyncio.open_connection(*address, ssl=tls,
                                                           server_hostname="localhost")
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_msg(self, msg_type: int, seq: int, payload: Any = None) -> None:
        await self.send(encode_message(msg_type, seq, payload or {}))

    async def next_frame(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        async with asyncio.timeout(timeout):
            while not self.inbox:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("connection closed by the server")
                self.inbox.extend(Frame(raw) for raw in self.splitter.feed(data))
        return self.inbox.pop(0)

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> list[Frame]:
        """Read until the server closes the connection; returns the frames that came first."""
        frames = list(self.inbox)
        self.inbox.clear()
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionResetError:
                    return frames
                if not data:
                    return frames
                frames.extend(Frame(raw) for raw in self.splitter.feed(data))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
