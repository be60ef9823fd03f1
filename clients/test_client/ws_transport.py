"""The client side of the Gateway's WebSocket transport, for the load generator: the
``websockets`` package's sans-I/O ``ClientProtocol`` inside a TCP protocol, handing the
session protocol above it a transport whose every ``write`` is one binary message (one v1
frame), and handing it every binary message it receives.

Why not ``websockets``' own asyncio client: the load generator keeps one
``asyncio.Protocol`` per connection on uvloop, with no task, stream or queue each, so that
at 1000 connections it measures the Gateway and not itself (the same reason the Gateway
drives ``ServerProtocol`` the same way, gateway/ws_connection.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri


def ws_url(host: str, port: int, path: str = "/") -> str:
    return f"ws://{host}:{port}{path}"


class WsClientShell(asyncio.Protocol):
    """TCP protocol that upgrades to WebSocket, then carries ``make_protocol()``'s
    protocol: ``connection_made`` once the upgrade succeeded, ``data_received`` once per
    binary message, ``connection_lost`` when the TCP connection ends (or the upgrade
    failed)."""

    def __init__(self, make_protocol: Callable[[], asyncio.Protocol], url: str,
                 max_message_bytes: int | None = None, origin: str | None = None) -> None:
        self._ws = ClientProtocol(parse_uri(url), origin=origin,  # type: ignore[arg-type]
                                  max_size=max_message_bytes)
        self.app = make_protocol()
        self._tcp: asyncio.Transport | None = None
        self._open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        ws = self._ws
        ws.send_request(ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Response):
                if ws.handshake_exc is not None:
                    self.abort()
                    return
                self._open = True
                self.app.connection_made(cast(asyncio.Transport, WsClientTransport(self)))
            elif isinstance(event, Frame) and event.opcode is Opcode.BINARY:
                self.app.data_received(bytes(event.data))
        self._flush()
        if ws.state is State.CLOSED and self._tcp is not None:
            self._tcp.close()

    def eof_received(self) -> bool:
        self._ws.receive_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._tcp = None
        self.app.connection_lost(exc if self._open or exc else ConnectionError(
            "the WebSocket upgrade was refused"))

    def write(self, data: bytes | bytearray) -> None:
        tcp = self._tcp
        ws = self._ws
        if tcp is None or ws.state is not State.OPEN:
            return  # closing: dropped, as on a closing socket
        ws.send_binary(bytes(data))
        tcp.write(b"".join(ws.data_to_send()))

    def _flush(self) -> None:
        chunks = self._ws.data_to_send()
        if chunks and self._tcp is not None:
            self._tcp.writelines(chunks)

    def close(self) -> None:
        if self._tcp is None:
            return
        if self._ws.state is State.OPEN:
            self._ws.send_close()
            self._flush()
        self._tcp.close()

    def abort(self) -> None:
        if self._tcp is not None:
            self._tcp.abort()


class WsClientTransport:
    """What the session protocol writes to: one binary message per ``write``."""

    def __init__(self, shell: WsClientShell) -> None:
        tcp = shell._tcp
        assert tcp is not None
        self._shell = shell
        self._tcp = tcp
        self.write = shell.write
        self.close = shell.close
        self.abort = shell.abort
        self.pause_reading = tcp.pause_reading
        self.resume_reading = tcp.resume_reading

    def is_closing(self) -> bool:
        return self._tcp.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._tcp.get_extra_info(name, default)
