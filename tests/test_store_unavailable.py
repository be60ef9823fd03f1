"""gameserver.context.store_unavailable_as_reject: a Redis failure inside a request becomes
an answer (Reject SERVER_UNAVAILABLE), logged with its reason, which for a bare timeout is
the exception's name rather than an empty string."""

from __future__ import annotations

import logging

import pytest
import redis.exceptions

from gameserver.context import Reject, store_unavailable_as_reject
from protocol.messages import ErrorCode

log = logging.getLogger("test.store_unavailable")


@pytest.mark.parametrize(("failure", "reason"), [
    (TimeoutError(), "TimeoutError"),
    (redis.exceptions.ConnectionError("Connection refused"), "Connection refused"),
    (ConnectionResetError(104, "reset"), "[Errno 104] reset"),
])
def test_a_redis_failure_is_answered_and_logged_with_its_reason(
        caplog: pytest.LogCaptureFixture, failure: Exception, reason: str) -> None:
    with (caplog.at_level(logging.ERROR, log.name), pytest.raises(Reject) as rejected,
          store_unavailable_as_reject(log, "Login failed, Redis unavailable: UserId=%d", 7)):
        raise failure
    assert rejected.value.code == ErrorCode.SERVER_UNAVAILABLE
    assert caplog.messages == [f"Login failed, Redis unavailable: UserId=7: {reason}"]


def test_other_errors_pass_through_and_silence_is_possible(
        caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(KeyError), store_unavailable_as_reject(log, "x"):
        raise KeyError("not a Redis failure")
    with (caplog.at_level(logging.ERROR, log.name), pytest.raises(Reject),
          store_unavailable_as_reject()):
        raise TimeoutError()
    assert caplog.messages == []
