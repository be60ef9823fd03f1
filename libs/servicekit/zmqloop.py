"""Drive a non-blocking pyzmq socket from the asyncio event loop without zmq.asyncio.

``zmq.asyncio`` costs a future and an await per message (~10-17k msgs/s here); watching the
socket's file descriptor and draining every queued message per wake-up costs nothing per
message. ZMQ_FD is edge-triggered and also changes state when *we* send, so after sends the
owner calls :meth:`ZmqReader.poke` to catch input that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import zmq

log = logging.getLogger(__name__)

#: How many messages one wake-up handles before yielding to the loop (fairness to sockets).
DRAIN_LIMIT = 512


class ZmqReader:
    def __init__(
        self,
        socket: zmq.Socket[bytes],
        on_messages: Callable[[list[list[bytes]]], None],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._socket = socket
        self._on_messages = on_messages
        self._loop = loop or asyncio.get_running_loop()
        self._fd: int = cast(int, socket.getsockopt(zmq.FD))
        self._scheduled = False
        self._closed = False
        self._loop.add_reader(self._fd, self._drain)
        self.poke()

    def poke(self) -> None:
        """Schedule a drain if ZeroMQ holds input (call after sending on the socket)."""
        if self._scheduled or self._closed:
            return
        self._scheduled = True
        self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        socket = self._socket
        batch: list[list[bytes]] = []
        try:
            while len(batch) < DRAIN_LIMIT:
                if not cast(int, socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    break
                batch.append(socket.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:
            log.error("ZeroMQ receive failed: %s", exc)
        if batch:
            self._on_messages(batch)
            # More may be queued (limit reached, or arrived during handling): go round again.
            self.poke()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._fd)
