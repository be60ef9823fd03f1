"""Faults with real processes: kill -9, Redis restarts, idle clients, expired sessions."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import redis as redis_sync

from protocol import ErrorCode, KickReason, MsgType
from protocol.payload import encode_message
from servicekit.keys import Keys
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.users import new_user_id
from tests.support.waiting import wait_until, wait_until_async


async def request_until_answered(client: RawClient, msg_type: int, seq: int,
                                 payload: dict[str, Any], timeout: float = 20.0) -> Any:
    """Send (and re-send, same seq) until a non-error answer arrives: a client's retry loop."""
    async def attempt() -> Any:
        await client.send_msg(msg_type, seq, payload)
        try:
            frame = await client.next_frame(timeout=1.0)
        except TimeoutError:
            return None
        if frame.msg_type == MsgType.ERROR_RES:
            assert frame.payload["code"] == ErrorCode.SERVER_UNAVAILABLE, frame
            await asyncio.sleep(0.1)
            return None
        return frame

    return await wait_until_async(attempt, timeout=timeout, interval=0.0,
                                  message=f"no answer to seq {seq}")


async def wait_for_commits_pending(cluster: Cluster, count: int) -> None:
    """Wait until ``count`` sessions have state changes on their way to Redis (queued or
    being written), i.e. the GameServer has taken in that many MOVEs."""
    line = f"gameserver_commits_pending {float(count)}"
    await wait_until_async(lambda: line in cluster.gameserver.process.metrics_text(),
                           timeout=10, message=f"waiting for {line!r}")


async def test_move_retry_after_gameserver_kill_9_and_restart(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory()
    client = await RawClient.connect(cluster.gateway_address)
    login = (await client.login(new_user_id())).payload
    acked = await client.request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})
    assert acked.payload["moves"] == 1

    # A MOVE in flight when the process dies: it may or may not have been committed.
    await client.send_msg(MsgType.MOVE_REQ, 3, {"x": 2, "y": 2})
    cluster.kill_gameserver()
    # The Gateway sees the GameServer die and tells its clients to resume elsewhere.
    frames = await client.wait_closed(timeout=15)
    assert frames[-1].payload == {"reason": KickReason.SERVER_SHUTDOWN}
    cluster.restart_gameserver()

    fresh = await RawClient.connect(cluster.gateway_address)
    resumed = await request_until_answered(fresh, MsgType.RECONNECT_REQ, 0, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert resumed.payload["ok"] is True
    # The same sequence ids again: answered from Redis or applied now, never twice.
    retried_2 = await fresh.request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})
    assert retried_2.raw == acked.raw
    retried_3 = await fresh.request(MsgType.MOVE_REQ, 3, {"x": 2, "y": 2})
    assert retried_3.sequence_id == 3 and retried_3.payload["moves"] == 2
    again_3 = await fresh.request(MsgType.MOVE_REQ, 3, {"x": 2, "y": 2})
    assert again_3.raw == retried_3.raw
    fourth = await fresh.request(MsgType.MOVE_REQ, 4, {"x": 3, "y": 3})
    assert fourth.payload["moves"] == 3
    await fresh.close()


