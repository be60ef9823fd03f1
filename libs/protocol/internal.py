"""Gateway <-> GameServer data-plane format (ZeroMQ), pure and I/O-free.

One ZeroMQ message carries a *batch*: many records packed back to back in a single frame,
because per-message ZeroMQ overhead (not bytes) is what limits a Python process. Each record
is ``u8 kind | 16 bytes socket_id | u64 arg | u32 body_length | body``.

Gateway -> GameServer kinds: FRAME (a client frame, ``arg`` = pinned session id or 0), CLOSED
(the client socket is gone, body = reason), HELLO (liveness and identity, body = JSON),
HOLD_ACK (the socket's frames are now held; everything sent before it has been sent).
GameServer -> Gateway kinds: SEND (bytes to write to the socket), PIN (``arg`` = session id,
body = owner node routing id; also releases held frames to that node), CLOSE (write body,
then close the socket), HELLO_ACK (JSON: load and draining), HOLD (hold this socket's frames
until the next PIN: a session handover), REROUTE (body = ``u8 n | n-byte routing id |
frame``: send this frame, and the socket, to that node instead).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from enum import IntEnum
from typing import NamedTuple

RECORD_HEADER = struct.Struct(">B16sQI")
RECORD_HEADER_SIZE = RECORD_HEADER.size
NO_SOCKET = bytes(16)


class Kind(IntEnum):
    FRAME = 1
    CLOSED = 2
    HELLO = 3
    HOLD_ACK = 4
    SEND = 10
    PIN = 11
    CLOSE = 12
    HELLO_ACK = 13
    HOLD = 14
    REROUTE = 15


class Record(NamedTuple):
    kind: int
    socket_id: bytes
    arg: int
    body: bytes


class MalformedBatch(ValueError):
    """A batch that does not parse: a bug or a foreign peer, never client input."""


def pack_record(kind: int, socket_id: bytes, arg: int, body: bytes) -> bytes:
    return RECORD_HEADER.pack(kind, socket_id, arg, len(body)) + body


class BatchWriter:
    """Accumulates records for one peer until the owner flushes them as one ZeroMQ frame."""

    __slots__ = ("_parts", "records")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.records = 0

    def add(self, kind: int, socket_id: bytes, arg: int, body: bytes) -> None:
        self._parts.append(RECORD_HEADER.pack(kind, socket_id, arg, len(body)))
        self._parts.append(body)
        self.records += 1

    def __bool__(self) -> bool:
        return self.records > 0

    def take(self) -> bytes:
        """The batch so far as one bytes object; the writer is empty afterwards."""
        batch = b"".join(self._parts)
        self._parts.clear()
        self.records = 0
        return batch


def iter_records(batch: bytes) -> Iterator[Record]:
    pos = 0
    end = len(batch)
    unpack_from = RECORD_HEADER.unpack_from
    while pos < end:
        if end - pos < RECORD_HEADER_SIZE:
            raise MalformedBatch(f"truncated record header at offset {pos}")
        kind, socket_id, arg, body_length = unpack_from(batch, pos)
        pos += RECORD_HEADER_SIZE
        body_end = pos + body_length
        if body_end > end:
            raise MalformedBatch(f"record body overruns the batch at offset {pos}")
        yield Record(kind, socket_id, arg, batch[pos:body_end])
        pos = body_end


def gateway_routing_id(node_id: int, instance: str) -> bytes:
    """``gw-<node id>-<instance>``: unique even when replicas share GATEWAY_NODE_ID (a
    Kubernetes Deployment), so one Gateway can never take over another's route."""
    return f"gw-{node_id}-{instance}".encode()


def gameserver_routing_id(node_id: int) -> bytes:
    return f"gs-{node_id}".encode()


def format_socket_id(socket_id: bytes) -> str:
    """The Gateway's SocketId as logged everywhere (a UUID)."""
    return str(uuid.UUID(bytes=socket_id)) if len(socket_id) == 16 else socket_id.hex()


def pack_reroute(target: bytes, frame: bytes) -> bytes:
    return bytes((len(target),)) + target + frame


def unpack_reroute(body: bytes) -> tuple[bytes, bytes]:
    """(target routing id, frame); raises MalformedBatch on a bad body."""
    if not body or len(body) < 1 + body[0]:
        raise MalformedBatch("REROUTE body too short")
    n = body[0]
    return body[1:1 + n], body[1 + n:]
