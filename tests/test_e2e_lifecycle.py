"""Start-up refusals and graceful shutdown of real service processes."""

from __future__ import annotations

import signal
import socket

from protocol import FLAG_LZ4, KickReason, MsgType
from test_client.client import GameClient
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.users import new_user_id
from tests.support.waiting import wait_until_async


def test_gameserver_port_in_use_exits_1_with_clear_line(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(gameservers=1, gateways=0)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        node = cluster.add_gameserver(flags=("--p2p-port", str(port)), wait_ready=False)
        assert node.process.wait_exit(20) == 1
    assert f"Address already in use: port {port} (GAMESERVER_P2P_PORT)" in node.process.log_text()
    assert "Traceback" not in node.process.log_text()


def test_gateway_port_in_use_exits_1_with_clear_line(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory()
    node = cluster.add_gateway(flags=("--client-port", str(cluster.gateway_port)),
                               wait_ready=False)
    assert node.process.wait_exit(20) == 1
    text = node.process.log_text()
    assert f"Address already in use: port {cluster.gateway_port} (GATEWAY_CLIENT_PORT)" in text
    assert "Traceback" not in text


def test_duplicate_node_id_is_refused(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(gateways=0)
    twin = cluster.add_gameserver(node_id=cluster.gameserver.node_id, wait_ready=False)
    assert twin.process.wait_exit(30) == 1
    assert "is already registered by another live process" in twin.process.log_text()
    assert cluster.gameserver.process.readyz_status() == 200


async def test_lone_gameserver_sigterm_kicks_with_server_shutdown_and_session_resumes(
    system_factory,  # type: ignore[no-untyped-def]
) -> None:
    """Nobody to hand sessions to: SERVER_SHUTDOWN, and the session stays resumable."""
    cluster: Cluster = system_factory(gameservers=1)
    client = await RawClient.connect(cluster.gateway_address)
    login = (await client.login(new_user_id())).payload
    await client.request(MsgType.MOVE_REQ, 2, {"x": 2, "y": 3})

    assert cluster.gameserver.terminate(timeout=20) == 0
    frames = await client.wait_closed()
    assert [f.payload for f in frames] == [{"reason": KickReason.SERVER_SHUTDOWN}]
    assert "GameServer stopped" in cluster.gameserver.process.log_text()

    cluster.add_gameserver()
    await wait_until_async(
        lambda: "gateway_gameservers_live 1.0" in cluster.gateway.process.metrics_text(),
        timeout=10, message="the Gateway did not see the new GameServer")
    fresh = await RawClient.connect(cluster.gateway_address)
    res = await fresh.request(MsgType.RECONNECT_REQ, 0, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert res.payload["ok"] is True
    assert res.payload["state"] == {"x": 2.0, "y": 3.0, "moves": 1}
    assert (await fresh.request(MsgType.MOVE_REQ, 3, {"x": 0, "y": 0})).payload["moves"] == 2
    await fresh.close()


async def test_gameserver_sigterm_hands_sessions_over_invisibly(
    system_factory,  # type: ignore[no-untyped-def]
) -> None:
    cluster: Cluster = system_factory(gameservers=2)
    client = await RawClient.connect(cluster.gateway_address)
    login = (await client.login(new_user_id(), accept_compression=["lz4"])).payload
    owner = next(n for n in cluster.gameservers if n.node_id == login["node_id"])
    survivor = next(n for n in cluster.gameservers if n is not owner)

    owner.process.send_signal(signal.SIGTERM)
    seq = 2
    while owner.process.running:  # keep playing right through the drain
        res = await client.request(MsgType.MOVE_REQ, seq, {"x": seq, "y": 0})
        assert res.msg_type == MsgType.MOVE_RES, res
        assert res.payload["moves"] == seq - 1
        seq += 1
    assert owner.process.wait_exit(20) == 0
    res = await client.request(MsgType.MOVE_REQ, seq, {"x": 0, "y": 0})
    assert res.payload["moves"] == seq - 1
    # The survivor adopted it, with the compression the client negotiated at login.
    big = await client.request(MsgType.ECHO_REQ, seq + 1, {"blob": "q" * 4000})
    assert big.flags & FLAG_LZ4 and big.payload == {"blob": "q" * 4000}
    assert 'gameserver_sessions_resumed_total{how="handover"} 1.0' in \
        survivor.process.metrics_text()
    assert client.inbox == []  # no kick, no error, nothing unexpected
    await client.close()


async def test_gateway_sigterm_kicks_and_client_library_resumes_elsewhere(
    system_factory,  # type: ignore[no-untyped-def]
) -> None:
    cluster: Cluster = system_factory(gateways=2)
    first, second = cluster.gateways
    client = GameClient(*first.address, gateways=[second.address], request_timeout=5)
    await client.connect()
    login = await client.login(new_user_id())
    assert (await client.move(1, 2))["moves"] == 1

    assert first.terminate(timeout=20) == 0
    await wait_until_async(lambda: client.kicked_reason == KickReason.SERVER_SHUTDOWN,
                           timeout=10)
    moved = await client.move(3, 4)  # resumes through the second Gateway
    assert moved == {"x": 3.0, "y": 4.0, "moves": 2}
    assert client.session_id == login["session_id"]
    assert client.reconnect_count >= 1
    await client.close()


async def test_gateway_drain_keeps_serving_during_the_grace(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(env={"GATEWAY_DRAIN_GRACE_S": "3"})
    client = await RawClient.connect(cluster.gateway_address)
    await client.login(new_user_id())
    cluster.gateway.process.send_signal(signal.SIGTERM)
    kick = await client.expect(MsgType.KICKOUT_NTF, 0)
    assert kick.payload == {"reason": KickReason.SERVER_SHUTDOWN}
    echo = await client.request(MsgType.ECHO_REQ, 2, {"late": True})
    assert echo.payload == {"late": True}
    assert await client.wait_closed(timeout=10) == []
    assert cluster.gateway.process.wait_exit(10) == 0


async def test_metrics_health_and_readiness_endpoints(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory()
    client = await RawClient.connect(cluster.gateway_address)
    await client.login(new_user_id())
    await client.request(MsgType.ECHO_REQ, 2, {})
    await client.request(MsgType.ECHO_REQ, 2, {})  # a duplicate
    for node in (cluster.gateway, cluster.gameserver):
        assert node.process.http("/healthz")[0] == 200
        assert node.process.http("/readyz")[0] == 200
        assert node.process.http("/nope")[0] == 404
    gs = cluster.gameserver.process.metrics_text()
    assert 'gameserver_requests_total{msg_type="ECHO_REQ",result="ok"} 1.0' in gs
    assert 'gameserver_duplicate_requests_total{outcome="cached"} 1.0' in gs
    assert 'gameserver_handler_duration_seconds_count{msg_type="LOGIN_REQ"} 1.0' in gs
    assert "gameserver_sessions_active 1.0" in gs
    gw = cluster.gateway.process.metrics_text()
    assert 'gateway_connected_clients{transport="tcp"} 1.0' in gw
    assert 'gateway_frames_total{direction="in",transport="tcp"} 3.0' in gw
    assert "gateway_gameservers_live 1.0" in gw
    await client.close()
