"""The Gateway's WebSocket shell (gateway.ws_connection) in-process, with a fake transport
below it, a recording protocol above it, and the ``websockets`` package's own sans-I/O
``ClientProtocol`` playing the client: the upgrade, one frame per message in and out,
fragmented messages, each refusal with its close code, and the close handshake. (The tests
are ``async`` only for the event loop the shell's upgrade timer lives on.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from gateway.ws_connection import WsConnection
from protocol import KickReason, MsgType, decode_payload, encode_message, read_header
from tests.support.fake_transport import FakeTransport as SharedFakeTransport
from tests.support.waiting import wait_until_async

MAX_FRAME = 4096


class FakeTransport(SharedFakeTransport):
    """The shared fake, also checking that nothing is written once the shell closed it."""

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        super().write(data)

    def abort(self) -> None:
        super().abort()
        self.closed = True


class Recorder(asyncio.Protocol):
    """The connection protocol above the shell: what reaches the Gateway's relay."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.received: list[bytes] = []
        self.read = 0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        raise AssertionError("a message transport hands whole frames over")

    def frames_received(self, frames: list[bytes], size: int) -> None:
        self.read += size
        self.received.extend(frames)
        assert self.read >= sum(map(len, self.received))  # every byte read is counted

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class Pair:
    """A shell on a fake transport and a client speaking to it through plain bytes."""

    def __init__(self, origins: list[str] | None = None, origin: str | None = None,
                 path: str = "/", timeout_s: float = 30.0) -> None:
        self.app = Recorder()
        self.below = FakeTransport()
        self.shell = WsConnection(lambda: self.app, MAX_FRAME, origins or [], timeout_s)
        self.shell.connection_made(self.below)  # type: ignore[arg-type]
        self.client = ClientProtocol(parse_uri(f"ws://gateway.test{path}"),
                                     origin=origin)  # type: ignore[arg-type]
        self.client.send_request(self.client.connect())
        #: The client's events during the upgrade (its Response).
        self.upgrade_events = self.pump()

    def pump(self) -> list[Any]:
        """Carry bytes both ways until quiet; the client's events."""
        events: list[Any] = []
        for _ in range(10):
            to_server = b"".join(self.client.data_to_send())
            if to_server:
                self.shell.data_received(to_server)
            to_client = self.below.take()
            if to_client:
                self.client.receive_data(to_client)
            events += self.client.events_received()
            if not to_server and not to_client:
                break
        return events

    def messages(self, events: list[Any]) -> list[bytes]:
        return [bytes(e.data) for e in events if isinstance(e, Frame)
                and e.opcode is Opcode.BINARY]

    def close_code(self, events: list[Any]) -> int | None:
        for event in events:
            if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                return Close.parse(event.data).code
        return None


async def test_a_frame_in_each_binary_message_both_ways() -> None:
    pair = Pair()
    assert pair.app.transport is not None  # upgraded
    login = encode_message(MsgType.LOGIN_REQ, 1, {"user_id": 7})
    echo = encode_message(MsgType.ECHO_REQ, 2, {"text": "x"})
    pair.client.send_binary(login)
    pair.client.send_binary(echo)
    pair.pump()
    assert b"".join(pair.app.received) == login + echo
    answer = encode_message(MsgType.ECHO_RES, 2, {"text": "x"})
    pair.app.transport.write(answer)
    pair.app.transport.write(answer)
    assert pair.messages(pair.pump()) == [answer, answer]


async def test_a_fragmented_message_is_put_back_together() -> None:
    pair = Pair()
    frame = encode_message(MsgType.ECHO_REQ, 2, {"text": "y" * 100})
    pair.client.send_binary(frame[:5], fin=False)
    pair.client.send_continuation(frame[5:50], fin=False)
    pair.pump()
    assert pair.app.received == []
    pair.client.send_continuation(frame[50:], fin=True)
    pair.pump()
    assert pair.app.received == [frame]


