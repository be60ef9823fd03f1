"""Bad input gets its documented answer, and everybody else keeps being served."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import lz4.frame
import pytest

from protocol import FLAG_LZ4, ErrorCode, KickReason, MsgType, encode_frame
from protocol.frame import HEADER
from protocol.payload import encode_message
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.users import new_user_id
from tests.support.waiting import wait_until_async


@pytest.fixture
async def bystander(system: Cluster) -> AsyncIterator[RawClient]:
    """A logged-in client that must keep working whatever the others send."""
    client = await RawClient.connect(system.gateway_address)
    await client.login(new_user_id())
    client.seq = 1  # type: ignore[attr-defined]
    yield client
    await still_served(client)
    await client.close()


async def still_served(client: RawClient) -> None:
    client.seq += 1  # type: ignore[attr-defined]
    seq = client.seq  # type: ignore[attr-defined]
    res = await client.request(MsgType.ECHO_REQ, seq, {"alive": seq})
    assert (res.msg_type, res.sequence_id, res.payload) == (MsgType.ECHO_RES, seq,
                                                            {"alive": seq})


def raw_header(length: int, msg_type: int = MsgType.ECHO_REQ, flags: int = 0,
               reserved: int = 0, seq: int = 5) -> bytes:
    return HEADER.pack(length, msg_type, flags, reserved, seq)


@pytest.mark.parametrize(
    ("label", "data"),
    [
        ("length below 8", struct.pack(">I", 4) + b"\x00" * 4),
        ("length zero", struct.pack(">I", 0)),
        ("length over MAX_FRAME_BYTES, no body sent", struct.pack(">I", 10_000_000)),
        ("length just over the default max", raw_header(65537)),
        ("unknown flag bit", raw_header(8, flags=0x02)),
        ("nonzero reserved byte", raw_header(8, reserved=1)),
    ],
)
async def test_framing_violation_kicks_with_protocol_error(
    system: Cluster, bystander: RawClient, label: str, data: bytes
) -> None:
    client = await RawClient.connect(system.gateway_address)
    await client.login(new_user_id())
    await client.send(data)
    frames = await client.wait_closed()
    assert [f.payload for f in frames] == [{"reason": KickReason.PROTOCOL_ERROR}], label
    assert frames[0].msg_type == MsgType.KICKOUT_NTF
    await still_served(bystander)


async def test_frames_before_a_violation_are_still_forwarded(system: Cluster) -> None:
    """The violation ends the connection at once, but what came before it is not lost."""
    user = new_user_id()
    client = await RawClient.connect(system.gateway_address)
    await client.login(user)
    good = encode_message(MsgType.MOVE_REQ, 2, {"x": 8, "y": 9})
    await client.send(good + raw_header(8, reserved=7))
    frames = await client.wait_closed()
    assert [(f.msg_type, f.payload) for f in frames] == [
        (MsgType.KICKOUT_NTF, {"reason": KickReason.PROTOCOL_ERROR}),
    ]

    async def state_after_relogin() -> dict[str, object]:
        again = await RawClient.connect(system.gateway_address)
        state: dict[str, object] = (await again.login(user)).payload["state"]
        await again.close()
        return state

    state = await wait_until_async(
        lambda: _moved(state_after_relogin), timeout=10,
        message="the MOVE sent before the bad frame was not applied")
    assert state == {"x": 8.0, "y": 9.0, "moves": 1}


async def _moved(fetch):  # type: ignore[no-untyped-def]
    state = await fetch()
    return state if state["moves"] == 1 else None


@pytest.mark.parametrize(
    ("label", "frame", "code"),
    [
        ("invalid JSON", encode_frame(MsgType.ECHO_REQ, 7, b"{not json"), ErrorCode.BAD_PAYLOAD),
        ("JSON array", encode_frame(MsgType.ECHO_REQ, 7, b"[1, 2]"), ErrorCode.BAD_PAYLOAD),
        ("JSON number", encode_frame(MsgType.ECHO_REQ, 7, b"42"), ErrorCode.BAD_PAYLOAD),
        ("invalid UTF-8", encode_frame(MsgType.ECHO_REQ, 7, b'{"a": "\xff\xfe"}'),
         ErrorCode.BAD_PAYLOAD),
        ("broken LZ4", encode_frame(MsgType.ECHO_REQ, 7, b"not lz4 at all", FLAG_LZ4),
         ErrorCode.BAD_PAYLOAD),
        ("truncated LZ4", encode_frame(MsgType.ECHO_REQ, 7,
                                       lz4.frame.compress(b'{"a": 1}' * 50)[:-6], FLAG_LZ4),
         ErrorCode.BAD_PAYLOAD),
        ("LZ4 inflating beyond MAX_FRAME_BYTES", encode_frame(
            MsgType.ECHO_REQ, 7, lz4.frame.compress(b'{"a": "' + b"x" * 100_000 + b'"}'),
            FLAG_LZ4), ErrorCode.BAD_PAYLOAD),
        ("unknown type", encode_message(999, 7, {}), ErrorCode.UNKNOWN_MESSAGE_TYPE),
        ("a response type", encode_message(MsgType.ECHO_RES, 7, {}),
         ErrorCode.UNKNOWN_MESSAGE_TYPE),
        ("MOVE with a string", encode_message(MsgType.MOVE_REQ, 7, {"x": "1", "y": 2}),
         ErrorCode.BAD_PAYLOAD),
        ("MOVE with a bool", encode_message(MsgType.MOVE_REQ, 7, {"x": True, "y": 2}),
         ErrorCode.BAD_PAYLOAD),
        ("MOVE missing y", encode_message(MsgType.MOVE_REQ, 7, {"x": 1}), ErrorCode.BAD_PAYLOAD),
        ("PING without time", encode_message(MsgType.PING_REQ, 7, {}), ErrorCode.BAD_PAYLOAD),
        ("WHISPER to nobody", encode_message(MsgType.WHISPER_REQ, 7, {"text": "x"}),
         ErrorCode.BAD_PAYLOAD),
    ],
)
async def test_bad_request_gets_error_and_connection_stays(
    system: Cluster, bystander: RawClient, label: str, frame: bytes, code: ErrorCode
) -> None:
    client = await RawClient.connect(system.gateway_address)
    await client.login(new_user_id())
    await client.send(frame)
    err = await client.expect(MsgType.ERROR_RES, 7)
    assert err.payload["code"] == code, label
    assert isinstance(err.payload["message"], str) and err.payload["message"]
    res = await client.request(MsgType.ECHO_REQ, 8, {"after": label})
    assert res.payload == {"after": label}
    await still_served(bystander)
    await client.close()


@pytest.mark.parametrize("msg_type", [MsgType.ECHO_REQ, MsgType.MOVE_REQ, MsgType.LOGOUT_REQ,
                                      MsgType.WHISPER_REQ, MsgType.PING_REQ])
async def test_requests_before_login_get_not_logged_in(
    system: Cluster, bystander: RawClient, msg_type: MsgType
) -> None:
    client = await RawClient.connect(system.gateway_address)
    err = await client.request(msg_type, 3, {"x": 1, "y": 1})
    assert (err.msg_type, err.sequence_id) == (MsgType.ERROR_RES, 3)
    assert err.payload["code"] == ErrorCode.NOT_LOGGED_IN
    await client.login(new_user_id(), seq=4)
    await client.close()


@pytest.mark.parametrize("payload", [{}, {"user_id": 0}, {"user_id": -3}, {"user_id": "42"},
                                     {"user_id": 1.5}, {"user_id": True},
                                     {"user_id": 5, "accept_compression": "lz4"}])
async def test_login_with_bad_payload(system: Cluster, payload: dict[str, object]) -> None:
    client = await RawClient.connect(system.gateway_address)
    err = await client.request(MsgType.LOGIN_REQ, 1, payload)
    assert err.msg_type == MsgType.ERROR_RES
    assert err.payload["code"] == ErrorCode.BAD_PAYLOAD
    await client.login(new_user_id(), seq=2)
    await client.close()


async def test_second_login_on_same_socket_is_refused(system: Cluster) -> None:
    client = await RawClient.connect(system.gateway_address)
    user = new_user_id()
    await client.login(user)
    again = await client.request(MsgType.LOGIN_REQ, 2, {"user_id": user})
    assert again.msg_type == MsgType.LOGIN_RES
    assert again.payload["ok"] is False and again.payload["error"] == "ALREADY_LOGGED_IN"
    assert (await client.request(MsgType.ECHO_REQ, 3, {"a": 1})).payload == {"a": 1}
    await client.close()


async def test_frame_split_at_every_byte_and_many_per_chunk(system: Cluster) -> None:
    client = await RawClient.connect(system.gateway_address)
    login = encode_message(MsgType.LOGIN_REQ, 1, {"user_id": new_user_id()})
    for i in range(len(login)):
        await client.send(login[i:i + 1])
    assert (await client.expect(MsgType.LOGIN_RES, 1)).payload["ok"] is True
    burst = b"".join(encode_message(MsgType.ECHO_REQ, seq, {"n": seq})
                     for seq in range(2, 52))
    await client.send(burst)
    for seq in range(2, 52):
        res = await client.expect(MsgType.ECHO_RES, seq)
        assert res.payload == {"n": seq}
    await client.close()


async def test_client_that_does_not_read_is_disconnected(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(env={"GATEWAY_MAX_SEND_BUFFER_BYTES": "65536"})
    bystander = await RawClient.connect(cluster.gateway_address)
    await bystander.login(new_user_id())

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, cluster.gateway_address)
    _, writer = await asyncio.open_connection(sock=sock)
    writer.write(encode_message(MsgType.LOGIN_REQ, 1, {"user_id": new_user_id()}))
    payload = {"blob": "z" * 30_000}
    frame_seq = 2

    def disconnected_for_backpressure() -> bool:
        text = cluster.gateway.process.metrics_text()
        return "gateway_backpressure_disconnects_total 1.0" in text

    async def flood() -> None:
        nonlocal frame_seq
        try:
            while True:
                writer.write(encode_message(MsgType.ECHO_REQ, frame_seq, payload))
                frame_seq += 1
                await writer.drain()
        except (ConnectionError, OSError):
            return

    flooding = asyncio.create_task(flood())
    await wait_until_async(disconnected_for_backpressure, timeout=30,
                           message="the Gateway did not disconnect the non-reading client")
    # Meanwhile everyone else is served normally.
    res = await bystander.request(MsgType.ECHO_REQ, 2, {"fine": True})
    assert res.payload == {"fine": True}
    flooding.cancel()
    writer.close()
    await bystander.close()