async def test_reconnect_after_gameserver_kill_9_and_restart(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory()
    client = await RawClient.connect(cluster.gateway_address)
    login = (await client.login(new_user_id())).payload
    moved = await client.request(MsgType.MOVE_REQ, 2, {"x": 5, "y": 5})
    cluster.kill_gameserver()
    await client.close()
    cluster.restart_gameserver()  # same node id: it waits out its old registry entry

    fresh = await RawClient.connect(cluster.gateway_address)
    res = await request_until_answered(fresh, MsgType.RECONNECT_REQ, 1, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert res.payload["ok"] is True
    assert res.payload["state"] == {"x": 5.0, "y": 5.0, "moves": 1}
    assert res.payload["last_sequence_id"] == 2
    retry = await fresh.request(MsgType.MOVE_REQ, 2, {"x": 5, "y": 5})
    assert retry.raw == moved.raw
    await fresh.close()


async def test_redis_restart_mid_run(system_factory, redis_factory) -> None:  # type: ignore[no-untyped-def]
    redis_server = redis_factory(persistent=True)
    cluster: Cluster = system_factory(redis=redis_server)
    client = await RawClient.connect(cluster.gateway_address)
    await client.login(new_user_id())
    assert (await client.request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})).payload["moves"] == 1

    redis_server.stop()
    wait_until(lambda: cluster.gameserver.process.readyz_status() == 503, timeout=15,
               message="GameServer still ready without Redis")
    # Reads that need no Redis keep working; a state change is refused while Redis is
    # known to be down (SERVER_UNAVAILABLE, transient: the same id may be retried).
    assert (await client.request(MsgType.ECHO_REQ, 3, {"e": 1})).payload == {"e": 1}
    refused_move = await client.request(MsgType.MOVE_REQ, 4, {"x": 2, "y": 2}, timeout=15)
    assert refused_move.payload["code"] == ErrorCode.SERVER_UNAVAILABLE
    newcomer = await RawClient.connect(cluster.gateway_address)
    refused = await newcomer.request(MsgType.LOGIN_REQ, 1, {"user_id": new_user_id()},
                                     timeout=15)
    assert refused.payload["ok"] is False
    assert refused.payload["error"] == ErrorCode.SERVER_UNAVAILABLE
    await newcomer.close()

    redis_server.start()
    wait_until(lambda: cluster.gameserver.process.readyz_status() == 200, timeout=15,
               message="GameServer did not become ready again")
    retried = await request_until_answered(client, MsgType.MOVE_REQ, 4, {"x": 2, "y": 2})
    assert retried.payload["moves"] == 2
    again = await RawClient.connect(cluster.gateway_address)
    await again.login(new_user_id())
    assert (await again.request(MsgType.MOVE_REQ, 2, {"x": 0, "y": 1})).payload["moves"] == 1
    assert (await client.request(MsgType.MOVE_REQ, 5, {"x": 3, "y": 3})).payload["moves"] == 3
    await again.close()
    await client.close()


