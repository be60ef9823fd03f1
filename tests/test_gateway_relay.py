"""The Gateway's relay in-process: a fake transport, fake GameServer links, an injected clock.

Everything that contains a hostile client (the in-flight window, the rate limit, the login,
idle and handover timeouts, the send-buffer cap) is decided by :class:`gateway.relay.Relay`
on plain attributes, so each rule is pinned down here without sockets, processes or
sleeps; tests/test_e2e_hostile_clients.py proves the same rules against real processes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from gateway.config import GatewayConfig
from gateway.connection import ClientConnection
from gateway.limits import InflightWindow, RateLimiter
from gateway.links import Upstream
from gateway.relay import Relay
from protocol import MsgType, encode_frame, encode_message, read_header
from protocol.frame import FrameSplitter
from protocol.internal import Kind, Record
from tests.support.fake_transport import FakeTransport as SharedFakeTransport

GS = b"gs-1"


class FakeTransport(SharedFakeTransport):
    """The shared fake, reading back the frames written."""

    def frames(self) -> list[tuple[int, int, dict[str, Any]]]:
        """(type, sequence id, payload) of everything written so far."""
        out = []
        for frame in FrameSplitter(1 << 24).feed(bytes(self.written)):
            header = read_header(frame)
            out.append((header.msg_type, header.sequence_id,
                        orjson.loads(frame[12:]) if len(frame) > 12 else {}))
        return out


class FakeLinks:
    """GameServerLinks as the relay sees it: one live GameServer (or none), sends recorded."""

    def __init__(self, live: bool = True) -> None:
        self.live = live
        self.sent: list[tuple[bytes, int, bytes, int, bytes]] = []

    def send(self, routing_id: bytes, kind: int, socket_id: bytes, arg: int,
             body: bytes) -> None:
        self.sent.append((routing_id, kind, socket_id, arg, body))

    def choose(self) -> Upstream | None:
        return Upstream(1, GS, "tcp://gs") if self.live else None

    def takes_new_sessions(self, routing_id: bytes) -> bool:
        return self.live

    def owe_closed(self, routing_id: bytes, sockets: list[tuple[bytes, int]]) -> None:
        pass

    def frames(self) -> list[bytes]:
        return [body for _, kind, _, _, body in self.sent if kind == Kind.FRAME]

    def kinds(self, kind: int) -> list[tuple[bytes, int, bytes, int, bytes]]:
        return [s for s in self.sent if s[1] == kind]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, **settings: Any) -> None:
        defaults: dict[str, Any] = {"client_rate_limit": 0.0}
        self.config = dataclasses.replace(GatewayConfig(), **{**defaults, **settings})
        self.clock = Clock()
        self.relay = Relay(self.config, clock=self.clock)
        self.links = FakeLinks()
        self.relay.links = self.links  # type: ignore[assignment]

    def connect(self) -> tuple[ClientConnection, FakeTransport]:
        conn = ClientConnection(self.relay, self.config.max_frame_bytes)
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport

    def answer(self, conn: ClientConnection, frame: bytes) -> None:
        self.relay.on_records(GS, [Record(Kind.SEND, conn.socket_id, 0, frame)])

    def pin(self, conn: ClientConnection, session_id: int) -> None:
        self.relay.on_records(GS, [Record(Kind.PIN, conn.socket_id, session_id, GS)])


def echo(seq: int, size: int = 0) -> bytes:
    return encode_message(MsgType.ECHO_REQ, seq, {"data": "x" * size} if size else {"a": 1})


def echo_res(seq: int) -> bytes:
    return encode_message(MsgType.ECHO_RES, seq, {"a": 1})


def feed(conn: ClientConnection, *frames: bytes) -> None:
    conn.data_received(b"".join(frames))


# ----------------------------------------------------------------- routing
def test_frames_go_to_the_chosen_gameserver_and_answers_come_back() -> None:
    h = Harness()
    conn, transport = h.connect()
    feed(conn, echo(1), echo(2))
    assert h.links.frames() == [echo(1), echo(2)]
    assert {s[2] for s in h.links.sent} == {conn.socket_id}
    h.answer(conn, echo_res(1))
    assert transport.frames() == [(MsgType.ECHO_RES, 1, {"a": 1})]


def test_without_a_gameserver_each_request_is_answered_server_unavailable() -> None:
    h = Harness(client_max_inflight=2)
    h.links.live = False
    conn, transport = h.connect()
    feed(conn, echo(1), echo(2), echo(3))
    codes = [(t, s, p["code"]) for t, s, p in transport.frames()]
    assert codes == [(MsgType.ERROR_RES, i, "SERVER_UNAVAILABLE") for i in (1, 2, 3)]
    # Answered here, so nothing is in flight and the socket is still read.
    assert conn.window.frames == 0 and transport.reading


# ----------------------------------------------------------------- in-flight window
def test_reading_stops_at_the_frame_cap_and_resumes_when_answers_drain() -> None:
    h = Harness(client_max_inflight=4)
    conn, transport = h.connect()
    feed(conn, *(echo(i) for i in range(1, 8)))
    assert h.links.frames() == [echo(i) for i in range(1, 5)]
    assert not transport.reading
    assert conn.backlog == [echo(5), echo(6), echo(7)]
    h.answer(conn, echo_res(1))
    assert h.links.frames()[-1] == echo(5) and not transport.reading
    for seq in (2, 3):
        h.answer(conn, echo_res(seq))
    assert h.links.frames()[-1] == echo(7)
    assert conn.backlog is None and not transport.reading  # 4 in flight again: still full
    h.answer(conn, echo_res(4))
    assert transport.reading
    assert conn.window.frames == 3


def test_reading_stops_at_the_byte_cap() -> None:
    h = Harness(client_max_inflight=1000, client_max_inflight_bytes=64 * 1024)
    conn, transport = h.connect()
    big = [echo(i, 16 * 1024) for i in range(1, 10)]
    feed(conn, *big)
    assert len(h.links.frames()) == 4  # 4 x ~16 KiB reaches 64 KiB
    assert not transport.reading
    for seq in range(1, 10):
        h.answer(conn, echo_res(seq))
    assert len(h.links.frames()) == 9 and transport.reading
    assert conn.window.frames == 0 and conn.window.bytes == 0


def test_notifications_free_no_slot() -> None:
    h = Harness(client_max_inflight=1)
    conn, transport = h.connect()
    feed(conn, echo(1), echo(2))
    h.answer(conn, encode_message(MsgType.WHISPER_NTF, 0, {"from_user_id": 1, "text": "hi"}))
    assert h.links.frames() == [echo(1)] and not transport.reading
    h.answer(conn, encode_message(MsgType.ERROR_RES, 1, {"code": "BAD_PAYLOAD"}))
    assert h.links.frames() == [echo(1), echo(2)]


def test_frames_read_while_paused_wait_in_order() -> None:
    """uvloop may still deliver a read after pause_reading(): it joins the backlog."""
    h = Harness(client_max_inflight=1)
    conn, _ = h.connect()
    feed(conn, echo(1), echo(2))
    feed(conn, echo(3))
    for seq in (1, 2, 3):
        h.answer(conn, echo_res(seq))
    assert h.links.frames() == [echo(1), echo(2), echo(3)]


def test_window_releases_average_size_and_never_goes_negative() -> None:
    window = InflightWindow(max_frames=10, max_bytes=100)
    window.add(30)
    window.add(10)
    window.answered()
    assert (window.frames, window.bytes) == (1, 20)
    window.answered()
    window.answered()  # an answer the Gateway did not count: harmless
    assert (window.frames, window.bytes) == (0, 0)


# ----------------------------------------------------------------- rate limit
def test_token_bucket_admits_the_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=10, burst=20, now=0.0)
    assert limiter.take(0.0, 25) == 20
    assert limiter.take(0.05, 1) == 0
    assert limiter.take(0.5, 10) == 5
    assert limiter.take(100.0, 100) == 20  # refills up to the burst only


def test_over_limit_episode_ends_after_a_quiet_second() -> None:
    limiter = RateLimiter(rate=1, burst=1, now=0.0)
    limiter.take(0.0, 2)
    assert limiter.over_for(0.5) == 0.5
    limiter.take(0.9, 2)
    assert limiter.over_for(0.9) == pytest.approx(0.9)
    assert limiter.over_for(2.5) == 0.0


def test_frames_over_the_rate_are_answered_rate_limited_with_their_own_sequence_id() -> None:
    h = Harness(client_rate_limit=10, client_rate_burst=3, client_max_inflight=100)
    conn, transport = h.connect()
    feed(conn, *(echo(i) for i in range(1, 6)))
    assert h.links.frames() == [echo(1), echo(2), echo(3)]
    errors = [(s, p["code"]) for t, s, p in transport.frames() if t == MsgType.ERROR_RES]
    assert errors == [(4, "RATE_LIMITED"), (5, "RATE_LIMITED")]
    h.clock.now += 0.1  # one token back
    feed(conn, echo(4))
    assert h.links.frames()[-1] == echo(4)


def test_a_client_over_the_limit_for_rate_limit_kick_s_is_kicked() -> None:
    h = Harness(client_rate_limit=10, client_rate_burst=10, rate_limit_kick_s=5,
                client_max_inflight=1000)
    conn, transport = h.connect()
    feed(conn, *(echo(i) for i in range(1, 12)))  # one over: the episode starts
    start = h.clock.now
    seq = 100
    for step in range(1, 25):  # up to 4.8 s over the limit
        h.clock.now = start + step * 0.2
        feed(conn, *(echo(seq + i) for i in range(5)))  # 25/s against 10/s
        seq += 5
        assert not conn.closing
    h.clock.now = start + 5.0
    feed(conn, *(echo(seq + i) for i in range(10)))
    assert conn.closing and transport.closed
    assert transport.frames()[-1] == (MsgType.KICKOUT_NTF, 0, {"reason": "RATE_LIMITED"})
    assert h.links.kinds(Kind.CLOSED)[-1][4] == b"rate_limited"


def test_a_client_that_slows_down_is_not_kicked() -> None:
    h = Harness(client_rate_limit=10, client_rate_burst=10, rate_limit_kick_s=2,
                client_max_inflight=1000)
    conn, _ = h.connect()
    seq = 1
    for _ in range(10):
        feed(conn, *(echo(seq + i) for i in range(15)))  # over the limit ...
        seq += 15
        h.clock.now += 1.5  # ... then quiet for longer than an episode gap
    assert not conn.closing


# ----------------------------------------------------------------- timeouts
def test_no_login_within_login_timeout_is_kicked_even_while_pinging() -> None:
    h = Harness(login_timeout_s=10, idle_timeout_s=30)
    conn, transport = h.connect()
    for seq in range(1, 20):
        h.clock.now += 0.5
        feed(conn, encode_frame(MsgType.PING_REQ, seq))
        h.answer(conn, encode_frame(MsgType.PONG_RES, seq))
        h.relay.sweep(h.clock.now)
    assert not conn.closing
    h.clock.now += 0.5
    h.relay.sweep(h.clock.now)
    assert conn.closing
    assert transport.frames()[-1] == (MsgType.KICKOUT_NTF, 0, {"reason": "LOGIN_TIMEOUT"})


def test_login_cancels_the_login_timeout_and_logout_restarts_it() -> None:
    h = Harness(login_timeout_s=10, idle_timeout_s=1000)
    conn, _ = h.connect()
    h.pin(conn, 77)
    h.clock.now += 50
    h.relay.sweep(h.clock.now)
    assert not conn.closing
    h.pin(conn, 0)  # the session ended, the socket stays
    h.clock.now += 9
    h.relay.sweep(h.clock.now)
    assert not conn.closing
    h.clock.now += 1
    h.relay.sweep(h.clock.now)
    assert conn.closing


def test_login_timeout_zero_switches_it_off() -> None:
    h = Harness(login_timeout_s=0, idle_timeout_s=1000)
    conn, _ = h.connect()
    h.clock.now += 500
    h.relay.sweep(h.clock.now)
    assert not conn.closing


def test_idle_timeout_counts_whole_frames_only() -> None:
    h = Harness(idle_timeout_s=10, login_timeout_s=0)
    conn, transport = h.connect()
    frame = echo(1)
    h.relay.sweep(h.clock.now)  # activity since connect noted
    for i in range(0, 11):  # one byte every second: never a whole frame
        conn.data_received(frame[i:i + 1])
        h.clock.now += 1
        h.relay.sweep(h.clock.now)
    assert conn.closing
    assert transport.frames()[-1] == (MsgType.KICKOUT_NTF, 0, {"reason": "IDLE_TIMEOUT"})


def test_an_unfinished_handover_is_closed_after_the_handover_timeout() -> None:
    h = Harness(handover_timeout_s=3, login_timeout_s=0)
    conn, transport = h.connect()
    h.relay.on_records(GS, [Record(Kind.HOLD, conn.socket_id, 5, b"")])
    feed(conn, echo(1))
    assert h.links.frames() == [] and conn.held == [echo(1)]
    h.clock.now += 3.5
    h.relay.sweep(h.clock.now)
    assert transport.frames()[-1] == (MsgType.KICKOUT_NTF, 0, {"reason": "SERVER_SHUTDOWN"})


# ----------------------------------------------------------------- slow readers
def test_a_client_not_reading_its_answers_is_disconnected() -> None:
    h = Harness(max_send_buffer_bytes=8192)
    conn, transport = h.connect()
    feed(conn, echo(1))
    transport.buffered = 9000
    conn.pause_writing()
    assert transport.aborted
    assert h.links.kinds(Kind.CLOSED)[-1][4] == b"backpressure"
