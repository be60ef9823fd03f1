"""servicekit.fdlimit: the soft open-file limit goes up to the hard one, and says so.

Raising a limit changes the process it runs in, so the raising itself is checked in a child
Python started with a lowered soft limit; the log line and the warning in this process.
"""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys

import pytest

from servicekit.fdlimit import (
    FD_RESERVE,
    UNLIMITED_CAP,
    NofileLimit,
    apply_nofile_limit,
    connections_allowed,
    describe_nofile_limit,
    raise_nofile_limit,
    target_soft_limit,
)

CHILD = (
    "import json, resource; from servicekit.fdlimit import raise_nofile_limit; "
    "limit = raise_nofile_limit(); "
    "print(json.dumps([list(limit), list(resource.getrlimit(resource.RLIMIT_NOFILE))]))"
)


def raise_in_child(soft: int) -> tuple[NofileLimit, tuple[int, int]]:
    """Run :func:`raise_nofile_limit` in a child whose soft limit starts at ``soft``."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          preexec_fn=lower, timeout=30, check=True)
    reported, now = json.loads(done.stdout)
    return NofileLimit(*reported), (now[0], now[1])


def test_soft_limit_is_raised_to_the_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"hard RLIMIT_NOFILE is {hard}: nothing to raise a 512 soft limit to")
    limit, now = raise_in_child(512)
    assert limit == NofileLimit(512, target_soft_limit(hard), hard)
    assert now == (target_soft_limit(hard), hard)


def test_a_soft_limit_already_at_the_hard_limit_is_left_alone() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("the hard limit is unlimited: the soft limit cannot start equal to it")
    limit, now = raise_in_child(hard)
    assert limit == NofileLimit(hard, hard, hard)
    assert now == (hard, hard)


def test_an_unlimited_hard_limit_gives_a_finite_soft_target() -> None:
    assert target_soft_limit(resource.RLIM_INFINITY) == UNLIMITED_CAP
    assert target_soft_limit(4096) == 4096


def test_the_log_line_gives_before_after_and_hard() -> None:
    assert (describe_nofile_limit(NofileLimit(1024, 1048576, 1048576))
            == "File descriptor limit: soft 1024 -> 1048576 (hard 1048576)")
    assert (describe_nofile_limit(NofileLimit(4096, 4096, 4096))
            == "File descriptor limit: soft 4096 (hard 4096)")
    unlimited = NofileLimit(1024, UNLIMITED_CAP, resource.RLIM_INFINITY)
    assert describe_nofile_limit(unlimited).endswith("(hard unlimited)")


def test_connections_allowed_leaves_room_for_other_descriptors() -> None:
    assert connections_allowed(NofileLimit(1024, 20000, 20000)) == 20000 - FD_RESERVE
    assert connections_allowed(NofileLimit(100, 100, 100)) == 0


def test_apply_logs_the_limit_and_warns_only_when_max_connections_does_not_fit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.fdlimit")
    caplog.set_level(logging.INFO, logger="test.fdlimit")
    limit = raise_nofile_limit()  # this process's own limit, as the services have it
    allowed = connections_allowed(limit)

    apply_nofile_limit(log, allowed, "GATEWAY_MAX_CONNECTIONS")
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert caplog.records[0].getMessage() == describe_nofile_limit(
        NofileLimit(limit.soft, limit.soft, limit.hard))

    caplog.clear()
    apply_nofile_limit(log, allowed + 1, "GATEWAY_MAX_CONNECTIONS")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"GATEWAY_MAX_CONNECTIONS={allowed + 1} exceeds")
    assert f"about {allowed} client connections" in warnings[0]
