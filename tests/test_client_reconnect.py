"""Session resumption of GameClient against scripted in-process Gateways.

The echo server keeps no sessions, so these tests use a tiny fake: a "session" shared by any
number of fake Gateways (as Redis is shared by real ones), with an idempotent response cache,
and hooks that drop, kick or stop a Gateway at a chosen request. Everything is awaited on
conditions (frames received), never on sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Self, cast

import pytest

from protocol import (
    ErrorCode,
    FrameSplitter,
    KickReason,
    MsgType,
    decode_payload,
    encode_message,
    read_header,
)
from test_client import ConnectionLost, GameClient, Push, ReconnectFailed, RequestTimeout


class Received(NamedTuple):
    gateway: FakeGateway
    msg_type: int
    seq: int
    payload: dict[str, Any]


#: A hook sees each ECHO_REQ first; returning True means "handled, do not answer normally".
Hook = Callable[["FakeConn", int, dict[str, Any]], bool]


class FakeSession:
    """One session as the GameServer side would keep it: key rotation, idempotency, cache."""

    def __init__(self, last_seq: int = 0) -> None:
        self.key_number = 1
        self.last_seq = last_seq
        self.cache: dict[int, bytes] = {}
        self.processed: list[Any] = []
        self.hook: Hook | None = None
        self.compress = False

    @property
    def key(self) -> str:
        return f"k{self.key_number}"

    def ok_result(self) -> dict[str, Any]:
        return {
            "ok": True,
            "result": "LOGIN_SUCCESS",
            "user_id": 5,
            "session_id": 77,
            "reconnect_key": self.key,
            "node_id": 3,
            "last_sequence_id": self.last_seq,
            "state": {"x": 0, "y": 0, "moves": 0},
        }

    def handle(self, conn: FakeConn, msg_type: int, seq: int, payload: dict[str, Any]) -> None:
        if msg_type == MsgType.LOGIN_REQ:
            conn.send(MsgType.LOGIN_RES, seq, self.ok_result())
        elif msg_type == MsgType.RECONNECT_REQ:
            if payload.get("session_id") != 77 or payload.get("reconnect_key") != self.key:
                refusal = {"ok": False, "error": ErrorCode.INVALID_SESSION, "message": "no"}
                conn.send(MsgType.RECONNECT_RES, seq, refusal)
                return
            self.key_number += 1
            conn.send(MsgType.RECONNECT_RES, seq, self.ok_result())
        elif msg_type == MsgType.ECHO_REQ:
            if self.hook is not None and self.hook(conn, seq, payload):
                return
            conn.write(self.process_echo(seq, payload))

    def process_echo(self, seq: int, payload: dict[str, Any]) -> bytes:
        """Idempotent processing: a repeated sequence id gets the cached response."""
        if 0 < seq <= self.last_seq:
            return self.cache[seq]
        self.processed.append(payload.get("n"))
        response = encode_message(
            MsgType.ECHO_RES, seq, payload, compress_above=0 if self.compress else None
        )
        if seq > 0:
            self.last_seq = seq
            self.cache[seq] = response
        return response


class FakeConn(asyncio.Protocol):
    def __init__(self, gateway: FakeGateway) -> None:
        self.gateway = gateway
        self.splitter = FrameSplitter()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.gateway.conns.append(self)

    def data_received(self, data: bytes) -> None:
        for frame in self.splitter.feed(data):
            if self.transport is None or self.transport.is_closing():
                return  # a dropped socket reads nothing more
            header = read_header(frame)
            payload = decode_payload(frame, header.flags)
            self.gateway.record(
                Received(self.gateway, header.msg_type, header.sequence_id, payload)
            )
            self.gateway.session.handle(self, header.msg_type, header.sequence_id, payload)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def send(self, msg_type: int, seq: int, payload: dict[str, Any]) -> None:
        self.write(encode_message(msg_type, seq, payload))

    def kick(self, reason: str, close: bool = True) -> None:
        self.send(MsgType.KICKOUT_NTF, 0, {"reason": reason})
        if close and self.transport is not None:
            self.transport.close()

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class FakeGateway:
    """A listening socket in this process; every received frame is logged in ``log``."""

    def __init__(self, session: FakeSession, log: list[Received], changed: asyncio.Event) -> None:
        self.session = session
        self.log = log
        self.changed = changed
        self.conns: list[FakeConn] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Self:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: FakeConn(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def endpoint(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def record(self, item: Received) -> None:
        self.log.append(item)
        self.changed.set()

    def stop_now(self) -> None:
        """Stop listening and drop every client, synchronously (usable inside a hook)."""
        if self.server is not None:
            self.server.close()
        for conn in self.conns:
            conn.drop()


@dataclass
class World:
    session: FakeSession
    log: list[Received]
    changed: asyncio.Event
    gateways: list[FakeGateway]

    async def add_gateway(self) -> FakeGateway:
        gateway = await FakeGateway(self.session, self.log, self.changed).start()
        self.gateways.append(gateway)
        return gateway

    def frames(self, msg_type: int) -> list[Received]:
        return [r for r in self.log if r.msg_type == msg_type]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def world() -> Any:
    state = World(FakeSession(), [], asyncio.Event(), [])
    await state.add_gateway()
    yield state
    for gateway in state.gateways:
        gateway.stop_now()


def drop_once_on(n: int, *, process: bool) -> Hook:
    """A hook that drops the socket at the first ECHO_REQ carrying ``{"n": n}``."""
    fired = False

    def hook(conn: FakeConn, seq: int, payload: dict[str, Any]) -> bool:
        nonlocal fired
        if fired or payload.get("n") != n:
            return False
        fired = True
        if process:  # the server did the work, only the answer is lost
            conn.gateway.session.process_echo(seq, payload)
        conn.drop()
        return True

    return hook


async def test_drop_after_processing_is_answered_once_from_the_cache(world: World) -> None:
    gateway = world.gateways[0]
    world.session.hook = drop_once_on(2, process=True)
    async with GameClient(*gateway.endpoint) as client:
        await client.login(5)
        assert client.reconnect_key == "k1"
        assert await client.echo({"n": 1}) == {"n": 1}
        assert await client.echo({"n": 2}) == {"n": 2}
        assert world.session.processed == [1, 2]  # exactly once, although sent twice
        sent = [r.seq for r in world.frames(MsgType.ECHO_REQ) if r.payload["n"] == 2]
        assert len(sent) == 2 and sent[0] == sent[1]
        assert client.reconnect_count == 1
        assert client.reconnect_key == "k2"
        reconnect = world.frames(MsgType.RECONNECT_REQ)[0]
        assert reconnect.seq == 0
        assert reconnect.payload["reconnect_key"] == "k1"
        assert reconnect.payload["session_id"] == 77
        await client.echo({"n": 3})
        assert world.frames(MsgType.ECHO_REQ)[-1].seq == sent[0] + 1


async def test_all_unanswered_requests_are_resent_in_order(world: World) -> None:
    world.session.hook = drop_once_on(3, process=False)
    async with GameClient(*world.gateways[0].endpoint) as client:
        await client.login(5)
        answers = await asyncio.gather(*(client.echo({"n": n}) for n in range(1, 7)))
        assert answers == [{"n": n} for n in range(1, 7)]
        assert sorted(world.session.processed) == [1, 2, 3, 4, 5, 6]
        reconnect_at = world.log.index(world.frames(MsgType.RECONNECT_REQ)[0])
        resent = [r.seq for r in world.log[reconnect_at + 1 :] if r.msg_type == MsgType.ECHO_REQ]
        assert resent == sorted(resent)
        assert len(resent) >= 4  # 3..6 were unanswered when the socket dropped


async def test_failover_resumes_through_another_gateway(world: World) -> None:
    first = world.gateways[0]
    second = await world.add_gateway()

    def stop_first(conn: FakeConn, seq: int, payload: dict[str, Any]) -> bool:
        if conn.gateway is first and payload.get("n") == 2:
            first.stop_now()
            return True
        return False

    world.session.hook = stop_first
    async with GameClient(*first.endpoint, gateways=[second.endpoint]) as client:
        await client.login(5)
        assert await client.echo({"n": 2}) == {"n": 2}
        assert client.endpoint == second.endpoint
        assert [r.gateway for r in world.frames(MsgType.RECONNECT_REQ)] == [second]


async def test_duplicate_login_kick_ends_the_session(world: World) -> None:
    pushes: list[Push] = []

    def kick(conn: FakeConn, seq: int, payload: dict[str, Any]) -> bool:
        conn.kick(KickReason.DUPLICATE_LOGIN)
        return True

    async with GameClient(*world.gateways[0].endpoint, on_push=pushes.append) as client:
        await client.login(5)
        world.session.hook = kick
        with pytest.raises(ConnectionLost) as caught:
            await client.echo({"n": 1})
        assert caught.value.reason == KickReason.DUPLICATE_LOGIN
        assert client.kicked_reason == KickReason.DUPLICATE_LOGIN
        assert not client.logged_in and not client.resuming
        assert client.pushes.get_nowait() == Push(
            MsgType.KICKOUT_NTF, {"reason": KickReason.DUPLICATE_LOGIN}
        )
        assert pushes == [Push(MsgType.KICKOUT_NTF, {"reason": KickReason.DUPLICATE_LOGIN})]
        assert world.frames(MsgType.RECONNECT_REQ) == []


async def test_server_shutdown_kick_resumes_at_once(world: World) -> None:
    def kick_once(conn: FakeConn, seq: int, payload: dict[str, Any]) -> bool:
        if world.frames(MsgType.RECONNECT_REQ):
            return False
        conn.kick(KickReason.SERVER_SHUTDOWN, close=False)  # the client must not wait
        return True

    world.session.hook = kick_once
    async with GameClient(*world.gateways[0].endpoint) as client:
        await client.login(5)
        assert await client.echo({"n": 1}) == {"n": 1}
        assert client.kicked_reason == KickReason.SERVER_SHUTDOWN  # remembered after resuming
        assert client.reconnect_count == 1
        assert client.pushes.get_nowait().payload == {"reason": KickReason.SERVER_SHUTDOWN}


async def test_refused_resume_fails_the_waiting_requests(world: World) -> None:
    def revoke_and_drop(conn: FakeConn, seq: int, payload: dict[str, Any]) -> bool:
        world.session.key_number = 99  # the stored key no longer matches
        conn.drop()
        return True

    world.session.hook = revoke_and_drop
    async with GameClient(*world.gateways[0].endpoint) as client:
        await client.login(5)
        with pytest.raises(ReconnectFailed, match="INVALID_SESSION"):
            await client.echo({"n": 1})
        assert not client.logged_in


async def test_resume_gives_up_within_its_time_budget(world: World) -> None:
    gateway = world.gateways[0]

    def stop(conn: FakeConn, seq: int, payload: dict[str, Any]) -> bool:
        gateway.stop_now()
        return True

    world.session.hook = stop
    async with GameClient(*gateway.endpoint, reconnect_timeout=0.3) as client:
        await client.login(5)
        async with asyncio.timeout(5):
            with pytest.raises(ReconnectFailed):
                await client.echo({"n": 1})
        assert client.pending_count == 0


async def test_close_while_resuming_fails_pending_requests(world: World) -> None:
    gateway = world.gateways[0]

    def stop(conn: FakeConn, seq: int, payload: dict[str, Any]) -> bool:
        gateway.stop_now()
        return True

    world.session.hook = stop
    reconnecting = asyncio.Event()
    client = GameClient(
        *gateway.endpoint,
        on_event=lambda name, detail: reconnecting.set() if name == "reconnecting" else None,
    )
    await client.login(5)
    pending = asyncio.create_task(client.echo({"n": 1}))
    async with asyncio.timeout(5):
        await reconnecting.wait()
    assert client.resuming
    await client.close()
    with pytest.raises(ConnectionLost):
        await pending
    assert not client.resuming


async def test_manual_reconnect_rotates_keys_and_keeps_sequence_ids(world: World) -> None:
    world.session.last_seq = 40
    async with GameClient(*world.gateways[0].endpoint) as client:
        await client.login(5)
        assert client.peek_sequence_id() == 41  # continue above the server's last id
        first = await client.reconnect()
        assert first["reconnect_key"] == "k2" == client.reconnect_key
        await client.reconnect()
        assert client.reconnect_key == "k3"
        used = [r.payload["reconnect_key"] for r in world.frames(MsgType.RECONNECT_REQ)]
        assert used == ["k1", "k2"]
        await client.echo({"n": 1})
        assert world.frames(MsgType.ECHO_REQ)[-1].seq == 41
        assert client.reconnect_count == 2


async def test_another_client_can_resume_a_session_by_key(world: World) -> None:
    endpoint = world.gateways[0].endpoint
    async with GameClient(*endpoint) as first:
        await first.login(5)
        async with GameClient(*endpoint) as second:
            result = await second.reconnect(77, "k1")
            assert result["ok"] is True
            assert second.session_id == 77 and second.logged_in
            assert await second.echo({"n": 1}) == {"n": 1}


async def test_request_timeout_then_the_client_goes_on(world: World) -> None:
    world.session.hook = lambda conn, seq, payload: payload.get("n") == 1  # never answered
    async with GameClient(*world.gateways[0].endpoint, request_timeout=0.2) as client:
        await client.login(5)
        with pytest.raises(RequestTimeout):
            await client.echo({"n": 1})
        assert client.pending_count == 0
        assert await client.echo({"n": 2}) == {"n": 2}


async def test_lz4_answers_and_whisper_pushes_are_decoded(world: World) -> None:
    world.session.compress = True
    big = {"n": 1, "text": "abc" * 2000}

    def whisper_first(conn: FakeConn, seq: int, payload: dict[str, Any]) -> bool:
        conn.send(MsgType.WHISPER_NTF, 0, {"from_user_id": 9, "text": "psst"})
        return False

    world.session.hook = whisper_first
    async with GameClient(*world.gateways[0].endpoint) as client:
        await client.login(5)
        assert world.frames(MsgType.LOGIN_REQ)[0].payload["accept_compression"] == ["lz4"]
        assert await client.echo(big) == big
        async with asyncio.timeout(5):
            push = await client.pushes.get()
        assert push == Push(MsgType.WHISPER_NTF, {"from_user_id": 9, "text": "psst"})
