"""Session behaviour end to end: real Gateway + GameServer processes on a real Redis."""

from __future__ import annotations

from typing import Any

from protocol import FLAG_LZ4, ErrorCode, KickReason, MsgType, encode_frame
from protocol.payload import encode_message
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.users import new_user_id


async def connect(system: Cluster) -> RawClient:
    return await RawClient.connect(system.gateway_address)


async def test_login_echo_move_ping(system: Cluster) -> None:
    user = new_user_id()
    client = await connect(system)
    login = (await client.login(user, seq=1)).payload
    assert login["result"] == "LOGIN_SUCCESS"
    assert login["user_id"] == user
    assert isinstance(login["session_id"], int) and login["session_id"] > 0
    assert isinstance(login["reconnect_key"], str) and len(login["reconnect_key"]) >= 22
    assert login["node_id"] == system.gameserver.node_id
    assert login["last_sequence_id"] == 1
    assert login["state"] == {"x": 0.0, "y": 0.0, "moves": 0}

    echo = await client.request(MsgType.ECHO_REQ, 2, {"a": [1, 2, {"b": None}], "s": "héllo"})
    assert (echo.msg_type, echo.sequence_id) == (MsgType.ECHO_RES, 2)
    assert echo.payload == {"a": [1, 2, {"b": None}], "s": "héllo"}

    move = await client.request(MsgType.MOVE_REQ, 3, {"x": 1.5, "y": -2})
    assert (move.msg_type, move.sequence_id) == (MsgType.MOVE_RES, 3)
    assert move.payload == {"x": 1.5, "y": -2.0, "moves": 1}

    pong = await client.request(MsgType.PING_REQ, 4, {"client_time_ms": 12345})
    assert pong.msg_type == MsgType.PONG_RES
    assert pong.payload["client_time_ms"] == 12345
    assert pong.payload["server_time_ms"] > 1_700_000_000_000
    await client.close()


async def test_empty_payload_reads_as_empty_object(system: Cluster) -> None:
    client = await connect(system)
    await client.login(new_user_id())
    await client.send(encode_frame(MsgType.ECHO_REQ, 2, b""))
    echo = await client.expect(MsgType.ECHO_RES, 2)
    assert echo.payload == {}
    await client.close()


async def test_state_survives_logout_and_login(system: Cluster) -> None:
    user = new_user_id()
    first = await connect(system)
    session_1 = (await first.login(user)).payload["session_id"]
    await first.request(MsgType.MOVE_REQ, 2, {"x": 3, "y": 4})
    last = await first.request(MsgType.MOVE_REQ, 3, {"x": 5, "y": 6})
    assert last.payload["moves"] == 2
    bye = await first.request(MsgType.LOGOUT_REQ, 4)
    assert (bye.msg_type, bye.payload) == (MsgType.LOGOUT_RES, {"ok": True})
    assert await first.wait_closed() == []  # the server closes the socket after LOGOUT_RES

    second = await connect(system)
    login = (await second.login(user)).payload
    assert login["session_id"] != session_1
    assert login["state"] == {"x": 5.0, "y": 6.0, "moves": 2}
    moved = await second.request(MsgType.MOVE_REQ, 2, {"x": 0, "y": 0})
    assert moved.payload["moves"] == 3
    await second.close()


async def test_logged_out_session_cannot_be_resumed(system: Cluster) -> None:
    client = await connect(system)
    login = (await client.login(new_user_id())).payload
    await client.request(MsgType.LOGOUT_REQ, 2)
    await client.wait_closed()
    other = await connect(system)
    res = await other.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert res.msg_type == MsgType.RECONNECT_RES
    assert res.payload["ok"] is False
    assert res.payload["error"] == ErrorCode.INVALID_SESSION
    await other.close()


