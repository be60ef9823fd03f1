"""The one home of the facts every Redis user in the services shares: what counts as a Redis
failure, whether Redis is reachable right now (logged once per transition), and how long to
wait before trying again.

Three loops watch Redis (the Gateway's discovery, the GameServer's heartbeat and its group
commit); before this module each kept its own flag, its own except tuple and its own delay
table, and they drifted apart. Retry loops of the client library and the mesh use the same
backoff, so a whole fleet that lost Redis (or a GameServer) at the same instant does not come
back in lockstep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.exceptions
from redis.backoff import AbstractBackoff, EqualJitterBackoff

from servicekit.redis_problems import CREDENTIALS, PERMISSION, RedisProblem, diagnose

#: What a call to Redis raises when Redis is down, slow or refusing: redis-py's own errors,
#: and OSError, which includes ``TimeoutError`` (so a deadline that ran out counts too).
REDIS_FAILURES: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)

#: The first retry waits between BACKOFF_BASE_S/2 and BACKOFF_BASE_S; each further failure
#: doubles the range, up to [cap/2, cap].
BACKOFF_BASE_S = 0.05
#: The default cap: a loop that has a natural period (heartbeat, discovery) caps at that.
BACKOFF_CAP_S = 1.0

#: Refusals (credentials, ACL) that come back within this many seconds of the last one are
#: not logged again: see RedisHealth.
REFUSAL_QUIET_S = 60.0


class RetryDelays:
    """How long to wait before the next attempt of one retry loop: jittered and exponential.

    Built on ``redis.backoff.EqualJitterBackoff`` (redis-py is a dependency anyway). Equal
    jitter rather than full jitter: a delay is never below half its step, so a loop never
    spins at ~0 s against a dead Redis, yet two processes that failed at the same instant
    drift apart by up to half a step on every attempt. This class only adds the failure
    count that redis-py keeps inside its ``Retry`` helper, which wants to own the call.
    """

    __slots__ = ("_backoff", "failures")

    def __init__(self, cap_s: float = BACKOFF_CAP_S, base_s: float = BACKOFF_BASE_S) -> None:
        self._backoff: AbstractBackoff = EqualJitterBackoff(cap=cap_s, base=min(base_s, cap_s))
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        delay = float(self._backoff.compute(self.failures))
        self.failures += 1
        return delay

    def after(self, failures: int) -> float:
        """The delay after ``failures`` failures, for a caller that counts them itself."""
        return float(self._backoff.compute(max(failures - 1, 0)))

    def reset(self) -> None:
        """The operation succeeded: the next failure starts from the shortest delay."""
        self.failures = 0  # (equal jitter keeps no other state)


class RedisHealth:
    """Whether Redis answered the last time a watching loop asked, and since when.

    Pure state (the clock is injected): the loops report each outcome, and the state logs
    each transition once with the services' wording, so an outage writes two lines, not one
    per attempt. Readiness, and the GameServer's refusal of new state changes, read it.

    The failure line names the cause (servicekit.redis_problems): a wrong password or CA
    reads differently from a dead Redis. A new cause during the same outage (Redis back up,
    but now refusing our password) is logged once too. A refusal is often partial: an ACL
    that lacks one command fails the group commit while the heartbeat succeeds, and the
    state would flip at every retry; a refusal already logged within ``REFUSAL_QUIET_S`` of
    the last one is therefore not logged again, and neither is the recovery that follows it.
    ``/readyz`` still tells the truth at every moment.
    """

    def __init__(self, address: str, logger: logging.Logger,
                 clock: Callable[[], float] = time.monotonic, *, tls: bool = False) -> None:
        self.address = address
        self._log = logger
        self._clock = clock
        #: rediss://: a reset connection is read as a TLS refusal (redis_problems.diagnose).
        self.tls = tls
        self.reachable = True
        self.since = clock()
        #: The cause of the last failure (None before the first one).
        self.problem: RedisProblem | None = None
        self._logged: set[str] = set()  # causes logged during this outage
        self._refused_at: dict[str, float] = {}  # refusal kind -> when it last went away
        self._quiet = False  # this outage repeats a recent refusal: its recovery is DEBUG

    @property
    def state(self) -> str:
        """``/readyz``'s words: "unreachable", "refuses our credentials", ..."""
        if self.reachable or self.problem is None:
            return "unreachable"
        return self.problem.state

    def failed(self, exc: BaseException, consequence: str) -> bool:
        """Report a failed call; True when this is the transition to unreachable.

        ``consequence``: what the caller does meanwhile, ending the log line.
        """
        problem = self.problem = diagnose(exc, self.tls)
        transition = self.reachable
        if transition:
            now = self._clock()
            self.reachable = False
            self.since = now
            self._logged = {kind for kind, at in self._refused_at.items()
                            if now - at < REFUSAL_QUIET_S}
            self._quiet = bool(self._logged)
        if problem.kind not in self._logged:
            self._logged.add(problem.kind)
            self._quiet = False
            self._log.error("%s; %s", problem.line(self.address), consequence)
        return transition

    def succeeded(self) -> bool:
        """Report a successful call; True when this is the transition back to reachable."""
        if self.reachable:
            return False
        now = self._clock()
        self.reachable = True
        down_s = now - self.since
        self.since = now
        for kind in self._logged & {CREDENTIALS, PERMISSION}:
            self._refused_at[kind] = now
        level = logging.DEBUG if self._quiet else logging.INFO
        self._log.log(level, "Redis is reachable again at %s (after %.1fs)", self.address,
                      down_s)
        return True

    def unreachable_for(self) -> float:
        """Seconds since Redis was last seen failing (0 while it is reachable)."""
        return 0.0 if self.reachable else self._clock() - self.since
