"""The transport a client connection protocol writes to when a layer sits between it and the
TCP transport: TLS (tls_connection), WebSocket (ws_connection), or both (wss).

Writes, closes and aborts go to the layer, which encodes and then writes below; flow
control, buffering and addresses are the transport below's own, because a layer passes its
output down at once, so the write buffer below is the whole backlog. Hand-rolled because
asyncio has no public way to stack a protocol on a protocol (its own TLS layer is private to
the event loop), and both layers need the same eight methods.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast


class Layer(Protocol):
    """What a layer offers the transport above it."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    @property
    def closing(self) -> bool: ...


class LayeredTransport:
    """Writes to ``layer``; everything else is ``below``'s."""

    def __init__(self, layer: Layer, below: asyncio.Transport) -> None:
        self._layer = layer
        self._below = below
        self.write = layer.write
        self.close = layer.close
        self.abort = layer.abort
        self.pause_reading = below.pause_reading
        self.resume_reading = below.resume_reading
        self.is_reading = below.is_reading
        self.set_write_buffer_limits = below.set_write_buffer_limits
        self.get_write_buffer_size = below.get_write_buffer_size
        self.get_write_buffer_limits = below.get_write_buffer_limits

    def is_closing(self) -> bool:
        return self._layer.closing or self._below.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._below.get_extra_info(name, default)


class LayerProtocol(asyncio.Protocol):
    """What the two layers share: the transport below, the connection protocol above once
    the layer's handshake is done, a handshake timer, and passing flow control up."""

    def __init__(self) -> None:
        self._below: asyncio.Transport | None = None
        #: The connection protocol, once the layer's handshake succeeded.
        self._app: asyncio.Protocol | None = None
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None

    def _start_timer(self, transport: asyncio.BaseTransport, timeout_s: float) -> None:
        """Take the transport below (uvloop's is not an asyncio.Transport subclass) and
        start the handshake's deadline."""
        self._below = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._timed_out)

    def _timed_out(self) -> None:
        raise NotImplementedError

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def closing(self) -> bool:
        return self._closing

    def abort(self) -> None:
        self._closing = True
        self._cancel_timer()
        if self._below is not None:
            self._below.abort()

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()