@pytest.mark.parametrize(("send", "code"), [
    (lambda c: c.send_text(b'{"hello": 1}'), 1003),
    (lambda c: c.send_binary(encode_message(MsgType.ECHO_REQ, 2, {}) * 2), 1002),
    (lambda c: c.send_binary(encode_message(MsgType.ECHO_REQ, 2, {})[:-1]), 1002),
    (lambda c: c.send_binary(b"\x00\x00"), 1002),
], ids=["text", "two-frames", "cut-frame", "short"])
async def test_a_refused_message_gets_a_kickout_then_its_close_code(send: Any, code: int) -> None:
    pair = Pair()
    send(pair.client)
    events = pair.pump()
    [kickout] = pair.messages(events)
    header = read_header(kickout)
    assert header.msg_type == MsgType.KICKOUT_NTF
    assert decode_payload(kickout, header.flags) == {"reason": KickReason.PROTOCOL_ERROR.value}
    assert pair.close_code(events) == code
    assert pair.app.received == [] and pair.below.closed


async def test_a_message_over_max_frame_bytes_is_refused_1009_unread() -> None:
    pair = Pair()
    pair.client.send_binary(encode_message(MsgType.ECHO_REQ, 2, {"t": "z" * MAX_FRAME}))
    events = pair.pump()
    assert pair.close_code(events) == 1009
    assert pair.messages(events) == [] and pair.app.received == []


@pytest.mark.parametrize(("origins", "origin", "path", "status"), [
    (["https://game.example.com"], "https://evil.example.com", "/", 403),
    (["https://game.example.com"], None, "/", 403),
    ([], None, "/games", 404),
])
async def test_refused_upgrades_get_an_http_error_and_no_connection(
        origins: list[str], origin: str | None, path: str, status: int) -> None:
    pair = Pair(origins, origin, path)
    [response] = [e for e in pair.upgrade_events if isinstance(e, Response)]
    assert response.status_code == status
    assert pair.app.transport is None and pair.below.closed


async def test_ping_is_answered_and_the_close_handshake_is_completed() -> None:
    pair = Pair(["https://game.example.com"], "https://game.example.com")
    pair.client.send_ping(b"hi")
    events = pair.pump()
    assert [bytes(e.data) for e in events if isinstance(e, Frame)
            and e.opcode is Opcode.PONG] == [b"hi"]
    assert pair.app.received == []  # a ping is no frame of the protocol
    # The Gateway closes (a KICKOUT first, then close 1000), the client answers.
    kickout = encode_message(MsgType.KICKOUT_NTF, 0, {"reason": "IDLE_TIMEOUT"})
    pair.app.transport.write(kickout)
    pair.app.transport.close()
    events = pair.pump()
    assert pair.messages(events) == [kickout]
    assert pair.close_code(events) == 1000
    assert pair.below.closed


async def test_an_upgrade_not_finished_in_time_is_dropped() -> None:
    app = Recorder()
    below = FakeTransport()
    shell = WsConnection(lambda: app, MAX_FRAME, [], 0.05)
    shell.connection_made(below)  # type: ignore[arg-type]
    shell.data_received(b"GET / HTTP/1.1\r\nHost: gateway.test\r\n")  # and nothing more
    await wait_until_async(lambda: below.aborted, timeout=5,
                           message="the stalled upgrade was not dropped")
    assert app.transport is None


async def test_what_is_not_an_http_upgrade_is_closed_without_a_connection() -> None:
    for data in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: gateway.test\r\n\r\n"):
        app = Recorder()
        below = FakeTransport()
        shell = WsConnection(lambda: app, MAX_FRAME, [], 30.0)  # noqa: B023 (called at once)
        shell.connection_made(below)  # type: ignore[arg-type]
        shell.data_received(data)
        assert below.closed and app.transport is None, data
        # A plain HTTP GET is told why (426 Upgrade Required); garbage gets nothing.
        assert below.take().startswith(b"HTTP/1.1 426") == data.startswith(b"GET"), data
