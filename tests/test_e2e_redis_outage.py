"""Redis outages with real processes: bounded SERVER_UNAVAILABLE answers, ECHO/PING kept,
both /readyz unready, recovery without restarts, and no acknowledged MOVE lost to a
``kill -9`` of an AOF (``appendfsync always``) Redis (docs/SESSION_LIFECYCLE.md §7)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from protocol import ErrorCode, MsgType
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.users import new_user_id
from tests.support.waiting import wait_until, wait_until_async

#: Generous: the documented bound is REDIS_REQUEST_TIMEOUT_S (2 s) per request; this only
#: tells "answered" from "left hanging" on a loaded machine.
ANSWER_TIMEOUT_S = 15.0


def _both_readyz(cluster: Cluster) -> tuple[int, int]:
    return cluster.gameserver.process.readyz_status(), cluster.gateway.process.readyz_status()


async def _until_answered(client: RawClient, msg_type: int, seq: int,
                          payload: dict[str, Any]) -> Any:
    """The client's retry loop: same sequence id until something other than
    SERVER_UNAVAILABLE comes back."""
    async def attempt() -> Any:
        frame = await client.request(msg_type, seq, payload, timeout=ANSWER_TIMEOUT_S)
        if frame.msg_type == MsgType.ERROR_RES:
            assert frame.payload["code"] == ErrorCode.SERVER_UNAVAILABLE, frame
            return None
        return frame

    return await wait_until_async(attempt, timeout=30, interval=0.2,
                                  message=f"seq {seq} never succeeded")


async def test_redis_killed_requests_are_answered_and_service_resumes(  # type: ignore[no-untyped-def]
    system_factory, redis_factory
) -> None:
    redis_server = redis_factory(persistent=True)
    cluster: Cluster = system_factory(redis=redis_server)
    client = await RawClient.connect(cluster.gateway_address)
    await client.login(new_user_id())
    assert (await client.request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})).payload["moves"] == 1

    redis_server.kill()
    # A MOVE and an ECHO pipelined behind it: whether the MOVE is refused at once (outage
    # already known) or held and then timed out, both are answered, in order.
    await client.send_msg(MsgType.MOVE_REQ, 3, {"x": 2, "y": 2})
    await client.send_msg(MsgType.ECHO_REQ, 4, {"e": 4})
    unavailable = await client.expect(MsgType.ERROR_RES, 3, timeout=ANSWER_TIMEOUT_S)
    assert unavailable.payload["code"] == ErrorCode.SERVER_UNAVAILABLE
    assert (await client.expect(MsgType.ECHO_RES, 4, timeout=ANSWER_TIMEOUT_S)).payload == {
        "e": 4}
    wait_until(lambda: _both_readyz(cluster) == (503, 503), timeout=15,
               message="a /readyz is still ready without Redis")

    # Needs no Redis: answered.
    assert (await client.request(MsgType.ECHO_REQ, 5, {"e": 5})).payload == {"e": 5}
    pong = await client.request(MsgType.PING_REQ, 6, {"client_time_ms": 1})
    assert pong.msg_type == MsgType.PONG_RES and pong.payload["client_time_ms"] == 1
    # Needs Redis: SERVER_UNAVAILABLE, not a hang.
    move = await client.request(MsgType.MOVE_REQ, 7, {"x": 3, "y": 3}, timeout=ANSWER_TIMEOUT_S)
    assert move.msg_type == MsgType.ERROR_RES
    assert move.payload["code"] == ErrorCode.SERVER_UNAVAILABLE
    logout = await client.request(MsgType.LOGOUT_REQ, 8, {}, timeout=ANSWER_TIMEOUT_S)
    assert logout.msg_type == MsgType.ERROR_RES
    assert logout.payload["code"] == ErrorCode.SERVER_UNAVAILABLE
    newcomer = await RawClient.connect(cluster.gateway_address)
    refused = await newcomer.request(MsgType.LOGIN_REQ, 1, {"user_id": new_user_id()},
                                     timeout=ANSWER_TIMEOUT_S)
    assert refused.payload == {**refused.payload, "ok": False,
                               "error": ErrorCode.SERVER_UNAVAILABLE}

    redis_server.start()
    wait_until(lambda: _both_readyz(cluster) == (200, 200), timeout=20,
               message="services did not become ready again after Redis returned")
    # The MOVE that got SERVER_UNAVAILABLE is applied exactly once, by either documented
    # path (PROTOCOL.md §7.1, §7.3), depending on whether the GameServer already knew
    # Redis was down when it arrived:
    if "learn the outcome" in unavailable.payload["message"]:
        # Held, then answered at REDIS_REQUEST_TIMEOUT_S: its write went on being retried;
        # the retry with the same id gets the real answer once committed.
        retried = await _until_answered(client, MsgType.MOVE_REQ, 3, {"x": 2, "y": 2})
    else:
        # Refused before anything changed (transient, id given back), but ids 4-8 were
        # processed since: the same id is now a duplicate, so it is sent with a new one.
        duplicate = await client.request(MsgType.MOVE_REQ, 3, {"x": 2, "y": 2})
        assert duplicate.payload["code"] == ErrorCode.DUPLICATE_SEQUENCE, duplicate
        retried = await _until_answered(client, MsgType.MOVE_REQ, 10, {"x": 2, "y": 2})
    assert retried.payload == {"x": 2, "y": 2, "moves": 2}
    assert (await client.request(MsgType.MOVE_REQ, 11, {"x": 4, "y": 4})).payload[
        "moves"] == 3
    # The retry of the LOGIN on the same socket works, whatever its first attempt did.
    login = await _until_answered(newcomer, MsgType.LOGIN_REQ, 1, {"user_id": new_user_id()})
    assert login.payload["ok"] is True
    assert (await newcomer.request(MsgType.MOVE_REQ, 2, {"x": 0, "y": 1})).payload[
        "moves"] == 1
    await newcomer.close()
    await client.close()


async def _play(client: RawClient, first_seq: int, stop: asyncio.Event,
                acked: dict[int, int]) -> int:
    """MOVE after MOVE; each sequence id is retried until it gets MOVE_RES (SERVER_UNAVAILABLE
    and timeouts are retried with the same id). Records seq -> moves of each MOVE_RES."""
    seq = first_seq
    while not stop.is_set():
        frame = await client.request(MsgType.MOVE_REQ, seq, {"x": seq, "y": 0},
                                     timeout=ANSWER_TIMEOUT_S)
        if frame.msg_type == MsgType.ERROR_RES:
            assert frame.payload["code"] == ErrorCode.SERVER_UNAVAILABLE, frame
            await asyncio.sleep(0.05)
            continue
        assert frame.msg_type == MsgType.MOVE_RES and frame.sequence_id == seq, frame
        acked[seq] = frame.payload["moves"]
        seq += 1
    return seq


async def test_aof_always_kill_9_loses_no_acknowledged_move(  # type: ignore[no-untyped-def]
    system_factory, redis_factory
) -> None:
    redis_server = redis_factory(persistent=True)  # appendfsync always
    # The players MOVE flat out, far over the per-client rate limit.
    cluster: Cluster = system_factory(redis=redis_server, env={"CLIENT_RATE_LIMIT": "0"})
    clients = [await RawClient.connect(cluster.gateway_address) for _ in range(4)]
    for client in clients:
        await client.login(new_user_id())
    stop = asyncio.Event()
    acked: list[dict[int, int]] = [{} for _ in clients]
    players = [asyncio.create_task(_play(c, 2, stop, a))
               for c, a in zip(clients, acked, strict=True)]

    await wait_until_async(lambda: all(len(a) >= 20 for a in acked), timeout=20)
    redis_server.kill()
    before = [dict(a) for a in acked]
    redis_server.start()
    await wait_until_async(
        lambda: all(len(a) >= len(b) + 20 for a, b in zip(acked, before, strict=True)),
        timeout=30, message="play did not resume after Redis restarted")
    stop.set()
    next_seqs = await asyncio.gather(*players)

    for client, answers, seq in zip(clients, acked, next_seqs, strict=True):
        # Every MOVE_RES counted exactly one move: no gaps, no doubles.
        assert [answers[s] for s in sorted(answers)] == list(range(1, len(answers) + 1))
        # Nothing acknowledged was lost: Redis continues from the last acknowledged count.
        assert (await client.request(MsgType.MOVE_REQ, seq, {"x": 0, "y": 0})).payload[
            "moves"] == len(answers) + 1
        # A retried acknowledged sequence id gets its cached answer, not a new move.
        last = seq - 1
        cached = await client.request(MsgType.MOVE_REQ, last, {"x": 9, "y": 9})
        assert cached.payload["moves"] == answers[last]
        await client.close()


async def test_a_call_cut_short_by_a_deadline_leaves_no_poisoned_connection(  # type: ignore[no-untyped-def]
    redis_factory,
) -> None:
    """The request deadline cancels redis-py mid-command; the one pooled connection must
    not hand the late reply of the cancelled GET to the next command."""
    from servicekit.redis_client import open_redis

    redis_server = redis_factory()
    client = open_redis(redis_server.connection, pool_size=1)
    try:
        await client.set("a", b"reply-for-a")
        await client.set("b", b"reply-for-b")
        assert redis_server.pid is not None
        os.kill(redis_server.pid, signal.SIGSTOP)  # slow, not failing: the GET is sent
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await client.get("a")
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        assert await client.get("b") == b"reply-for-b"
    finally:
        await client.aclose()


async def test_after_a_redis_restart_no_request_gets_a_stale_pooled_connection(  # type: ignore[no-untyped-def]
    system_factory, redis_factory
) -> None:
    """Redis restarts under a GameServer whose pool holds connections to the old process:
    once it is ready again, a burst of logins all succeed (none is handed a connection the
    old server closed, which would fail as "Connection closed by server")."""
    redis_server = redis_factory(persistent=True)
    cluster: Cluster = system_factory(redis=redis_server)
    gameserver = cluster.gameserver.process

    async def login_burst(count: int) -> list[str]:
        clients = await asyncio.gather(*(RawClient.connect(cluster.gateway_address)
                                         for _ in range(count)))
        answers = await asyncio.gather(*(
            c.request(MsgType.LOGIN_REQ, 1, {"user_id": new_user_id()},
                      timeout=ANSWER_TIMEOUT_S) for c in clients))
        await asyncio.gather(*(c.close() for c in clients))
        return [a.payload.get("error", "ok") if a.msg_type == MsgType.LOGIN_RES
                else a.payload.get("code", "?") for a in answers]

    assert set(await login_burst(40)) == {"ok"}  # fills the pool with connections
    # Their sockets closed: wait for the detaches, so the pool is idle when Redis goes.
    wait_until(lambda: gameserver.metric("gameserver_sessions_active") == 0, timeout=15,
               message="sessions still attached")
    redis_server.restart(kill=True)  # returns once the new Redis answers PING
    outcomes = await login_burst(40)
    assert outcomes == ["ok"] * 40, outcomes
