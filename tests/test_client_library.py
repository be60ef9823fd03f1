"""GameClient against the echo server running as a real subprocess (real sockets, real loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from protocol import ErrorCode, MsgType
from test_client import GameClient, NotConnected, RequestError
from test_client.testing import EchoServerProcess, free_port


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoServerProcess]:
    with EchoServerProcess() as server:
        yield server


async def test_login_echo_ping_logout(echo_server: EchoServerProcess) -> None:
    client = GameClient(*echo_server.endpoint)
    result = await client.login(42)
    assert result["ok"] is True
    assert client.logged_in
    assert client.user_id == 42
    assert client.session_id == result["session_id"]
    assert client.reconnect_key == result["reconnect_key"]
    assert client.node_id == 0
    assert client.last_login == result

    assert await client.echo({"text": "hi", "n": [1, 2]}) == {"text": "hi", "n": [1, 2]}
    pong = await client.ping()
    assert pong["server_time_ms"] > 0
    assert pong["rtt_ms"] >= 0

    assert await client.logout() == {"ok": True}
    async with asyncio.timeout(5):
        await client.wait_disconnected()
    # (connected, logged in, resuming): never resume after a logout
    assert (client.connected, client.logged_in, client.resuming) == (False, False, False)
    with pytest.raises(NotConnected):
        await client.echo({})
    await client.close()


async def test_sequence_ids_are_monotonic_and_explicit_ids_advance_them(
    echo_server: EchoServerProcess,
) -> None:
    async with GameClient(*echo_server.endpoint) as client:
        assert client.peek_sequence_id() == 1
        await client.login(7)
        assert client.peek_sequence_id() == 2
        await client.echo({})
        assert client.peek_sequence_id() == 3
        assert await client.request(MsgType.ECHO_REQ, {"a": 1}, seq=0) == (
            MsgType.ECHO_RES,
            {"a": 1},
        )
        assert client.peek_sequence_id() == 3  # seq 0 opts out and takes no id
        await client.request(MsgType.ECHO_REQ, {}, seq=100)
        assert client.peek_sequence_id() == 101


async def test_error_res_is_returned_by_request_and_raised_by_typed_calls(
    echo_server: EchoServerProcess,
) -> None:
    async with GameClient(*echo_server.endpoint) as client:
        await client.login(8)
        msg_type, payload = await client.request(MsgType.MOVE_REQ, {"x": 1, "y": 2})
        assert msg_type == MsgType.ERROR_RES
        assert payload["code"] == ErrorCode.UNKNOWN_MESSAGE_TYPE
        with pytest.raises(RequestError) as caught:
            await client.move(1, 2)
        assert caught.value.code == ErrorCode.UNKNOWN_MESSAGE_TYPE


async def test_many_concurrent_requests_each_get_their_own_answer(
    echo_server: EchoServerProcess,
) -> None:
    async with GameClient(*echo_server.endpoint) as client:
        await client.login(9)
        answers = await asyncio.gather(*(client.echo({"i": i}) for i in range(300)))
        assert answers == [{"i": i} for i in range(300)]
        assert client.pending_count == 0


async def test_malformed_frame_makes_the_server_close(echo_server: EchoServerProcess) -> None:
    client = GameClient(*echo_server.endpoint, auto_reconnect=False)
    await client.login(10)
    client.send_raw(b"\x00\x00\x00\x01")  # length 1 < 8: a framing violation
    async with asyncio.timeout(5):
        await client.wait_disconnected()
    assert not client.connected
    with pytest.raises(NotConnected):
        client.send_raw(b"x")
    await client.close()


async def test_connect_failure_names_the_endpoint() -> None:
    port = free_port()
    client = GameClient("127.0.0.1", port, connect_timeout=2)
    with pytest.raises(NotConnected, match=f"127.0.0.1:{port}") as caught:
        await client.connect()
    assert isinstance(caught.value, ConnectionError)


async def test_connect_fails_over_to_the_next_gateway(echo_server: EchoServerProcess) -> None:
    dead = ("127.0.0.1", free_port())
    async with GameClient(*dead, gateways=[echo_server.endpoint]) as client:
        assert client.endpoint == echo_server.endpoint
        assert (await client.login(11))["ok"] is True


async def test_refused_reconnect_raises_the_server_code(echo_server: EchoServerProcess) -> None:
    async with GameClient(*echo_server.endpoint) as client:
        await client.login(12)
        with pytest.raises(RequestError) as caught:
            await client.reconnect()  # the echo server keeps no sessions
        assert caught.value.code == ErrorCode.INVALID_SESSION
        assert not client.logged_in
