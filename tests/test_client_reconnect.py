"""Session resumption of GameClient against real Gateways, GameServers and Redis.

Every test gets a cluster of its own (``system_factory``): real ``python -m gateway`` and
``python -m gameserver`` processes on a private ``redis-server``. Faults are real too: the
client's socket is aborted, Gateways get SIGKILL/SIGTERM/SIGSTOP, the GameServer SIGSTOP.

Exactly-once is checked on the server's side as well as in the answers: the GameServer's
``gameserver_requests_total{msg_type="MOVE_REQ",result="ok"}`` counts MOVEs it applied, while
a re-sent sequence id answered from the response cache only counts in
``gameserver_duplicate_requests_total{outcome="cached"}``.

To have a request surely *in flight* at a fault, the test waits until the client took the
request's sequence id (it writes the frame in the same step), and either freezes the peer
first (SIGSTOP: the frame waits unread in its socket) or stops reading on the client
(``pause_reading``: the server answers, the answer waits unread) before the fault.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from protocol import ErrorCode, KickReason, MsgType
from test_client import (
    ConnectionLost,
    GameClient,
    NotConnected,
    Push,
    ReconnectFailed,
    RequestError,
    RequestTimeout,
)
from tests.support.cluster import Cluster
from tests.support.processes import ServiceProcess
from tests.support.users import new_user_id
from tests.support.waiting import wait_until_async

SystemFactory = Callable[..., Cluster]
ClientFactory = Callable[..., GameClient]

MOVES_APPLIED = 'gameserver_requests_total{msg_type="MOVE_REQ",result="ok"}'
ANSWERED_FROM_CACHE = 'gameserver_duplicate_requests_total{outcome="cached"}'
GATEWAY_BYTES_OUT = 'gateway_bytes_total{direction="out",transport="tcp"}'


@pytest.fixture
async def clients() -> AsyncIterator[ClientFactory]:
    """``clients(host, port, **options) -> GameClient``; every one is closed at teardown."""
    made: list[GameClient] = []

    def make(*args: Any, **kwargs: Any) -> GameClient:
        client = GameClient(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def sample(process: ServiceProcess, name: str) -> float:
    """The value of one sample (name with labels) of a service's /metrics, 0 if absent."""
    text = await asyncio.to_thread(process.metrics_text)
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def wait_sample(process: ServiceProcess, name: str, value: float) -> None:
    async def reached() -> bool:
        return await sample(process, name) == value

    await wait_until_async(reached, timeout=5, message=f"{name} == {value}")


async def send_in_background(
    client: GameClient, *calls: Callable[[], Any]
) -> list[asyncio.Task[Any]]:
    """Start each call as a task and return once every request frame has been written.

    ``GameClient.request`` takes the sequence id and writes the frame in one step, so a
    sequence id taken means the frame is on the socket (or parked, while resuming).
    """
    first = client.peek_sequence_id()
    tasks = [asyncio.create_task(call()) for call in calls]
    await wait_until_async(
        lambda: client.peek_sequence_id() >= first + len(calls), timeout=2, interval=0,
        message="requests written",
    )
    return tasks


def drop(client: GameClient) -> None:
    """Abort the client's socket at once (``Connection.abort`` -> ``transport.abort``)."""
    conn = client.connection
    assert conn is not None and conn.alive
    conn.abort()


def lost(client: GameClient) -> bool:
    """The client has processed the loss of its connection (and decided about resuming).

    ``connected`` turns false a little earlier, as soon as the transport is closing; a
    request made in between is parked and settled by the loss handling like the others.
    """
    return client.connection is None


def moved(x: float, y: float, moves: int) -> dict[str, Any]:
    return {"x": float(x), "y": float(y), "moves": moves}


# --- drops with requests in flight ---------------------------------------------------------


