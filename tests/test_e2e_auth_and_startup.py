"""AUTH_MODE=hmac logins, and services started before their Redis is up."""

from __future__ import annotations

import time

from protocol import ErrorCode, MsgType
from protocol.auth import mint_token, sign
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.users import new_user_id
from tests.support.waiting import wait_until

SECRET = "integration-secret"


async def test_hmac_tokens(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(env={"AUTH_MODE": "hmac", "AUTH_SECRET": SECRET})
    user = new_user_id()
    client = await RawClient.connect(cluster.gateway_address)
    expired_at = int(time.time()) - 10
    refusals = {
        "missing": {"user_id": user},
        "forged": {"user_id": user, "token": mint_token(b"wrong-secret", user)},
        "other user's": {"user_id": user, "token": mint_token(SECRET.encode(), user + 1)},
        "expired": {"user_id": user,
                    "token": f"{expired_at}.{sign(SECRET.encode(), user, expired_at)}"},
        "malformed": {"user_id": user, "token": "nonsense"},
    }
    for seq, (label, payload) in enumerate(refusals.items(), start=1):
        res = await client.request(MsgType.LOGIN_REQ, seq, payload)
        assert res.msg_type == MsgType.LOGIN_RES, label
        assert res.payload["ok"] is False, label
        assert res.payload["error"] == ErrorCode.AUTH_FAILED, label
    ok = await client.request(MsgType.LOGIN_REQ, 10, {
        "user_id": user, "token": mint_token(SECRET.encode(), user, ttl_s=60)})
    assert ok.payload["ok"] is True and ok.payload["user_id"] == user
    assert (await client.request(MsgType.ECHO_REQ, 11, {"in": True})).payload == {"in": True}
    await client.close()


def test_gameserver_waits_for_redis_then_becomes_ready(system_factory, redis_factory) -> None:  # type: ignore[no-untyped-def]
    redis_server = redis_factory(start=False)
    cluster: Cluster = system_factory(redis=redis_server, start=False)
    node = cluster.add_gameserver(wait_ready=False)
    node.process.wait_for_log("Redis is NOT reachable", timeout=15)
    assert node.process.readyz_status() == 503
    assert node.process.running
    redis_server.start()
    wait_until(lambda: node.process.readyz_status() == 200, timeout=20,
               message="GameServer did not become ready once Redis was up")
    assert "Traceback" not in node.process.log_text()
    gateway = cluster.add_gateway()
    assert gateway.process.readyz_status() == 200


async def test_gateway_without_gameserver_answers_server_unavailable(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(start=False)
    gateway = cluster.add_gateway(wait_ready=False)
    gateway.process.wait_for_log("Listening for clients", timeout=15)
    assert gateway.process.readyz_status() == 503
    client = await RawClient.connect(gateway.address)
    res = await client.request(MsgType.LOGIN_REQ, 7, {"user_id": new_user_id()})
    assert (res.msg_type, res.sequence_id) == (MsgType.ERROR_RES, 7)
    assert res.payload["code"] == ErrorCode.SERVER_UNAVAILABLE
    gateway.process.wait_for_log("Failed to connect to GameServer", timeout=5)
    # A GameServer arriving later is picked up without restarting the Gateway.
    cluster.add_gameserver()
    wait_until(lambda: gateway.process.readyz_status() == 200, timeout=15)
    ok = await client.request(MsgType.LOGIN_REQ, 8, {"user_id": new_user_id()})
    assert ok.payload["ok"] is True
    await client.close()