async def test_duplicate_login_kicks_old_socket_and_kills_its_key(system: Cluster) -> None:
    user = new_user_id()
    old = await connect(system)
    old_login = (await old.login(user)).payload
    await old.request(MsgType.MOVE_REQ, 2, {"x": 7, "y": 7})

    new = await connect(system)
    new_login = (await new.login(user)).payload
    assert new_login["session_id"] != old_login["session_id"]
    assert new_login["state"]["moves"] == 1  # the player's state, not the session's

    frames = await old.wait_closed()
    kicks = [f for f in frames if f.msg_type == MsgType.KICKOUT_NTF]
    assert [k.payload for k in kicks] == [{"reason": KickReason.DUPLICATE_LOGIN}]
    assert kicks[0].sequence_id == 0

    third = await connect(system)
    res = await third.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": old_login["session_id"], "reconnect_key": old_login["reconnect_key"]})
    assert res.payload == {"ok": False, "error": "INVALID_SESSION",
                           "message": res.payload["message"]}

    # The old socket's teardown must not have touched the new session.
    echo = await new.request(MsgType.ECHO_REQ, 2, {"still": "here"})
    assert echo.payload == {"still": "here"}
    moved = await new.request(MsgType.MOVE_REQ, 3, {"x": 1, "y": 1})
    assert moved.payload["moves"] == 2
    await new.close()
    await third.close()


async def test_reconnect_restores_snapshot_and_rotates_key(system: Cluster) -> None:
    user = new_user_id()
    first = await connect(system)
    login = (await first.login(user)).payload
    await first.request(MsgType.MOVE_REQ, 2, {"x": 10, "y": 20})
    await first.request(MsgType.ECHO_REQ, 3, {})
    await first.close()  # the client drops

    second = await connect(system)
    res = await second.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert res.msg_type == MsgType.RECONNECT_RES
    resumed = res.payload
    assert resumed["ok"] is True
    assert resumed["session_id"] == login["session_id"]
    assert resumed["reconnect_key"] != login["reconnect_key"]
    assert resumed["last_sequence_id"] == 3
    assert resumed["state"] == {"x": 10.0, "y": 20.0, "moves": 1}

    # The old key is single-use: it no longer works.
    third = await connect(system)
    stale = await third.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert stale.payload["ok"] is False and stale.payload["error"] == "INVALID_SESSION"

    # The session goes on where it was; sequence ids continue.
    moved = await second.request(MsgType.MOVE_REQ, 4, {"x": 11, "y": 21})
    assert moved.payload == {"x": 11.0, "y": 21.0, "moves": 2}
    await second.close()
    await third.close()


async def test_reconnect_while_old_socket_open_takes_over(system: Cluster) -> None:
    old = await connect(system)
    login = (await old.login(new_user_id())).payload
    new = await connect(system)
    res = await new.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert res.payload["ok"] is True
    frames = await old.wait_closed()
    assert [f.payload for f in frames if f.msg_type == MsgType.KICKOUT_NTF] == [
        {"reason": KickReason.SESSION_RESUMED_ELSEWHERE}]
    echo = await new.request(MsgType.ECHO_REQ, 2, {"n": 1})
    assert echo.payload == {"n": 1}
    await new.close()


async def test_reconnect_with_wrong_key_or_unknown_session(system: Cluster) -> None:
    client = await connect(system)
    login = (await client.login(new_user_id())).payload
    other = await connect(system)
    wrong = await other.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": login["session_id"], "reconnect_key": "not-the-key"})
    assert wrong.payload["ok"] is False and wrong.payload["error"] == "INVALID_SESSION"
    unknown = await other.request(MsgType.RECONNECT_REQ, 2, {
        "session_id": 999_999_999, "reconnect_key": "whatever"})
    assert unknown.payload["ok"] is False and unknown.payload["error"] == "INVALID_SESSION"
    # A failed attempt must not disturb the real session.
    assert (await client.request(MsgType.ECHO_REQ, 2, {"ok": 1})).payload == {"ok": 1}
    await client.close()
    await other.close()


