"""The four standard middlewares, in pipeline order (see docs/MIDDLEWARE.md).

Exception handling -> Logging -> Idempotency -> Performance -> handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gameserver import metrics
from gameserver.context import RequestContext
from gameserver.pipeline import Middleware, Next
from protocol.internal import format_socket_id
from protocol.messages import ErrorCode, MsgType
from servicekit.fastmetrics import HistogramCell

log = logging.getLogger("gameserver.pipeline")

#: Requests that establish a session: they are not subject to sequence-id deduplication.
SESSION_ESTABLISHING = frozenset({MsgType.LOGIN_REQ, MsgType.RECONNECT_REQ})
#: "Try again later" answers: the request was not carried out, so a retry with the same
#: sequence id must be processed, not answered from the cache.
#: "Try again" answers: not cached, the sequence id not used up (PROTOCOL.md §7.1).
#: RATE_LIMITED is the Gateway's own, listed so a GameServer-side limiter may use it too.
TRANSIENT_RESULTS = frozenset({ErrorCode.SERVER_BUSY.value, ErrorCode.SERVER_UNAVAILABLE.value,
                               ErrorCode.INTERNAL_ERROR.value, ErrorCode.RATE_LIMITED.value})


class ExceptionHandlingMiddleware:
    """Turns any unexpected exception into ``ERROR_RES INTERNAL_ERROR`` for that request
    only, with the traceback in the log: one bad handler never takes the server down."""

    async def __call__(self, ctx: RequestContext, call_next: Next) -> None:
        try:
            await call_next(ctx)
        except Exception:
            log.exception(
                "Unhandled error: Socket=%s, MsgType=%s, SequenceId=%d",
                format_socket_id(ctx.socket_id), ctx.msg_type, ctx.sequence_id,
            )
            ctx.hold = False
            ctx.fail(ErrorCode.INTERNAL_ERROR, "internal error")


class LoggingMiddleware:
    """Per-packet lines at DEBUG (the seed's wording). The level is read once: checking it
    per packet is cheap, formatting a line is not, and production runs at INFO."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.enabled = log.isEnabledFor(logging.DEBUG)
        #: Seconds, monotonic; injectable so a test can fix the logged elapsed time.
        self._clock = clock

    async def __call__(self, ctx: RequestContext, call_next: Next) -> None:
        if not self.enabled:
            await call_next(ctx)
            return
        log.debug("Received client packet: Gateway=%s, Socket=%s",
                  ctx.gateway_id.decode(errors="replace"), format_socket_id(ctx.socket_id))
        start = self._clock()
        await call_next(ctx)
        log.debug("Packet processed: Socket=%s, Elapsed=%.3fms", format_socket_id(ctx.socket_id),
                  (self._clock() - start) * 1000)


class IdempotencyMiddleware:
    """At most once per sequence id and session.

    A request whose id is not above the session's watermark is a retry: it gets the cached
    response bytes (held back until committed if its state change is still on its way to
    Redis) or ``DUPLICATE_SEQUENCE``. Sequence id 0 opts out.
    """

    def __init__(self) -> None:
        self._cached = metrics.duplicates.child("cached")
        self._rejected = metrics.duplicates.child("rejected")

    async def __call__(self, ctx: RequestContext, call_next: Next) -> None:
        session = ctx.session
        seq = ctx.sequence_id
        if session is None or seq == 0 or ctx.msg_type in SESSION_ESTABLISHING:
            await call_next(ctx)
            return
        if seq <= session.last_seq:
            log.warning("Duplicate packet detected: SessionId=%d, SequenceId=%d",
                        session.session_id, seq)
            cached = session.cache.get(seq)
            if cached is not None:
                self._cached[0] += 1
                ctx.response = cached
                ctx.hold = seq in session.uncommitted
            else:
                self._rejected[0] += 1
                ctx.fail(ErrorCode.DUPLICATE_SEQUENCE,
                         f"sequence id {seq} was already processed "
                         f"(last {session.last_seq}) and its response is no longer cached")
            return
        previous = session.last_seq
        session.last_seq = seq
        try:
            await call_next(ctx)
        except BaseException:
            # Unexpected failure: let the client retry the same id.
            if session.last_seq == seq:
                session.last_seq = previous
            raise
        if ctx.result in TRANSIENT_RESULTS:
            if session.last_seq == seq:
                session.last_seq = previous
        elif ctx.response is not None:
            session.cache.put(seq, ctx.response)


class PerformanceMiddleware:
    """Handling time per message type into a histogram, and a count per result."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._cells: dict[tuple[int, str], tuple[HistogramCell, list[float]]] = {}
        #: Seconds, monotonic; injectable so a test can fix the observed handling time.
        self._clock = clock

    async def __call__(self, ctx: RequestContext, call_next: Next) -> None:
        clock = self._clock
        start = clock()
        try:
            await call_next(ctx)
        except Exception:
            # Answered INTERNAL_ERROR by the outer middleware; it must count here too.
            self._record(ctx, ErrorCode.INTERNAL_ERROR.value, clock() - start)
            raise
        self._record(ctx, ctx.result, clock() - start)

    def _record(self, ctx: RequestContext, result: str, elapsed: float) -> None:
        key = (ctx.msg_type, result)
        cells = self._cells.get(key)
        if cells is None:
            name = ctx.msg_name
            cells = self._cells[key] = (
                metrics.handler_duration.child(name),
                metrics.requests.child(name, result),
            )
        cells[0].observe(elapsed)
        cells[1][0] += 1


def standard_middlewares() -> list[Middleware]:
    return [
        ExceptionHandlingMiddleware(),
        LoggingMiddleware(),
        IdempotencyMiddleware(),
        PerformanceMiddleware(),
    ]
