"""The shared Redis-failure facts (servicekit.redis_health, and the causes sorted by
servicekit.redis_problems) and the commit queue's bounded answers during an outage,
in-process: a fake clock, a fake store, a real event loop."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import pytest
import redis.exceptions

from gameserver.commits import CommitQueue
from gameserver.state import PlayerState, ResponseCache, Session
from protocol import ErrorCode, MsgType, decode_payload, read_header
from servicekit.redis_health import BACKOFF_BASE_S, REDIS_FAILURES, RedisHealth, RetryDelays
from servicekit.redis_problems import (
    CERTIFICATE,
    CREDENTIALS,
    HANDSHAKE,
    PERMISSION,
    UNREACHABLE,
    diagnose,
)
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


def _wrapped(cause: BaseException) -> redis.exceptions.ConnectionError:
    """What redis-py raises: its ConnectionError, raised while handling ``cause``."""
    try:
        try:
            raise cause
        except Exception as exc:
            raise redis.exceptions.ConnectionError(f"Error 1 connecting to h:1. {exc}.") from None
    except redis.exceptions.ConnectionError as wrapped:
        wrapped.__context__ = cause
        return wrapped


def _verify_error() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                                            "verify failed: self-signed certificate")
    error.verify_message = "self-signed certificate in certificate chain"
    return error


@pytest.mark.parametrize("exc, tls, kind", [
    (redis.exceptions.AuthenticationError("invalid username-password pair or user is "
                                          "disabled."), False, CREDENTIALS),
    (redis.exceptions.ResponseError("WRONGPASS invalid username-password pair"), False,
     CREDENTIALS),
    (redis.exceptions.NoPermissionError("this user has no permissions to run the 'evalsha' "
                                        "command"), False, PERMISSION),
    (redis.exceptions.ResponseError("The user executing the script can't run this command or "
                                    "subcommand script: 89ab, on @user_script:1."), False,
     PERMISSION),
    (_wrapped(_verify_error()), True, CERTIFICATE),
    (_wrapped(ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert")), True,
     HANDSHAKE),
    (_wrapped(ConnectionResetError(104, "Connection reset by peer")), True, HANDSHAKE),
    (_wrapped(ConnectionResetError(104, "Connection reset by peer")), False, UNREACHABLE),
    (_wrapped(ConnectionRefusedError(111, "Connection refused")), True, UNREACHABLE),
    (redis.exceptions.TimeoutError("Timeout reading from h:1"), True, UNREACHABLE),
    (TimeoutError(), False, UNREACHABLE),
])
def test_failures_are_sorted_by_cause(exc: BaseException, tls: bool, kind: str) -> None:
    assert diagnose(exc, tls).kind == kind


def test_each_cause_has_its_own_clear_line_and_readiness_words() -> None:
    assert diagnose(redis.exceptions.AuthenticationError("nope.")).line("r:1") == (
        "Redis at r:1 refused our credentials (ACL user or password wrong): nope")
    problem = diagnose(_wrapped(_verify_error()), tls=True)
    assert problem.line("r:1") == (
        "Redis at r:1: TLS certificate verification failed (check REDIS_TLS_CA_FILE, and that "
        "the certificate names the host of REDIS_CONNECTION): self-signed certificate in "
        "certificate chain")
    assert problem.state == "fails TLS certificate verification"
    handshake = diagnose(_wrapped(ConnectionResetError(104, "reset")), tls=True)
    assert "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE" in handshake.line("r:1")
    assert "docs/OPERATIONS.md §1.8" in diagnose(
        redis.exceptions.NoPermissionError("no")).line("r:1")
    assert diagnose(OSError("down")).line("r:1") == "Redis is NOT reachable at r:1 (down)"


def test_a_new_cause_during_an_outage_is_logged_once_more(
    caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    health = RedisHealth("r:1", logging.getLogger("test.causes"), clock)
    caplog.set_level(logging.DEBUG, "test.causes")
    refused = ConnectionRefusedError("refused")
    wrong = redis.exceptions.AuthenticationError("invalid username-password pair")
    for exc in (refused, refused, wrong, wrong, refused, wrong):
        health.failed(exc, "retrying")
    assert health.state == "refuses our credentials"
    assert [r.getMessage() for r in caplog.records] == [
        "Redis is NOT reachable at r:1 (refused); retrying",
        "Redis at r:1 refused our credentials (ACL user or password wrong): invalid "
        "username-password pair; retrying",
    ]


def test_a_partial_acl_refusal_is_not_logged_at_every_flip(
    caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat passes, the commit is refused: the state flips at every retry, the log
    says it once (and the recovery once), until the refusal stays away a while."""
    clock = FakeClock()
    health = RedisHealth("r:1", logging.getLogger("test.flaps"), clock)
    caplog.set_level(logging.INFO, "test.flaps")
    denied = redis.exceptions.NoPermissionError("this user has no permissions to run the "
                                                "'lpush' command")
    for _ in range(20):
        assert health.failed(denied, "holding session writes and retrying") is True
        assert health.state == "denies a command to our ACL user"
        clock.now += 0.5
        assert health.succeeded() is True
        clock.now += 0.5
    assert [r.levelname for r in caplog.records] == ["ERROR", "INFO"]
    assert health.failed(ConnectionRefusedError(), "retrying")  # another cause: said
    health.succeeded()
    clock.now += 61.0  # a minute without it: a new occurrence is news again
    health.failed(denied, "holding session writes and retrying")
    assert [r.levelname for r in caplog.records] == ["ERROR", "INFO", "ERROR", "INFO", "ERROR"]


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

    async def commit(self, writes: Any, cache_size: int) -> dict[int, str]:
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
                       cache_size=8, max_pending=100, health=health,
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