@pytest.mark.parametrize("answer_lost", [False, True], ids=["just-sent", "answer-lost"])
async def test_move_in_flight_at_a_drop_is_resumed_and_applied_exactly_once(
    system_factory: SystemFactory, clients: ClientFactory, answer_lost: bool
) -> None:
    cluster = system_factory()
    gameserver = cluster.gameserver.process
    client = clients(*cluster.gateway_address)
    login = await client.login(new_user_id())
    assert await client.move(1, 1) == moved(1, 1, 1)
    conn = client.connection
    assert conn is not None and conn.transport is not None
    if answer_lost:
        conn.transport.pause_reading()

    [moving] = await send_in_background(client, lambda: client.move(5, 6))
    if answer_lost:  # the GameServer applied it; its answer waits unread on our socket
        await wait_sample(gameserver, MOVES_APPLIED, 2)
    drop(client)

    async with asyncio.timeout(5):
        assert await moving == moved(5, 6, 2)  # the caller gets its answer, once
    assert client.reconnect_count == 1
    assert client.connection is not conn and client.connected
    assert client.session_id == login["session_id"]
    assert await client.move(7, 8) == moved(7, 8, 3)
    assert await sample(gameserver, MOVES_APPLIED) == 3  # applied once each
    if answer_lost:  # the re-sent sequence id was answered from the cache
        assert await sample(gameserver, ANSWERED_FROM_CACHE) == 1


async def test_all_requests_in_flight_at_a_drop_are_answered_once_in_order(
    system_factory: SystemFactory, clients: ClientFactory
) -> None:
    cluster = system_factory()
    gameserver = cluster.gameserver.process
    client = clients(*cluster.gateway_address)
    await client.login(new_user_id())
    conn = client.connection
    assert conn is not None and conn.transport is not None
    conn.transport.pause_reading()

    def move_to(n: int) -> Callable[[], Any]:
        return lambda: client.move(n, -n)

    # 1-3 are applied and answered before the drop (answers unread), 4-6 just written.
    tasks = await send_in_background(client, *(move_to(n) for n in (1, 2, 3)))
    await wait_sample(gameserver, MOVES_APPLIED, 3)
    tasks += await send_in_background(client, *(move_to(n) for n in (4, 5, 6)))
    assert client.pending_count == 6
    drop(client)

    async with asyncio.timeout(5):
        answers = await asyncio.gather(*tasks)
    assert answers == [moved(n, -n, n) for n in range(1, 7)]
    assert client.reconnect_count == 1 and client.pending_count == 0
    assert await sample(gameserver, MOVES_APPLIED) == 6
    assert await sample(gameserver, ANSWERED_FROM_CACHE) >= 3
    assert await client.move(0, 0) == moved(0, 0, 7)


# --- failover and kicks ---------------------------------------------------------------------


async def test_killed_gateway_fails_over_to_the_next_one_with_the_request_in_flight(
    system_factory: SystemFactory, clients: ClientFactory
) -> None:
    cluster = system_factory(gateways=2)
    first, second = cluster.gateways
    client = clients(*first.address, gateways=[second.address])
    login = await client.login(new_user_id())
    assert await client.move(1, 1) == moved(1, 1, 1)

    first.process.send_signal(signal.SIGSTOP)  # the next MOVE stays unread in its socket
    try:
        [moving] = await send_in_background(client, lambda: client.move(2, 2))
        assert first.kill() == -signal.SIGKILL  # a crash, no drain, no KICKOUT_NTF
    finally:
        first.process.send_signal(signal.SIGCONT)

    async with asyncio.timeout(5):
        assert await moving == moved(2, 2, 2)  # re-sent through the second Gateway
    assert client.endpoint == second.address
    assert client.session_id == login["session_id"]
    assert client.reconnect_count == 1 and client.kicked_reason is None
    assert await client.move(3, 3) == moved(3, 3, 3)