async def test_retry_gets_identical_cached_bytes_and_move_is_not_applied_twice(
    system: Cluster,
) -> None:
    client = await connect(system)
    await client.login(new_user_id(), seq=1)
    first = await client.request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})
    retry = await client.request(MsgType.MOVE_REQ, 2, {"x": 9, "y": 9})
    assert retry.raw == first.raw
    assert first.payload["moves"] == 1
    nxt = await client.request(MsgType.MOVE_REQ, 3, {"x": 2, "y": 2})
    assert nxt.payload["moves"] == 2

    echo = await client.request(MsgType.ECHO_REQ, 4, {"v": 1})
    echo_again = await client.request(MsgType.ECHO_REQ, 4, {"v": 2})
    assert echo_again.raw == echo.raw

    # LOGIN's own id sets the watermark but is not a cached response.
    stale = await client.request(MsgType.ECHO_REQ, 1, {"v": 3})
    assert stale.msg_type == MsgType.ERROR_RES
    assert stale.payload["code"] == ErrorCode.DUPLICATE_SEQUENCE
    assert stale.sequence_id == 1

    # Sequence id 0 opts out: processed every time.
    for _ in range(2):
        zero = await client.request(MsgType.MOVE_REQ, 0, {"x": 3, "y": 3})
        assert zero.sequence_id == 0 and zero.msg_type == MsgType.MOVE_RES
    assert zero.payload["moves"] == 4
    await client.close()


async def test_retry_after_reconnect_returns_cached_move(system: Cluster) -> None:
    first = await connect(system)
    login = (await first.login(new_user_id())).payload
    moved = await first.request(MsgType.MOVE_REQ, 2, {"x": 4, "y": 4})
    await first.close()

    second = await connect(system)
    res = await second.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert res.payload["ok"] is True and res.payload["last_sequence_id"] == 2
    retry = await second.request(MsgType.MOVE_REQ, 2, {"x": 4, "y": 4})
    assert retry.raw == moved.raw
    assert (await second.request(MsgType.MOVE_REQ, 3, {"x": 5, "y": 5})).payload["moves"] == 2
    await second.close()


async def test_response_cache_is_bounded(system: Cluster) -> None:
    client = await connect(system)
    await client.login(new_user_id())
    for seq in range(2, 2 + 70):  # more than the default cache of 64
        await client.send_msg(MsgType.ECHO_REQ, seq, {"seq": seq})
    for seq in range(2, 2 + 70):
        await client.expect(MsgType.ECHO_RES, seq)
    evicted = await client.request(MsgType.ECHO_REQ, 2, {"seq": 2})
    assert evicted.payload["code"] == ErrorCode.DUPLICATE_SEQUENCE
    kept = await client.request(MsgType.ECHO_REQ, 71, {"seq": 71})
    assert kept.msg_type == MsgType.ECHO_RES and kept.payload == {"seq": 71}
    await client.close()


async def test_whisper_same_node(system: Cluster) -> None:
    alice_id, bob_id = new_user_id(), new_user_id()
    alice = await connect(system)
    bob = await connect(system)
    await alice.login(alice_id)
    await bob.login(bob_id)
    res = await alice.request(MsgType.WHISPER_REQ, 2, {"to_user_id": bob_id, "text": "psst"})
    assert res.payload == {"delivered": True}
    note = await bob.expect(MsgType.WHISPER_NTF, 0)
    assert note.payload == {"from_user_id": alice_id, "text": "psst"}

    offline = await alice.request(MsgType.WHISPER_REQ, 3,
                                  {"to_user_id": new_user_id(), "text": "anyone?"})
    assert offline.payload == {"delivered": False}
    too_long = await alice.request(MsgType.WHISPER_REQ, 4, {"to_user_id": bob_id,
                                                            "text": "x" * 513})
    assert too_long.payload["code"] == ErrorCode.BAD_PAYLOAD
    await alice.close()
    await bob.close()


async def test_lz4_compression_both_ways(system: Cluster) -> None:
    client = await connect(system)
    await client.login(new_user_id(), accept_compression=["lz4"])
    big: dict[str, Any] = {"blob": "abc" * 2000}
    await client.send(encode_message(MsgType.ECHO_REQ, 2, big, compress_above=0))
    res = await client.expect(MsgType.ECHO_RES, 2)
    assert res.flags & FLAG_LZ4
    assert res.payload == big
    small = await client.request(MsgType.ECHO_REQ, 3, {"s": 1})
    assert small.flags == 0

    plain = await connect(system)
    await plain.login(new_user_id())
    res = await plain.request(MsgType.ECHO_REQ, 2, big)
    assert res.flags == 0 and res.payload == big
    await client.close()
    await plain.close()
