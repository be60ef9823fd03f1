"""The client reassembles frames however TCP splits or merges them.

The byte stream is fed straight into the client's ``asyncio.Protocol`` (the standard way to
unit-test a protocol), in random chunks down to single bytes, so every split point is covered
deterministically; the socketpair underneath only carries the client's requests.
"""

from __future__ import annotations

import asyncio
import random
import socket

from protocol import FrameSplitter, MsgType, encode_message, read_header
from test_client import GameClient, Push

REQUESTS = 5


def random_chunks(data: bytes, rng: random.Random) -> list[bytes]:
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.choice((1, 2, 3, 7, 12, 13, 50, 4096))
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


async def read_requests(peer: socket.socket, count: int) -> list[tuple[int, int]]:
    """``(msg_type, seq)`` of the next ``count`` frames the client wrote."""
    loop = asyncio.get_running_loop()
    splitter = FrameSplitter()
    frames: list[bytes] = []
    async with asyncio.timeout(5):
        while len(frames) < count:
            frames += splitter.feed(await loop.sock_recv(peer, 65536))
    return [(read_header(f).msg_type, read_header(f).sequence_id) for f in frames]


async def test_frames_split_at_every_possible_point_are_reassembled() -> None:
    rng = random.Random(1234)
    mine, peer = socket.socketpair()
    peer.setblocking(False)
    client = GameClient(request_timeout=10)
    await client.connect(sock=mine)
    connection = client.connection
    assert connection is not None
    try:
        for round_no in range(60):
            first_seq = client.peek_sequence_id()
            tasks = [
                asyncio.create_task(client.echo({"round": round_no, "i": i, "pad": "y" * i * 300}))
                for i in range(REQUESTS)
            ]
            requests = await read_requests(peer, REQUESTS)
            assert sorted(requests) == [(MsgType.ECHO_REQ, first_seq + i) for i in range(REQUESTS)]
            # Answers out of order, one LZ4-compressed, with a push in between.
            answers = [
                encode_message(
                    MsgType.ECHO_RES,
                    first_seq + i,
                    {"round": round_no, "i": i, "pad": "y" * i * 300},
                    compress_above=0 if i == 3 else None,
                )
                for i in range(REQUESTS)
            ]
            rng.shuffle(answers)
            push = encode_message(MsgType.WHISPER_NTF, 0, {"from_user_id": 2, "text": "hi"})
            stream = b"".join(answers[:2]) + push + b"".join(answers[2:])
            chunks = [stream[i : i + 1] for i in range(len(stream))]
            if round_no % 2:
                chunks = random_chunks(stream, rng)
            for chunk in chunks:
                connection.data_received(chunk)
            async with asyncio.timeout(5):
                results = await asyncio.gather(*tasks)
            assert results == [
                {"round": round_no, "i": i, "pad": "y" * i * 300} for i in range(REQUESTS)
            ]
            assert client.pushes.get_nowait() == Push(
                MsgType.WHISPER_NTF, {"from_user_id": 2, "text": "hi"}
            )
            assert connection.splitter.buffered == 0
        assert client.pending_count == 0
    finally:
        await client.close()
        peer.close()


async def test_a_framing_violation_from_the_server_drops_the_connection() -> None:
    mine, peer = socket.socketpair()
    client = GameClient(auto_reconnect=False)
    await client.connect(sock=mine)
    connection = client.connection
    assert connection is not None
    connection.data_received(b"\x00\x00\x00\x02")  # length 2 < 8
    async with asyncio.timeout(5):
        await client.wait_disconnected()
    assert not client.connected
    await client.close()
    peer.close()