async def test_duplicate_login_kick_is_not_resumed(
    system_factory: SystemFactory, clients: ClientFactory
) -> None:
    cluster = system_factory()
    user = new_user_id()
    pushes: list[Push] = []
    first = clients(*cluster.gateway_address, on_push=pushes.append)
    await first.login(user)
    assert await first.move(1, 1) == moved(1, 1, 1)

    second = clients(*cluster.gateway_address)
    await second.login(user)
    await wait_until_async(lambda: first.kicked_reason and lost(first), timeout=5)
    assert first.kicked_reason == KickReason.DUPLICATE_LOGIN
    # Resumption would have started when the loss was processed: it did not.
    assert not first.resuming and first.reconnect_count == 0 and not first.logged_in
    assert pushes == [Push(MsgType.KICKOUT_NTF, {"reason": KickReason.DUPLICATE_LOGIN})]
    assert first.pushes.get_nowait() == pushes[0]
    with pytest.raises(NotConnected):
        await first.move(2, 2)

    assert second.session_id != first.session_id
    assert await second.move(2, 2) == moved(2, 2, 2)  # the player state carried over
    with pytest.raises(RequestError) as caught:  # the old session is gone for good
        await first.reconnect()
    assert caught.value.code == ErrorCode.INVALID_SESSION


async def test_server_shutdown_resumes_through_the_other_gateway_without_waiting(
    system_factory: SystemFactory, clients: ClientFactory
) -> None:
    grace_s = 10.0
    cluster = system_factory(env={"GATEWAY_DRAIN_GRACE_S": str(grace_s)}, gateways=2)
    first, second = cluster.gateways
    client = clients(*first.address, gateways=[second.address])
    login = await client.login(new_user_id())
    assert await client.move(1, 1) == moved(1, 1, 1)

    started = time.monotonic()
    first.process.send_sigterm()
    await wait_until_async(lambda: client.reconnect_count == 1 and client.connected, timeout=5)
    assert time.monotonic() - started < 2.0  # not the drain grace
    assert client.kicked_reason == KickReason.SERVER_SHUTDOWN
    assert client.endpoint == second.address
    assert client.session_id == login["session_id"]
    assert client.pushes.get_nowait() == Push(
        MsgType.KICKOUT_NTF, {"reason": KickReason.SERVER_SHUTDOWN}
    )
    assert await client.move(2, 2) == moved(2, 2, 2)
    # Its last client gone, the draining Gateway exits well before the grace ends too.
    assert await asyncio.to_thread(first.process.wait_exit, grace_s / 2) == 0


# --- refused resumption ---------------------------------------------------------------------


async def test_session_resumed_by_key_elsewhere_is_not_resumed_back(
    system_factory: SystemFactory, clients: ClientFactory
) -> None:
    cluster = system_factory()
    first = clients(*cluster.gateway_address)
    await first.login(new_user_id())
    for n in (1, 2, 3):
        await first.move(n, n)
    last_seq = first.peek_sequence_id() - 1

    second = clients(*cluster.gateway_address)
    result = await second.reconnect(first.session_id, first.reconnect_key)
    assert result["ok"] is True and result["last_sequence_id"] == last_seq
    assert result["state"] == moved(3, 3, 3)
    assert second.session_id == first.session_id and second.logged_in
    assert second.reconnect_key != first.reconnect_key  # rotated: first's key is spent
    assert second.peek_sequence_id() == last_seq + 1  # continues above the server's last id

    await wait_until_async(lambda: first.kicked_reason and lost(first), timeout=5)
    assert first.kicked_reason == KickReason.SESSION_RESUMED_ELSEWHERE
    assert not first.resuming and first.reconnect_count == 0 and not first.logged_in
    with pytest.raises(NotConnected):
        await first.move(9, 9)
    assert await second.move(4, 4) == moved(4, 4, 4)