async def test_idle_timeout_then_resume_within_grace(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(env={"IDLE_TIMEOUT_S": "0.5", "RECONNECT_GRACE_S": "30"})
    client = await RawClient.connect(cluster.gateway_address)
    login = (await client.login(new_user_id())).payload
    await client.request(MsgType.MOVE_REQ, 2, {"x": 6, "y": 6})
    frames = await client.wait_closed(timeout=10)
    assert [f.payload for f in frames] == [{"reason": KickReason.IDLE_TIMEOUT}]

    fresh = await RawClient.connect(cluster.gateway_address)
    res = await fresh.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert res.payload["ok"] is True
    assert res.payload["state"] == {"x": 6.0, "y": 6.0, "moves": 1}
    assert res.payload["last_sequence_id"] == 2
    await fresh.close()


async def test_active_client_is_not_idle_kicked(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(env={"IDLE_TIMEOUT_S": "0.5"})
    client = await RawClient.connect(cluster.gateway_address)
    await client.login(new_user_id())
    for seq in range(2, 22):  # 2 s of traffic, four times the idle timeout
        res = await client.request(MsgType.PING_REQ, seq, {"client_time_ms": seq})
        assert res.msg_type == MsgType.PONG_RES
        await asyncio.sleep(0.1)
    await client.close()


async def test_session_expires_after_grace(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(env={"IDLE_TIMEOUT_S": "0.3", "RECONNECT_GRACE_S": "1"})
    client = await RawClient.connect(cluster.gateway_address)
    login = (await client.login(new_user_id())).payload
    await client.wait_closed(timeout=10)
    redis_client = redis_sync.Redis.from_url(cluster.redis.url)
    session_key = Keys().session(login["session_id"])
    wait_until(lambda: redis_client.exists(session_key) == 0, timeout=10,
               message="detached session did not expire after RECONNECT_GRACE_S")
    redis_client.close()
    fresh = await RawClient.connect(cluster.gateway_address)
    res = await fresh.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert res.payload["ok"] is False and res.payload["error"] == "SESSION_EXPIRED"
    wait_until(lambda: "gameserver_sessions_expired_total 1.0"
               in cluster.gameserver.process.metrics_text(), timeout=10)
    await fresh.close()


async def test_server_busy_is_not_cached_and_retry_is_processed(  # type: ignore[no-untyped-def]
    system_factory, redis_factory
) -> None:
    redis_server = redis_factory(persistent=True)
    # SERVER_BUSY is about a slow Redis: a failing one gets SERVER_UNAVAILABLE instead. A
    # paused (SIGSTOP) Redis is slow until the socket timeout (3 s) declares it failing;
    # the three MOVEs below take milliseconds. Held answers may wait 30 s here.
    cluster: Cluster = system_factory(redis=redis_server, env={
        "MAX_PENDING_COMMITS": "1", "REDIS_REQUEST_TIMEOUT_S": "30"})
    clients = [await RawClient.connect(cluster.gateway_address) for _ in range(3)]
    for client in clients:
        await client.login(new_user_id())
    assert redis_server.pid is not None
    os.kill(redis_server.pid, signal.SIGSTOP)
    # Ordered by the pending-commit gauge, not by sleeps: the first MOVE must be the commit
    # in flight and the second the one queued behind it (which fills MAX_PENDING_COMMITS)
    # before the third arrives; frames from different sockets carry no order of their own.
    await clients[0].send_msg(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})  # in flight, held
    await wait_for_commits_pending(cluster, 1)
    await clients[1].send_msg(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})  # queued, held
    await wait_for_commits_pending(cluster, 2)
    busy = await clients[2].request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})
    assert busy.msg_type == MsgType.ERROR_RES
    assert busy.payload["code"] == ErrorCode.SERVER_BUSY
    os.kill(redis_server.pid, signal.SIGCONT)
    for client in clients[:2]:
        assert (await client.expect(MsgType.MOVE_RES, 2, timeout=20)).payload["moves"] == 1
    # The refused request did nothing, so its retry is processed, not answered from a cache.
    retry = await clients[2].request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})
    assert retry.msg_type == MsgType.MOVE_RES and retry.payload["moves"] == 1
    for client in clients:
        await client.close()


async def test_redis_losing_its_data_ends_sessions_cleanly(  # type: ignore[no-untyped-def]
    system_factory, redis_factory
) -> None:
    redis_server = redis_factory(persistent=False)
    cluster: Cluster = system_factory(redis=redis_server)
    client = await RawClient.connect(cluster.gateway_address)
    login = (await client.login(new_user_id())).payload
    redis_server.restart()  # comes back empty
    wait_until(lambda: cluster.gameserver.process.readyz_status() == 200, timeout=15)
    await client.send_msg(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})
    frames = await client.wait_closed(timeout=15)
    assert frames == []  # no answer for a state change that could not be stored, no kick
    fresh = await RawClient.connect(cluster.gateway_address)
    res = await request_until_answered(fresh, MsgType.RECONNECT_REQ, 1, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert res.payload["ok"] is False and res.payload["error"] == "INVALID_SESSION"
    await fresh.login(new_user_id(), seq=2)
    await fresh.close()


async def test_a_trickle_of_bytes_is_still_idle(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(env={"IDLE_TIMEOUT_S": "0.5"})
    client = await RawClient.connect(cluster.gateway_address)
    await client.login(new_user_id())

    async def trickle() -> None:
        partial = encode_message(MsgType.ECHO_REQ, 2, {"pad": "x" * 200})
        for i in range(len(partial) - 1):
            await client.send(partial[i:i + 1])
            await asyncio.sleep(0.05)

    sending = asyncio.create_task(trickle())
    frames = await client.wait_closed(timeout=10)
    sending.cancel()
    assert [f.payload for f in frames] == [{"reason": KickReason.IDLE_TIMEOUT}]
