"""The shared Redis-failure facts (servicekit.redis_health) and the commit queue's bounded
answers during an outage, in-process: a fake clock, a fake store, a real event loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.exceptions

from gameserver.commits import CommitQueue
from gameserver.state import PlayerState, ResponseCache, Session
from protocol import ErrorCode, MsgType, decode_payload, read_header
from servicekit.redis_health import BACKOFF_BASE_S, REDIS_FAILURES, RedisHealth, RetryDelays
from tests.support.waiting import wait_until_async


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_health_logs_each_transition_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    health = RedisHealth("redis:6379", logging.getLogger("test.health"), clock)
    caplog.set_level(logging.INFO, "test.health")
    assert health.reachable and health.unreachable_for() == 0.0
    assert health.failed(ConnectionError("refused"), "retrying") is True
    clock.now += 3.0
    assert health.failed(ConnectionError("refused"), "retrying") is False
    assert not health.reachable and health.unreachable_for() == 3.0
    assert health.succeeded() is True
    assert health.succeeded() is False
    assert [r.getMessage() for r in caplog.records] == [
        "Redis is NOT reachable at redis:6379 (refused); retrying",
        "Redis is reachable again at redis:6379 (after 3.0s)",
    ]


def test_failures_include_deadlines_and_redis_errors() -> None:
    for exc in (TimeoutError(), ConnectionRefusedError(),
                redis.exceptions.ConnectionError(), redis.exceptions.TimeoutError()):
        assert isinstance(exc, REDIS_FAILURES), exc
    assert not isinstance(ValueError(), REDIS_FAILURES)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    delays = RetryDelays(cap_s=1.0)
    seen = [delays.next() for _ in range(12)]
    for failures, delay in enumerate(seen):
        step = min(1.0, BACKOFF_BASE_S * 2**failures)
        assert step / 2 <= delay <= step, (failures, delay)
    delays.reset()
    assert delays.failures == 0 and delays.next() <= BACKOFF_BASE_S
    # Two processes that failed together do not retry together.
    fleet = {round(RetryDelays(cap_s=1.0).after(8), 6) for _ in range(20)}
    assert len(fleet) > 10


# --------------------------------------------------------------------- commit queue
class FakeStore:
    """A SessionStore whose commit fails while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.committed: list[list[int]] = []

    async def commit(self, writes: Any, cache_size: int, lease_ms: int) -> dict[int, str]:
        await asyncio.sleep(0)
        if self.down:
            raise redis.exceptions.ConnectionError("Connection refused")
        self.committed.append([w.last_seq for w in writes])
        return {}


def _session() -> Session:
    return Session(session_id=7, user_id=42, epoch=1, last_seq=0, cache=ResponseCache(8),
                   player=PlayerState(), gateway_id=b"gw", socket_id=b"s" * 16)


def _decode(frame: bytes) -> tuple[int, int, dict[str, Any]]:
    header = read_header(frame)
    return header.msg_type, header.sequence_id, decode_payload(frame, header.flags, 1 << 20)


async def _queue(store: FakeStore, sent: list[bytes], bound_s: float) -> CommitQueue:
    health = RedisHealth("fake", logging.getLogger("test.commits"))
    return CommitQueue(store, lambda s, r: sent.append(r), lambda s, r: None,  # type: ignore[arg-type]
                       cache_size=8, lease_ms=1000, max_pending=100, health=health,
                       answer_within_s=bound_s)


async def test_held_answers_are_bounded_in_order_and_the_real_one_comes_on_retry() -> None:
    store, sent = FakeStore(), []
    sent_frames: list[bytes] = sent
    queue = await _queue(store, sent_frames, bound_s=0.2)
    session = _session()
    store.down = True
    move = b"MOVE_RES-5"
    session.last_seq = 5
    queue.add(session, 5, move)
    session.cache.put(5, move)
    echo = b"ECHO_RES-6"
    queue.hold(session, echo, 6)  # behind the held MOVE, waits only for its turn
    await wait_until_async(lambda: len(sent_frames) == 2, timeout=10)
    msg_type, seq, payload = _decode(sent_frames[0])
    assert (msg_type, seq, payload["code"]) == (MsgType.ERROR_RES, 5,
                                                ErrorCode.SERVER_UNAVAILABLE)
    assert sent_frames[1] == echo  # in order, and the ECHO is answered too
    assert queue.redis_down and session.held == 0 and 5 in session.uncommitted

    # A retry of seq 5 while Redis is still down joins the wait and is bounded too.
    queue.hold(session, move, 5, durable=True)
    await wait_until_async(lambda: len(sent_frames) == 3, timeout=10)
    assert _decode(sent_frames[2])[:2] == (MsgType.ERROR_RES, 5)

    store.down = False
    await wait_until_async(lambda: not session.uncommitted, timeout=10)
    assert store.committed[0] == [5] and not queue.redis_down
    assert move not in sent_frames  # the real answer of a request answered already: never
    queue.hold(session, move, 5, durable=True)  # the client's next retry gets it
    await wait_until_async(lambda: sent_frames[-1] == move, timeout=10)


async def test_a_healthy_commit_sends_the_real_answer_and_expires_nothing() -> None:
    store, sent = FakeStore(), []
    sent_frames: list[bytes] = sent
    queue = await _queue(store, sent_frames, bound_s=0.05)
    session = _session()
    queue.add(session, 1, b"MOVE_RES-1")
    queue.hold(session, b"ECHO_RES-2", 2)
    await wait_until_async(lambda: len(sent_frames) == 2, timeout=10)
    assert sent_frames == [b"MOVE_RES-1", b"ECHO_RES-2"]
    await asyncio.sleep(0.1)  # past the bound: nothing more may arrive
    assert sent_frames == [b"MOVE_RES-1", b"ECHO_RES-2"] and session.held == 0