async def test_automatic_resume_with_a_key_rotated_meanwhile_fails_pending_requests(
    system_factory: SystemFactory, clients: ClientFactory
) -> None:
    cluster = system_factory(gateways=2)
    first_gateway, second_gateway = cluster.gateways
    first = clients(*first_gateway.address, reconnect_timeout=5)
    await first.login(new_user_id())
    assert await first.move(1, 1) == moved(1, 1, 1)
    stale_key = first.reconnect_key
    second = clients(*second_gateway.address)

    # Freeze the first client's Gateway: its MOVE and, later, the kick that the takeover
    # sends it stay there, so the client learns of the takeover only from its RECONNECT.
    first_gateway.process.send_signal(signal.SIGSTOP)
    try:
        [moving] = await send_in_background(first, lambda: first.move(9, 9))
        await second.reconnect(first.session_id, stale_key)
        assert second.reconnect_key != stale_key
        drop(first)
        await wait_until_async(lambda: first.resuming, timeout=2, interval=0)
    finally:
        first_gateway.process.send_signal(signal.SIGCONT)

    async with asyncio.timeout(5):
        with pytest.raises(ReconnectFailed, match="INVALID_SESSION"):
            await moving
    assert not first.resuming and not first.connected and not first.logged_in
    assert first.reconnect_count == 0 and first.pending_count == 0
    assert first.kicked_reason is None  # it never saw the kick
    with pytest.raises(NotConnected):
        await first.move(9, 9)
    # The frozen MOVE came from a socket that no longer owns the session: never applied.
    assert await second.move(2, 2) == moved(2, 2, 2)
    assert await sample(cluster.gameserver.process, MOVES_APPLIED) == 2


# --- giving up ------------------------------------------------------------------------------


async def test_resume_gives_up_within_its_budget_when_every_gateway_is_gone(
    system_factory: SystemFactory, clients: ClientFactory
) -> None:
    budget_s = 1.5
    cluster = system_factory(gateways=2)
    first, second = cluster.gateways
    events: list[tuple[str, float]] = []
    client = clients(
        *first.address, gateways=[second.address], reconnect_timeout=budget_s,
        on_event=lambda name, detail: events.append((name, time.monotonic())),
    )
    await client.login(new_user_id())
    second.kill()  # first the spare, so the client cannot resume there
    first.kill()
    await wait_until_async(lambda: client.resuming, timeout=5)

    async with asyncio.timeout(budget_s + 3):
        with pytest.raises(ReconnectFailed):
            await client.move(1, 1)  # parked while resuming, failed when it gives up
    names = [name for name, _ in events]
    assert names == ["disconnected", "reconnecting", "reconnect_failed"]
    took = events[2][1] - events[0][1]
    assert budget_s - 0.05 <= took <= budget_s + 0.75
    assert not client.resuming and not client.connected and client.pending_count == 0
    with pytest.raises(NotConnected):
        await client.move(2, 2)


@pytest.mark.parametrize("gateway_fault", ["killed", "frozen"])
async def test_close_while_resuming_fails_pending_requests_promptly(
    system_factory: SystemFactory, clients: ClientFactory, gateway_fault: str
) -> None:
    cluster = system_factory()
    gateway = cluster.gateway
    client = clients(*gateway.address, reconnect_timeout=30, request_timeout=30)
    await client.login(new_user_id())
    try:
        if gateway_fault == "killed":  # resuming = retrying a refused endpoint, backing off
            gateway.kill()
        else:  # resuming = connected (the kernel accepts), waiting for RECONNECT_RES
            gateway.process.send_signal(signal.SIGSTOP)
            drop(client)
        await wait_until_async(lambda: client.resuming, timeout=5)
        [moving] = await send_in_background(client, lambda: client.move(1, 1))
        assert client.pending_count == 1

        started = time.monotonic()
        await client.close()
        with pytest.raises(ConnectionLost) as caught:
            async with asyncio.timeout(1):
                await moving
        assert time.monotonic() - started < 1.0
    finally:
        gateway.process.send_signal(signal.SIGCONT)
    assert not isinstance(caught.value, ReconnectFailed)  # closed, not given up
    assert not client.resuming and not client.connected and client.pending_count == 0


# --- explicit resumption, timeouts, payloads -------------------------------------------------


