"""WebSocket game clients on the Gateway (GATEWAY_WS_PORT), with real processes and the
``websockets`` package's own client: the same sessions and protocol as TCP, one v1 frame
per binary message; every refusal with its close code; the Origin check; and sessions that
move between transports (RECONNECT over TCP of a WebSocket session and back, a duplicate
login across transports).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol import ErrorCode, KickReason, MsgType, encode_message
from tests.support.bystander import Bystander
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.raw_ws import WsRawClient
from tests.support.users import new_user_id
from tests.support.waiting import wait_until_async

#: A small MAX_FRAME_BYTES, so a message over it is cheap to send.
SYSTEM_ENV = {"MAX_FRAME_BYTES": "4096", "CLIENT_RATE_LIMIT": "0"}


async def test_login_echo_move_ping_over_websocket(system: Cluster) -> None:
    client = await WsRawClient.connect(system.gateway.ws_url)
    login = await client.login(new_user_id())
    assert login.payload["session_id"] > 0 and login.payload["reconnect_key"]
    echo = await client.request(MsgType.ECHO_REQ, 2, {"text": "hé ✓"})
    assert (echo.msg_type, echo.sequence_id, echo.payload) == (
        MsgType.ECHO_RES, 2, {"text": "hé ✓"})
    move = await client.request(MsgType.MOVE_REQ, 3, {"x": 1.5, "y": -2})
    assert move.payload["moves"] == login.payload["state"]["moves"] + 1
    pong = await client.request(MsgType.PING_REQ, 4, {"client_time_ms": 12345})
    assert pong.msg_type == MsgType.PONG_RES
    # The WebSocket ping/pong of RFC 6455, answered by the Gateway.
    async with asyncio.timeout(5):
        await (await client.ws.ping(b"are you there"))
    await client.close()
    metric = system.gateway.process.metric
    assert metric("gateway_ws_upgrades_total") >= 1
    # Traffic is counted by transport (the dashboards split it).
    assert metric('gateway_connections_total{transport="ws"}') >= 1
    assert metric('gateway_frames_total{direction="in",transport="ws"}') >= 4


async def test_a_text_message_is_kicked_and_closed_1003(system: Cluster) -> None:
    client = await WsRawClient.connect(system.gateway.ws_url)
    await client.login(new_user_id())
    await client.send('{"msg_type": 1}')
    frames, code = await client.wait_closed()
    assert [f.payload.get("reason") for f in frames if f.msg_type == MsgType.KICKOUT_NTF] == [
        KickReason.PROTOCOL_ERROR.value]
    assert code == 1003


@pytest.mark.parametrize("message", [
    pytest.param(lambda frame: frame + frame, id="two-frames-in-one-message"),
    pytest.param(lambda frame: frame[:-1], id="a-truncated-frame"),
    pytest.param(lambda frame: frame[:6], id="shorter-than-a-header"),
])
async def test_a_message_that_is_not_exactly_one_frame_is_kicked_and_closed_1002(
        system: Cluster, message: Callable[[bytes], bytes]) -> None:
    client = await WsRawClient.connect(system.gateway.ws_url)
    await client.send(message(encode_message(MsgType.ECHO_REQ, 1, {"text": "x"})))
    frames, code = await client.wait_closed()
    assert [f.payload.get("reason") for f in frames] == [KickReason.PROTOCOL_ERROR.value]
    assert code == 1002


async def test_a_message_over_max_frame_bytes_is_closed_1009(system: Cluster) -> None:
    client = await WsRawClient.connect(system.gateway.ws_url)
    await client.login(new_user_id())
    big = encode_message(MsgType.ECHO_REQ, 2, {"text": "x" * 5000})  # MAX_FRAME_BYTES 4096
    await client.send(big)
    _, code = await client.wait_closed()
    assert code == 1009
    # A bystander on TCP is served all along.
    bystander = await RawClient.connect(system.gateway_address)
    await bystander.login(new_user_id())
    assert (await bystander.request(MsgType.ECHO_REQ, 2, {"text": "ok"})).payload == {
        "text": "ok"}
    await bystander.close()


async def test_only_path_slash_is_served(system: Cluster) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await WsRawClient.connect(system.gateway.ws_url + "games")
    assert refused.value.response.status_code == 404


async def test_sessions_move_between_websocket_and_tcp(system: Cluster) -> None:
    user = new_user_id()
    ws = await WsRawClient.connect(system.gateway.ws_url)
    login = await ws.login(user)
    moves = (await ws.request(MsgType.MOVE_REQ, 2, {"x": 3, "y": 4})).payload["moves"]
    await ws.close()
    # RECONNECT over TCP: the state snapshot, a rotated key.
    tcp = await RawClient.connect(system.gateway_address)
    resumed = await tcp.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": login.payload["session_id"],
        "reconnect_key": login.payload["reconnect_key"]})
    assert resumed.msg_type == MsgType.RECONNECT_RES, resumed
    assert resumed.payload["state"]["moves"] == moves
    assert resumed.payload["reconnect_key"] != login.payload["reconnect_key"]
    await tcp.close()
    # And back to WebSocket with the rotated key.
    again = await WsRawClient.connect(system.gateway.ws_url)
    back = await again.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": login.payload["session_id"],
        "reconnect_key": resumed.payload["reconnect_key"]})
    assert back.msg_type == MsgType.RECONNECT_RES and back.payload["state"]["moves"] == moves
    # A login of the same user over TCP kicks the WebSocket one.
    other = await RawClient.connect(system.gateway_address)
    await other.login(user)
    frames, code = await again.wait_closed()
    assert [f.payload.get("reason") for f in frames if f.msg_type == MsgType.KICKOUT_NTF] == [
        KickReason.DUPLICATE_LOGIN.value]
    assert code == 1000
    await other.close()


async def test_origins_are_checked_on_the_upgrade(system_factory: Callable[..., Cluster]
                                                  ) -> None:
    cluster = system_factory(env={
        "GATEWAY_WS_ALLOWED_ORIGINS": "https://game.example.com, https://beta.example.com/"})
    url = cluster.gateway.ws_url
    for allowed in ("https://game.example.com", "https://beta.example.com"):
        client = await WsRawClient.connect(url, origin=allowed)
        await client.login(new_user_id())
        await client.close()
    for refused_origin in ("https://evil.example.com", None):
        with pytest.raises(InvalidStatus) as refused:
            await WsRawClient.connect(url, origin=refused_origin)
        assert refused.value.response.status_code == 403
    assert cluster.gateway.process.metric(
        'gateway_ws_upgrade_failures_total{reason="origin"}') == 2


# ------------------------------------------------------------ the limits, as on TCP
async def test_a_websocket_flood_is_rate_limited_while_a_bystander_is_served(
        system_factory: Callable[..., Cluster]) -> None:
    cluster = system_factory(env={"CLIENT_RATE_LIMIT": "50", "CLIENT_RATE_BURST": "20"})
    watcher = await Bystander.start(cluster.gateway_address, 0.05, 1.0)
    try:
        client = await WsRawClient.connect(cluster.gateway.ws_url)
        await client.login(new_user_id())
        for seq in range(2, 82):  # 80 messages at once, 20 of burst
            await client.send_msg(MsgType.ECHO_REQ, seq, {"n": seq})
        answers = [await client.next_frame() for _ in range(80)]
        limited = [f for f in answers if f.msg_type == MsgType.ERROR_RES]
        assert limited and all(f.payload["code"] == ErrorCode.RATE_LIMITED for f in limited)
        assert sorted(f.sequence_id for f in answers) == list(range(2, 82))
        await client.close()
    finally:
        await watcher.stop()
    assert not watcher.problems, watcher.problems
    assert cluster.gateway.process.metric('gateway_rate_limited_frames_total') >= len(limited)


async def test_a_websocket_client_that_does_not_read_is_disconnected(
        system_factory: Callable[..., Cluster]) -> None:
    cluster = system_factory(env={"GATEWAY_MAX_SEND_BUFFER_BYTES": "65536",
                                  "CLIENT_RATE_LIMIT": "0"})
    watcher = await Bystander.start(cluster.gateway_address, 0.05, 1.0)
    try:
        client = await WsRawClient.connect(cluster.gateway.ws_url)
        await client.login(new_user_id())
        client.ws.transport.pause_reading()  # the client stops reading; it keeps writing
        frame = encode_message(MsgType.ECHO_REQ, 0, {"data": "x" * 16_000})

        async def flood() -> None:
            with contextlib.suppress(ConnectionClosed, OSError):
                while True:
                    await client.ws.send(frame)

        flooding = asyncio.create_task(flood())
        await wait_until_async(
            lambda: cluster.gateway.process.metric(
                "gateway_backpressure_disconnects_total") >= 1,
            timeout=30, message="the Gateway did not disconnect the non-reading client")
        flooding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flooding
        client.ws.transport.abort()
    finally:
        await watcher.stop()
    assert not watcher.problems, watcher.problems
    assert cluster.gateway.process.metric("gateway_reading_pauses_total") >= 1


async def test_login_and_idle_timeouts_apply_over_websocket(
        system_factory: Callable[..., Cluster]) -> None:
    cluster = system_factory(env={"LOGIN_TIMEOUT_S": "1", "IDLE_TIMEOUT_S": "1.5"})
    silent = await WsRawClient.connect(cluster.gateway.ws_url)  # never logs in
    idle = await WsRawClient.connect(cluster.gateway.ws_url)
    await idle.login(new_user_id())  # then says nothing
    for client, reason in ((silent, KickReason.LOGIN_TIMEOUT), (idle, KickReason.IDLE_TIMEOUT)):
        frames, code = await client.wait_closed(timeout=10)
        assert [f.payload.get("reason") for f in frames] == [reason.value]
        assert code == 1000
