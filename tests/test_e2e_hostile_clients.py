"""Hostile clients against real processes: a slow reader, a flooder, a client that never
logs in, a decompression bomb. Each one is contained, and a bystander keeps being served.

The same rules are unit-tested in tests/test_gateway_relay.py; here they are proven end to
end, through real sockets, a real Gateway and a real GameServer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import lz4.frame
import pytest

from protocol import FLAG_LZ4, ErrorCode, KickReason, MsgType, encode_frame, encode_message
from tests.support.bystander import Bystander
from tests.support.cluster import Cluster
from tests.support.procstat import peak_rss_bytes
from tests.support.raw import RawClient
from tests.support.users import new_user_id
from tests.support.waiting import wait_until_async

#: The bystander echoes this often, like a game client's heartbeat, and must never wait
#: a second for an answer.
BYSTANDER_PERIOD_S = 0.05
BYSTANDER_MAX_ROUND_TRIP_S = 1.0


@contextlib.asynccontextmanager
async def bystander(cluster: Cluster) -> AsyncIterator[Bystander]:
    watcher = await Bystander.start(cluster.gateway_address, BYSTANDER_PERIOD_S,
                                    BYSTANDER_MAX_ROUND_TRIP_S)
    try:
        yield watcher
    finally:
        await watcher.stop()
    assert not watcher.problems, watcher.problems
    assert watcher.round_trips, "the bystander got no answer at all"


def peak_rss_mb(pid: int) -> float:
    return peak_rss_bytes(pid) / (1 << 20)


def metric(cluster: Cluster, sample: str) -> float:
    return cluster.gateway.process.metric(sample)


# ----------------------------------------------------------------- slow reader
async def test_slow_reader_flooding_requests_is_contained(system_factory) -> None:  # type: ignore[no-untyped-def]
    """The case from the issue: logged in, never reads, writes 16 KB ECHOs flat out.

    Before the in-flight window the Gateway read 42 MB from such a client and the services
    grew by 106 MB. Now it reads at most a window ahead of the answers, the answers pile up
    in its send buffer, and the client is disconnected at GATEWAY_MAX_SEND_BUFFER_BYTES.
    """
    cluster = system_factory(env={"CLIENT_RATE_LIMIT": "0"})
    pids = [cluster.gateway.process.pid, cluster.gameserver.process.pid]
    async with bystander(cluster) as watcher:
        await asyncio.sleep(0.3)  # warm: a few echoes before the baseline is read
        peak_before = [peak_rss_mb(pid) for pid in pids if pid]
        flood = socket.socket()
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        flood.connect(cluster.gateway_address)
        flood.setblocking(False)
        login = encode_message(MsgType.LOGIN_REQ, 1, {"user_id": new_user_id()})
        frame = encode_message(MsgType.ECHO_REQ, 0, {"data": "x" * 16_000})
        pending = login + frame * 64
        sent = 0
        closed = False
        deadline = time.monotonic() + 60
        loop = asyncio.get_running_loop()
        while not closed and time.monotonic() < deadline:
            try:
                written = flood.send(pending)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            sent += written
            pending = pending[written:] or frame * 64
            await asyncio.sleep(0)
        flood.close()
        assert closed, f"the flooder was never disconnected (sent {sent} bytes)"
        await loop.run_in_executor(None, lambda: None)
        peak_after = [peak_rss_mb(pid) for pid in pids if pid]
    growth = [after - before for before, after in zip(peak_before, peak_after, strict=True)]
    print(f"slow reader: sent {sent / 1e6:.1f} MB before being disconnected; peak RSS growth "
          f"Gateway {growth[0]:.1f} MB, GameServer {growth[1]:.1f} MB; bystander worst "
          f"{max(watcher.round_trips) * 1000:.1f} ms over {len(watcher.round_trips)} echoes")
    assert max(growth) < 20, f"peak RSS grew by {growth} MB (Gateway, GameServer)"
    assert metric(cluster, "gateway_backpressure_disconnects_total") >= 1
    assert metric(cluster, "gateway_reading_pauses_total") >= 1


# ----------------------------------------------------------------- rate limit
RATE_ENV = {"CLIENT_RATE_LIMIT": "50", "CLIENT_RATE_BURST": "20", "RATE_LIMIT_KICK_S": "2",
            "LOGIN_TIMEOUT_S": "2"}


@pytest.fixture(scope="module")
def limited(redis_server, tmp_path_factory) -> AsyncIterator[Cluster]:  # type: ignore[no-untyped-def]
    """A system with a low rate limit and a short login timeout, shared by the tests below."""
    redis_server.flush()
    cluster = Cluster(redis_server, tmp_path_factory.mktemp("limited"), env=RATE_ENV)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def test_frames_over_the_rate_get_rate_limited_with_their_sequence_id(
    limited: Cluster,
) -> None:
    async with bystander(limited):
        client = await RawClient.connect(limited.gateway_address)
        await client.login(new_user_id())
        burst = b"".join(encode_message(MsgType.ECHO_REQ, seq, {"n": seq})
                         for seq in range(2, 42))
        await client.send(burst)
        answers = [await client.next_frame() for _ in range(40)]
        echoed = sorted(f.sequence_id for f in answers if f.msg_type == MsgType.ECHO_RES)
        limited_ids = sorted(f.sequence_id for f in answers if f.msg_type == MsgType.ERROR_RES)
        assert all(f.payload["code"] == ErrorCode.RATE_LIMITED
                   for f in answers if f.msg_type == MsgType.ERROR_RES)
        assert echoed and limited_ids, answers
        assert sorted(echoed + limited_ids) == list(range(2, 42))
        # A refused request is retried as it was, and goes through once the bucket refills.
        retry = limited_ids[0]
        frame = await wait_until_async(
            lambda: _retry(client, retry), timeout=5, message="retry accepted")
        assert frame.msg_type == MsgType.ECHO_RES
        await client.close()


async def _retry(client: RawClient, seq: int) -> object:
    frame = await client.request(MsgType.ECHO_REQ, seq, {"n": seq})
    if frame.msg_type == MsgType.ERROR_RES:
        await asyncio.sleep(0.1)
        return None
    return frame


async def test_a_client_staying_over_the_limit_is_kicked(limited: Cluster) -> None:
    kicked_before = metric(limited, 'gateway_disconnects_total{reason="rate_limited"}')
    async with bystander(limited):
        client = await RawClient.connect(limited.gateway_address)
        await client.login(new_user_id())

        async def flood() -> None:
            seq = 1
            with contextlib.suppress(ConnectionError, OSError):
                while True:
                    seq += 1
                    await client.send_msg(MsgType.ECHO_REQ, seq, {"n": seq})
                    await asyncio.sleep(0.005)  # ~200/s against 50/s

        flooder = asyncio.create_task(flood())
        frames = await client.wait_closed(timeout=15)
        flooder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flooder
        assert frames[-1].msg_type == MsgType.KICKOUT_NTF, frames[-3:]
        assert frames[-1].payload == {"reason": KickReason.RATE_LIMITED}
        assert any(f.msg_type == MsgType.ERROR_RES for f in frames)
    assert metric(limited, 'gateway_disconnects_total{reason="rate_limited"}') == kicked_before + 1


# ----------------------------------------------------------------- login timeout
async def test_no_login_within_login_timeout_is_kicked_even_while_pinging(
    limited: Cluster,
) -> None:
    async with bystander(limited):
        client = await RawClient.connect(limited.gateway_address)
        started = time.monotonic()

        async def ping() -> None:
            seq = 0
            with contextlib.suppress(ConnectionError, OSError):
                while True:
                    seq += 1
                    await client.send_msg(MsgType.PING_REQ, seq, {"client_time_ms": seq})
                    await asyncio.sleep(0.2)

        pinger = asyncio.create_task(ping())
        frames = await client.wait_closed(timeout=15)
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinger
        # Not before LOGIN_TIMEOUT_S (2 s), counted by the Gateway from its accept, which may
        # come a moment before our connect() returned.
        assert time.monotonic() - started >= 1.9
        # Each PING was answered (NOT_LOGGED_IN: a session comes first), and kept nothing open.
        assert [f.payload.get("code") for f in frames[:-1]] == [ErrorCode.NOT_LOGGED_IN] * (
            len(frames) - 1) and len(frames) > 5, frames
        assert frames[-1].msg_type == MsgType.KICKOUT_NTF
        assert frames[-1].payload == {"reason": KickReason.LOGIN_TIMEOUT}


# ----------------------------------------------------------------- decompression bomb
async def test_a_decompression_bomb_is_bad_payload_and_the_connection_stays(
    limited: Cluster,
) -> None:
    """12 MiB of JSON in a 48 KiB frame, once with its size in the LZ4 frame header."""
    client = await RawClient.connect(limited.gateway_address)
    await client.login(new_user_id(), accept_compression=["lz4"])
    pid = limited.gameserver.process.pid
    assert pid is not None
    peak_before = peak_rss_mb(pid)
    inflated = b'{"a":"' + b"0" * (12 << 20) + b'"}'
    bombs = [lz4.frame.compress(inflated), lz4.frame.compress(inflated, store_size=True)]
    for seq, bomb in enumerate(bombs, start=2):
        assert len(bomb) < 65536
        await client.send(encode_frame(MsgType.ECHO_REQ, seq, bomb, FLAG_LZ4))
        answer = await client.next_frame()
        assert (answer.msg_type, answer.sequence_id) == (MsgType.ERROR_RES, seq), answer
        assert answer.payload["code"] == ErrorCode.BAD_PAYLOAD
    echo = await client.request(MsgType.ECHO_REQ, 9, {"still": "open"})
    assert echo.payload == {"still": "open"}
    assert peak_rss_mb(pid) - peak_before < 8
    await client.close()