async def test_manual_reconnect_rotates_the_key_and_sequence_ids_continue(
    system_factory: SystemFactory, clients: ClientFactory
) -> None:
    cluster = system_factory()
    client = clients(*cluster.gateway_address)
    login = await client.login(new_user_id())  # sequence id 1
    assert login["last_sequence_id"] == 1
    await client.move(1, 1)  # 2
    await client.move(2, 2)  # 3
    keys = [client.reconnect_key]

    first = await client.reconnect()
    assert first["last_sequence_id"] == 3 and first["state"] == moved(2, 2, 2)
    keys.append(client.reconnect_key)
    second = await client.reconnect()
    assert second["last_sequence_id"] == 3
    keys.append(client.reconnect_key)
    assert len(set(keys)) == 3 and keys[-1] == second["reconnect_key"]
    assert client.session_id == login["session_id"] and client.reconnect_count == 2

    assert client.peek_sequence_id() == 4
    assert await client.move(3, 3) == moved(3, 3, 3)  # id 4: new work, not a duplicate
    third = await client.reconnect()
    assert third["last_sequence_id"] == 4

    # Each key resumes once: a spent one is refused (and does not disturb the session).
    other = clients(*cluster.gateway_address)
    with pytest.raises(RequestError) as caught:
        await other.reconnect(client.session_id, keys[0])
    assert caught.value.code == ErrorCode.INVALID_SESSION
    assert await client.echo({"still": "here"}) == {"still": "here"}
    assert client.reconnect_count == 3 and client.kicked_reason is None


async def test_request_timeout_leaves_the_connection_usable(
    system_factory: SystemFactory, clients: ClientFactory
) -> None:
    cluster = system_factory()
    gameserver = cluster.gameserver.process
    client = clients(*cluster.gateway_address)
    await client.login(new_user_id())
    conn = client.connection

    client.request_timeout = 0.3
    gameserver.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            await client.echo({"n": 1})
        assert 0.29 <= time.monotonic() - started < 2.0
        assert client.pending_count == 0
    finally:
        gameserver.send_signal(signal.SIGCONT)
    client.request_timeout = 5.0

    # The late answer to {"n": 1} is not mistaken for the answer to the next request.
    assert await client.echo({"n": 2}) == {"n": 2}
    assert await client.move(1, 1) == moved(1, 1, 1)
    assert client.connection is conn and client.reconnect_count == 0


async def test_lz4_answers_and_whisper_pushes_arrive_decoded(
    system_factory: SystemFactory, clients: ClientFactory
) -> None:
    cluster = system_factory(env={"COMPRESSION_THRESHOLD_BYTES": "256"})
    gateway = cluster.gateway.process
    lz4_user, plain_user = new_user_id(), new_user_id()
    lz4 = clients(*cluster.gateway_address)
    plain = clients(*cluster.gateway_address, accept_compression=False)
    await lz4.login(lz4_user)
    await plain.login(plain_user)

    big = {"text": "abc" * 2000}
    before = await sample(gateway, GATEWAY_BYTES_OUT)
    assert await lz4.echo(big) == big
    compressed = await sample(gateway, GATEWAY_BYTES_OUT) - before
    assert await plain.echo(big) == big
    uncompressed = await sample(gateway, GATEWAY_BYTES_OUT) - before - compressed
    assert compressed < 1000 and uncompressed > 6000

    text = "psst " * 100  # above the threshold, within the whisper limit
    before = await sample(gateway, GATEWAY_BYTES_OUT)
    assert await plain.whisper(lz4_user, text) == {"delivered": True}
    async with asyncio.timeout(5):
        push = await lz4.pushes.get()
    assert push == Push(MsgType.WHISPER_NTF, {"from_user_id": plain_user, "text": text})
    assert await sample(gateway, GATEWAY_BYTES_OUT) - before < len(text)  # push was LZ4

    assert await lz4.whisper(plain_user, "hi") == {"delivered": True}
    async with asyncio.timeout(5):
        push = await plain.pushes.get()
    assert push == Push(MsgType.WHISPER_NTF, {"from_user_id": lz4_user, "text": "hi"})
