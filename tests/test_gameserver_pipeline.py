"""The GameServer's request pipeline, in process: compose(), the Router, the four middlewares.

Every request a client sends runs through this code, so its promises are tested here without
sockets or Redis: middlewares run in the documented order, the Router answers every kind of
bad request with the right error, an exception costs one request (not the server), and
Idempotency answers a retry with the very bytes the first attempt got while letting a retry
of a refused ("try again later") request through. Requests and answers are real frames
(``protocol.encode_message`` / ``decode_payload``), so the real codec is exercised.
A context needs a hub only for ``hub.config.max_frame_bytes``: the fake one has just that.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import lz4.frame
import orjson
import pytest

from gameserver import metrics
from gameserver.context import Reject, RequestContext
from gameserver.middlewares import (
    ExceptionHandlingMiddleware,
    IdempotencyMiddleware,
    LoggingMiddleware,
    PerformanceMiddleware,
    standard_middlewares,
)
from gameserver.pipeline import Middleware, Next, Router, compose
from gameserver.state import PlayerState, ResponseCache, Session
from protocol import (
    FLAG_LZ4,
    BadPayload,
    ErrorCode,
    MsgType,
    decode_payload,
    encode_frame,
    encode_message,
    read_header,
)
from protocol.internal import format_socket_id

GATEWAY = b"gw-1-3f9a0c2e"
SOCKET = bytes(range(16))
MAX_FRAME = 65536
PIPELINE_LOG = "gameserver.pipeline"


def make_hub(max_frame_bytes: int = MAX_FRAME) -> Any:
    """What RequestContext reads of the hub: the frame size limit."""
    return SimpleNamespace(config=SimpleNamespace(max_frame_bytes=max_frame_bytes))


def make_session(last_seq: int = 1, cache_size: int = 8) -> Session:
    return Session(session_id=7, user_id=42, epoch=1, last_seq=last_seq,
                   cache=ResponseCache(cache_size), player=PlayerState(),
                   gateway_id=GATEWAY, socket_id=SOCKET)


def make_ctx(msg_type: int, seq: int, payload: Any = None, session: Session | None = None,
             *, hub: Any = None, frame: bytes | None = None) -> RequestContext:
    if frame is None:
        frame = encode_message(msg_type, seq, payload)
    return RequestContext(hub or make_hub(), GATEWAY, SOCKET, 0, frame, session)


def answer(ctx: RequestContext) -> tuple[int, int, dict[str, Any]]:
    """(msg_type, sequence_id, payload) of the response the context carries."""
    assert ctx.response is not None, "no response was produced"
    header = read_header(ctx.response)
    assert header.length + 4 == len(ctx.response)
    return header.msg_type, header.sequence_id, decode_payload(ctx.response, header.flags)


def error_of(ctx: RequestContext) -> str:
    msg_type, _, payload = answer(ctx)
    assert msg_type == MsgType.ERROR_RES, payload
    assert ctx.result == payload["code"]
    code: str = payload["code"]
    return code


class FakeClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Endpoint:
    """An innermost step that records its calls and does what the test asks."""

    def __init__(self, action: Callable[[RequestContext], Awaitable[None] | None] | None = None
                 ) -> None:
        self.calls: list[int] = []
        self._action = action

    async def __call__(self, ctx: RequestContext) -> None:
        self.calls.append(ctx.sequence_id)
        if self._action is None:
            ctx.reply({"seq": ctx.sequence_id, **ctx.payload})
            return
        outcome = self._action(ctx)
        if outcome is not None:
            await outcome


def failing(code: ErrorCode) -> Callable[[RequestContext], None]:
    def act(ctx: RequestContext) -> None:
        ctx.fail(code, "refused")
    return act


def raising(exc: BaseException) -> Callable[[RequestContext], None]:
    def act(ctx: RequestContext) -> None:
        raise exc
    return act


# --- RequestContext ----------------------------------------------------------------------


def test_context_reads_the_header_and_decodes_the_payload_once() -> None:
    ctx = make_ctx(MsgType.ECHO_REQ, 9, {"text": "hi"})
    assert (ctx.msg_type, ctx.sequence_id, ctx.flags) == (MsgType.ECHO_REQ, 9, 0)
    assert ctx.msg_name == "ECHO_REQ"
    assert ctx.payload == {"text": "hi"}
    assert ctx.payload is ctx.payload
    assert (ctx.response, ctx.result, ctx.needs_commit, ctx.hold, ctx.close_after) == (
        None, "ok", False, False, False)


def test_context_names_an_unknown_type() -> None:
    assert make_ctx(77, 1, {}).msg_name == "UNKNOWN"


def test_fail_encodes_an_error_and_cancels_the_commit() -> None:
    ctx = make_ctx(MsgType.MOVE_REQ, 4, {"x": 1, "y": 2})
    ctx.needs_commit = True
    ctx.fail(ErrorCode.SERVER_BUSY, "later")
    assert answer(ctx) == (MsgType.ERROR_RES, 4, {"code": "SERVER_BUSY", "message": "later"})
    assert ctx.result == "SERVER_BUSY" and not ctx.needs_commit


def test_reply_compresses_large_answers_for_sessions_that_accept_lz4() -> None:
    session = make_session()
    session.compress_above = 64
    ctx = make_ctx(MsgType.ECHO_REQ, 3, {}, session)
    ctx.reply({"text": "a" * 500})
    assert ctx.response is not None
    assert read_header(ctx.response).flags & FLAG_LZ4
    assert answer(ctx) == (MsgType.ECHO_RES, 3, {"text": "a" * 500})
    plain = make_ctx(MsgType.ECHO_REQ, 3, {}, make_session())
    plain.reply({"text": "a" * 500})
    assert plain.response is not None and read_header(plain.response).flags == 0


# --- compose -------------------------------------------------------------------------------


class Tracing:
    def __init__(self, name: str, trace: list[str]) -> None:
        self.name = name
        self.trace = trace

    async def __call__(self, ctx: RequestContext, call_next: Next) -> None:
        self.trace.append(f"{self.name}>")
        await call_next(ctx)
        self.trace.append(f"<{self.name}")


class Answering:
    """Answers on its own and never calls the layers inside it."""

    async def __call__(self, ctx: RequestContext, call_next: Next) -> None:
        ctx.reply({"from": "middleware"})


async def test_compose_runs_the_first_middleware_outermost() -> None:
    trace: list[str] = []

    async def endpoint(ctx: RequestContext) -> None:
        trace.append("endpoint")

    pipeline = compose([Tracing("a", trace), Tracing("b", trace), Tracing("c", trace)], endpoint)
    await pipeline(make_ctx(MsgType.ECHO_REQ, 1, {}))
    assert trace == ["a>", "b>", "c>", "endpoint", "<c", "<b", "<a"]
    trace.clear()
    await pipeline(make_ctx(MsgType.ECHO_REQ, 2, {}))  # built once, used for every request
    assert trace == ["a>", "b>", "c>", "endpoint", "<c", "<b", "<a"]


async def test_compose_of_nothing_is_the_endpoint() -> None:
    endpoint = Endpoint()
    assert compose([], endpoint) is endpoint


async def test_a_middleware_may_answer_without_calling_the_next_layer() -> None:
    trace: list[str] = []
    endpoint = Endpoint()
    middlewares: list[Middleware] = [Tracing("outer", trace), Answering(), Tracing("inner", trace)]
    ctx = make_ctx(MsgType.ECHO_REQ, 5, {})
    await compose(middlewares, endpoint)(ctx)
    assert trace == ["outer>", "<outer"]
    assert endpoint.calls == []
    assert answer(ctx) == (MsgType.ECHO_RES, 5, {"from": "middleware"})


# --- Router --------------------------------------------------------------------------------


def make_router() -> tuple[Router, list[str]]:
    """A router with one handler of each kind; the list records which handlers ran."""
    router = Router()
    ran: list[str] = []

    @router.handler(MsgType.ECHO_REQ)
    async def echo(ctx: RequestContext) -> Any:
        ran.append("echo")
        return ctx.payload

    @router.handler(MsgType.PING_REQ, requires_session=False)
    async def ping(ctx: RequestContext) -> Any:
        ran.append("ping")
        return {"pong": True}

    @router.handler(MsgType.MOVE_REQ, mutates_state=True)
    async def move(ctx: RequestContext) -> Any:
        ran.append("move")
        x = ctx.payload.get("x")
        if not isinstance(x, int):
            raise Reject(ErrorCode.BAD_PAYLOAD, "x must be an integer")
        return {"x": x}

    @router.handler(MsgType.LOGOUT_REQ)
    async def logout(ctx: RequestContext) -> Any:
        ran.append("logout")
        ctx.reply({}, MsgType.LOGOUT_RES)
        ctx.close_after = True
        return None

    @router.handler(MsgType.WHISPER_REQ)
    async def whisper(ctx: RequestContext) -> Any:
        ran.append("whisper")
        ctx.reply({"explicit": True})
        return {"returned": True}  # ignored: the handler already replied

    @router.handler(MsgType.RECONNECT_REQ, requires_session=False)
    async def silent(ctx: RequestContext) -> Any:
        ran.append("silent")
        return None

    return router, ran


async def test_router_answers_a_handler_result_with_its_response_type() -> None:
    router, ran = make_router()
    ctx = make_ctx(MsgType.ECHO_REQ, 3, {"text": "hi"}, make_session())
    await router(ctx)
    assert answer(ctx) == (MsgType.ECHO_RES, 3, {"text": "hi"})
    assert ctx.result == "ok" and not ctx.needs_commit and ran == ["echo"]


async def test_router_refuses_an_unknown_message_type() -> None:
    router, ran = make_router()
    ctx = make_ctx(77, 3, {}, make_session())
    await router(ctx)
    assert error_of(ctx) == ErrorCode.UNKNOWN_MESSAGE_TYPE
    assert answer(ctx)[1:] == (3, {"code": "UNKNOWN_MESSAGE_TYPE",
                                   "message": "unknown message type 77"})
    assert ran == []


async def test_router_refuses_a_session_handler_before_login() -> None:
    router, ran = make_router()
    ctx = make_ctx(MsgType.ECHO_REQ, 2, {"text": "hi"})
    await router(ctx)
    assert error_of(ctx) == ErrorCode.NOT_LOGGED_IN and ran == []
    open_ctx = make_ctx(MsgType.PING_REQ, 2, {})
    await router(open_ctx)
    assert answer(open_ctx) == (MsgType.PONG_RES, 2, {"pong": True})


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b'"text"'])
async def test_router_answers_bad_payload_for_undecodable_input(body: bytes) -> None:
    router, ran = make_router()
    ctx = make_ctx(MsgType.ECHO_REQ, 6, session=make_session(),
                   frame=encode_frame(MsgType.ECHO_REQ, 6, body))
    await router(ctx)
    assert error_of(ctx) == ErrorCode.BAD_PAYLOAD and ran == ["echo"]


async def test_router_bounds_a_compressed_payload_by_the_frame_limit() -> None:
    # 600 bytes of JSON squeezed into a few dozen: an LZ4 bomb in miniature.
    router, _ = make_router()
    body = lz4.frame.compress(orjson.dumps({"text": "a" * 600}))
    frame = encode_frame(MsgType.ECHO_REQ, 2, body, FLAG_LZ4)
    small = make_ctx(MsgType.ECHO_REQ, 2, session=make_session(), frame=frame,
                     hub=make_hub(max_frame_bytes=256))
    await router(small)
    assert error_of(small) == ErrorCode.BAD_PAYLOAD
    large = make_ctx(MsgType.ECHO_REQ, 2, session=make_session(), frame=frame)
    await router(large)
    assert answer(large) == (MsgType.ECHO_RES, 2, {"text": "a" * 600})


async def test_router_turns_an_oversized_answer_into_bad_payload() -> None:
    router = Router()

    @router.handler(MsgType.ECHO_REQ)
    async def doubled(ctx: RequestContext) -> Any:
        return {"text": ctx.payload["text"] * 2}

    hub = make_hub(max_frame_bytes=128)
    fits = make_ctx(MsgType.ECHO_REQ, 2, {"text": "a" * 50}, make_session(), hub=hub)
    await router(fits)
    assert answer(fits) == (MsgType.ECHO_RES, 2, {"text": "a" * 100})
    ctx = make_ctx(MsgType.ECHO_REQ, 3, {"text": "a" * 100}, make_session(), hub=hub)
    await router(ctx)  # the request fits; its answer does not
    assert error_of(ctx) == ErrorCode.BAD_PAYLOAD
    assert "MAX_FRAME_BYTES" in answer(ctx)[2]["message"]


async def test_router_marks_a_state_change_for_commit_only_when_it_succeeded() -> None:
    router, _ = make_router()
    moved = make_ctx(MsgType.MOVE_REQ, 2, {"x": 3}, make_session())
    await router(moved)
    assert answer(moved) == (MsgType.MOVE_RES, 2, {"x": 3}) and moved.needs_commit
    rejected = make_ctx(MsgType.MOVE_REQ, 3, {"x": "three"}, make_session())
    await router(rejected)
    assert answer(rejected)[2] == {"code": "BAD_PAYLOAD", "message": "x must be an integer"}
    assert not rejected.needs_commit


async def test_router_keeps_a_reply_the_handler_made_itself() -> None:
    router, _ = make_router()
    logout = make_ctx(MsgType.LOGOUT_REQ, 4, {}, make_session())
    await router(logout)
    assert answer(logout) == (MsgType.LOGOUT_RES, 4, {}) and logout.close_after
    whisper = make_ctx(MsgType.WHISPER_REQ, 5, {}, make_session())
    await router(whisper)
    assert answer(whisper) == (MsgType.WHISPER_RES, 5, {"explicit": True})


async def test_router_sends_nothing_when_the_handler_returns_nothing() -> None:
    router, ran = make_router()
    ctx = make_ctx(MsgType.RECONNECT_REQ, 1, {})
    await router(ctx)
    assert ran == ["silent"] and ctx.response is None and ctx.result == "ok"


async def test_router_lets_unexpected_exceptions_through() -> None:
    # They are ExceptionHandlingMiddleware's business (and Idempotency must see them).
    router = Router()

    @router.handler(MsgType.ECHO_REQ)
    async def broken(ctx: RequestContext) -> Any:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await router(make_ctx(MsgType.ECHO_REQ, 2, {}, make_session()))


def test_router_refuses_two_handlers_for_one_type() -> None:
    router, _ = make_router()
    with pytest.raises(ValueError, match="ECHO_REQ"):
        router.handler(MsgType.ECHO_REQ)(lambda ctx: asyncio.sleep(0))


# --- ExceptionHandlingMiddleware -------------------------------------------------------------


async def test_an_exception_becomes_internal_error_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)

    def explode(ctx: RequestContext) -> None:
        ctx.hold = True
        ctx.needs_commit = True
        raise RuntimeError("handler bug")

    ctx = make_ctx(MsgType.ECHO_REQ, 11, {}, make_session())
    await compose([ExceptionHandlingMiddleware()], Endpoint(explode))(ctx)
    assert answer(ctx) == (MsgType.ERROR_RES, 11, {"code": "INTERNAL_ERROR",
                                                   "message": "internal error"})
    assert ctx.result == ErrorCode.INTERNAL_ERROR
    # A half-done request must neither wait for a commit nor be held as a cached answer.
    assert not ctx.hold and not ctx.needs_commit
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert message.startswith("Unhandled error: ")
    assert f"Socket={format_socket_id(SOCKET)}" in message and "SequenceId=11" in message
    assert errors[0].exc_info is not None and isinstance(errors[0].exc_info[1], RuntimeError)


async def test_exception_handling_leaves_a_normal_request_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = make_ctx(MsgType.ECHO_REQ, 2, {"a": 1}, make_session())
    await compose([ExceptionHandlingMiddleware()], Endpoint())(ctx)
    assert answer(ctx) == (MsgType.ECHO_RES, 2, {"seq": 2, "a": 1})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_exception_handling_does_not_swallow_cancellation() -> None:
    # Shutdown cancels in-flight requests; that must not turn into an INTERNAL_ERROR answer.
    ctx = make_ctx(MsgType.ECHO_REQ, 2, {}, make_session())
    with pytest.raises(asyncio.CancelledError):
        await compose([ExceptionHandlingMiddleware()],
                      Endpoint(raising(asyncio.CancelledError())))(ctx)
    assert ctx.response is None


# --- LoggingMiddleware ---------------------------------------------------------------------


async def test_logging_writes_two_debug_lines_with_the_elapsed_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=PIPELINE_LOG)
    clock = FakeClock()
    middleware = LoggingMiddleware(clock=clock)  # reads the level now
    ctx = make_ctx(MsgType.ECHO_REQ, 2, {"a": 1}, make_session())
    await compose([middleware], Endpoint(lambda ctx: clock.advance(0.0025)))(ctx)
    lines = [r.getMessage() for r in caplog.records if r.name == PIPELINE_LOG]
    socket_text = format_socket_id(SOCKET)
    assert lines == [
        f"Received client packet: Gateway={GATEWAY.decode()}, Socket={socket_text}",
        f"Packet processed: Socket={socket_text}, Elapsed=2.500ms",
    ]


async def test_logging_is_silent_when_built_above_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)
    middleware = LoggingMiddleware()
    caplog.set_level(logging.DEBUG, logger=PIPELINE_LOG)  # too late: read once, at start-up
    endpoint = Endpoint()
    ctx = make_ctx(MsgType.ECHO_REQ, 2, {}, make_session())
    await compose([middleware], endpoint)(ctx)
    assert endpoint.calls == [2] and ctx.response is not None
    assert [r for r in caplog.records if r.name == PIPELINE_LOG] == []


# --- IdempotencyMiddleware -----------------------------------------------------------------


def idempotent(endpoint: Next) -> Next:
    return compose([IdempotencyMiddleware()], endpoint)


async def test_a_new_sequence_id_moves_the_watermark_and_caches_the_answer() -> None:
    session = make_session(last_seq=1)
    endpoint = Endpoint()
    ctx = make_ctx(MsgType.ECHO_REQ, 2, {"a": 1}, session)
    await idempotent(endpoint)(ctx)
    assert endpoint.calls == [2] and session.last_seq == 2
    assert session.cache.get(2) == ctx.response is not None


async def test_a_retry_gets_the_cached_bytes_without_running_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=PIPELINE_LOG)
    session = make_session(last_seq=1)
    endpoint = Endpoint()
    pipeline = idempotent(endpoint)
    first = make_ctx(MsgType.ECHO_REQ, 2, {"a": 1}, session)
    await pipeline(first)
    cached_before = metrics.duplicates.value("cached")
    retry = make_ctx(MsgType.ECHO_REQ, 2, {"a": "different"}, session)
    await pipeline(retry)
    assert retry.response == first.response  # the same bytes, not a re-encoding
    assert endpoint.calls == [2] and session.last_seq == 2 and not retry.hold
    assert metrics.duplicates.value("cached") == cached_before + 1
    assert [r.getMessage() for r in caplog.records] == [
        "Duplicate packet detected: SessionId=7, SequenceId=2"]


async def test_a_retry_of_an_uncommitted_change_is_held_for_its_commit() -> None:
    session = make_session(last_seq=1)
    pipeline = idempotent(Endpoint())
    first = make_ctx(MsgType.MOVE_REQ, 2, {"x": 1}, session)
    await pipeline(first)
    session.uncommitted.add(2)  # what CommitQueue.add does until Redis has it
    retry = make_ctx(MsgType.MOVE_REQ, 2, {"x": 1}, session)
    await pipeline(retry)
    assert retry.response == first.response and retry.hold
    session.uncommitted.discard(2)
    after_commit = make_ctx(MsgType.MOVE_REQ, 2, {"x": 1}, session)
    await pipeline(after_commit)
    assert after_commit.response == first.response and not after_commit.hold


async def test_an_old_id_without_a_cached_answer_is_a_duplicate() -> None:
    session = make_session(last_seq=1, cache_size=2)
    endpoint = Endpoint()
    pipeline = idempotent(endpoint)
    for seq in (2, 3, 4):  # 2 falls out of a cache of two
        await pipeline(make_ctx(MsgType.ECHO_REQ, seq, {}, session))
    rejected_before = metrics.duplicates.value("rejected")
    for seq in (2, 1):  # evicted, and below anything this session answered
        retry = make_ctx(MsgType.ECHO_REQ, seq, {}, session)
        await pipeline(retry)
        assert error_of(retry) == ErrorCode.DUPLICATE_SEQUENCE
        assert answer(retry)[1] == seq
        assert f"sequence id {seq} was already processed (last 4)" in answer(retry)[2]["message"]
    assert endpoint.calls == [2, 3, 4] and session.last_seq == 4
    assert metrics.duplicates.value("rejected") == rejected_before + 2
    assert session.cache.get(1) is None  # a refusal is not cached


@pytest.mark.parametrize("code", [ErrorCode.SERVER_BUSY, ErrorCode.SERVER_UNAVAILABLE,
                                  ErrorCode.INTERNAL_ERROR])
async def test_a_transient_answer_gives_the_sequence_id_back(code: ErrorCode) -> None:
    session = make_session(last_seq=1)
    refusing = Endpoint(failing(code))
    refused = make_ctx(MsgType.MOVE_REQ, 2, {"x": 1}, session)
    await idempotent(refusing)(refused)
    assert error_of(refused) == code
    assert session.last_seq == 1 and session.cache.get(2) is None
    working = Endpoint()
    retry = make_ctx(MsgType.MOVE_REQ, 2, {"x": 1}, session)
    await idempotent(working)(retry)
    assert working.calls == [2] and answer(retry)[0] == MsgType.MOVE_RES
    assert session.last_seq == 2 and session.cache.get(2) == retry.response


@pytest.mark.parametrize("code", [ErrorCode.BAD_PAYLOAD, ErrorCode.INVALID_SESSION,
                                  ErrorCode.UNKNOWN_MESSAGE_TYPE])
async def test_a_final_error_is_cached_like_any_answer(code: ErrorCode) -> None:
    # The request was refused for good: a retry gets the same refusal, not a second try.
    session = make_session(last_seq=1)
    endpoint = Endpoint(failing(code))
    pipeline = idempotent(endpoint)
    first = make_ctx(MsgType.MOVE_REQ, 2, {"x": "a"}, session)
    await pipeline(first)
    assert error_of(first) == code
    retry = make_ctx(MsgType.MOVE_REQ, 2, {"x": "a"}, session)
    await pipeline(retry)
    assert retry.response == first.response and endpoint.calls == [2]
    assert session.last_seq == 2


async def test_an_exception_gives_the_sequence_id_back() -> None:
    session = make_session(last_seq=1)
    ctx = make_ctx(MsgType.MOVE_REQ, 2, {"x": 1}, session)
    with pytest.raises(RuntimeError):
        await idempotent(Endpoint(raising(RuntimeError("bug"))))(ctx)
    assert session.last_seq == 1 and session.cache.get(2) is None
    endpoint = Endpoint()
    await idempotent(endpoint)(make_ctx(MsgType.MOVE_REQ, 2, {"x": 1}, session))
    assert endpoint.calls == [2]


async def test_a_watermark_moved_on_meanwhile_is_not_rolled_back() -> None:
    # While a request awaited (a whisper to another GameServer), a reconnect brought a
    # higher watermark from Redis: a transient end of this request must not undo that.
    session = make_session(last_seq=1)

    def resumed_meanwhile(ctx: RequestContext) -> None:
        session.last_seq = 9
        ctx.fail(ErrorCode.SERVER_UNAVAILABLE, "peer did not answer")

    await idempotent(Endpoint(resumed_meanwhile))(
        make_ctx(MsgType.WHISPER_REQ, 2, {}, session))
    assert session.last_seq == 9

    def resumed_then_crashed(ctx: RequestContext) -> None:
        session.last_seq = 12
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        await idempotent(Endpoint(resumed_then_crashed))(
            make_ctx(MsgType.WHISPER_REQ, 10, {}, session))
    assert session.last_seq == 12


async def test_sequence_id_zero_opts_out() -> None:
    session = make_session(last_seq=5)
    endpoint = Endpoint()
    pipeline = idempotent(endpoint)
    for _ in range(2):
        ctx = make_ctx(MsgType.ECHO_REQ, 0, {}, session)
        await pipeline(ctx)
        assert answer(ctx)[0] == MsgType.ECHO_RES
    assert endpoint.calls == [0, 0] and session.last_seq == 5 and len(session.cache) == 0


async def test_requests_without_a_session_pass_through() -> None:
    endpoint = Endpoint()
    pipeline = idempotent(endpoint)
    for _ in range(2):
        await pipeline(make_ctx(MsgType.ECHO_REQ, 3, {}))
    assert endpoint.calls == [3, 3]


@pytest.mark.parametrize("msg_type", [MsgType.LOGIN_REQ, MsgType.RECONNECT_REQ])
async def test_session_establishing_requests_bypass_deduplication(msg_type: MsgType) -> None:
    # A LOGIN on a logged-in socket must reach its handler (ALREADY_LOGGED_IN), whatever id
    # it carries, and must not spend or move the session's watermark.
    session = make_session(last_seq=5)
    endpoint = Endpoint(failing(ErrorCode.ALREADY_LOGGED_IN))
    pipeline = idempotent(endpoint)
    for seq in (3, 5, 9):
        ctx = make_ctx(msg_type, seq, {}, session)
        await pipeline(ctx)
        assert error_of(ctx) == ErrorCode.ALREADY_LOGGED_IN
    assert endpoint.calls == [3, 5, 9] and session.last_seq == 5 and len(session.cache) == 0


# --- PerformanceMiddleware -----------------------------------------------------------------


def requests_count(msg_name: str, result: str) -> float:
    return metrics.requests.value(msg_name, result)


def duration_cell(msg_name: str) -> tuple[int, float, list[int]]:
    cell = metrics.handler_duration.child(msg_name)
    return sum(cell.counts), cell.sum, list(cell.counts)


async def test_performance_counts_each_request_by_type_and_result() -> None:
    router, _ = make_router()
    pipeline = compose([PerformanceMiddleware(clock=FakeClock())], router)
    before = {key: requests_count(*key) for key in [
        ("ECHO_REQ", "ok"), ("ECHO_REQ", "NOT_LOGGED_IN"), ("MOVE_REQ", "BAD_PAYLOAD"),
        ("UNKNOWN", "UNKNOWN_MESSAGE_TYPE")]}
    await pipeline(make_ctx(MsgType.ECHO_REQ, 2, {}, make_session()))
    await pipeline(make_ctx(MsgType.ECHO_REQ, 3, {}, make_session()))
    await pipeline(make_ctx(MsgType.ECHO_REQ, 2, {}))
    await pipeline(make_ctx(MsgType.MOVE_REQ, 2, {"x": "a"}, make_session()))
    await pipeline(make_ctx(77, 2, {}, make_session()))
    after = {key: requests_count(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == {
        ("ECHO_REQ", "ok"): 2, ("ECHO_REQ", "NOT_LOGGED_IN"): 1,
        ("MOVE_REQ", "BAD_PAYLOAD"): 1, ("UNKNOWN", "UNKNOWN_MESSAGE_TYPE"): 1}


async def test_performance_observes_the_handling_time() -> None:
    clock = FakeClock()
    pipeline = compose([PerformanceMiddleware(clock=clock)],
                       Endpoint(lambda ctx: clock.advance(0.003)))
    count, total, buckets = duration_cell("PING_REQ")
    await pipeline(make_ctx(MsgType.PING_REQ, 2, {}, make_session()))
    new_count, new_total, new_buckets = duration_cell("PING_REQ")
    assert new_count == count + 1
    assert new_total - total == pytest.approx(0.003)
    bucket = bisect_left(metrics.handler_duration.bounds, 0.003)  # the 5 ms bucket
    assert metrics.handler_duration.bounds[bucket] == 0.005
    assert new_buckets[bucket] == buckets[bucket] + 1


async def test_performance_counts_an_exception_as_internal_error_and_reraises() -> None:
    clock = FakeClock()

    def slow_crash(ctx: RequestContext) -> None:
        clock.advance(0.2)
        raise RuntimeError("bug")

    pipeline = compose([PerformanceMiddleware(clock=clock)], Endpoint(slow_crash))
    before = requests_count("LOGOUT_REQ", "INTERNAL_ERROR")
    count, total, _ = duration_cell("LOGOUT_REQ")
    with pytest.raises(RuntimeError):
        await pipeline(make_ctx(MsgType.LOGOUT_REQ, 2, {}, make_session()))
    assert requests_count("LOGOUT_REQ", "INTERNAL_ERROR") == before + 1
    new_count, new_total, _ = duration_cell("LOGOUT_REQ")
    assert new_count == count + 1 and new_total - total == pytest.approx(0.2)


# --- the standard pipeline ---------------------------------------------------------------


def test_standard_middlewares_are_in_the_documented_order() -> None:
    assert [type(m) for m in standard_middlewares()] == [
        ExceptionHandlingMiddleware, LoggingMiddleware, IdempotencyMiddleware,
        PerformanceMiddleware]


async def test_standard_pipeline_survives_a_crash_and_processes_the_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    router = Router()
    attempts: list[int] = []

    @router.handler(MsgType.MOVE_REQ, mutates_state=True)
    async def flaky_move(ctx: RequestContext) -> Any:
        attempts.append(ctx.sequence_id)
        if len(attempts) == 1:
            raise ZeroDivisionError("first attempt")
        return {"moves": len(attempts)}

    pipeline = compose(standard_middlewares(), router)
    session = make_session(last_seq=1)
    crashed_before = requests_count("MOVE_REQ", "INTERNAL_ERROR")
    crashed = make_ctx(MsgType.MOVE_REQ, 2, {}, session)
    await pipeline(crashed)
    assert error_of(crashed) == ErrorCode.INTERNAL_ERROR and not crashed.needs_commit
    assert session.last_seq == 1 and session.cache.get(2) is None
    assert requests_count("MOVE_REQ", "INTERNAL_ERROR") == crashed_before + 1
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1

    retry = make_ctx(MsgType.MOVE_REQ, 2, {}, session)
    await pipeline(retry)
    assert answer(retry) == (MsgType.MOVE_RES, 2, {"moves": 2}) and retry.needs_commit
    assert session.last_seq == 2 and session.cache.get(2) == retry.response

    # A duplicate is answered by Idempotency: the handler and the request metrics never see it.
    ok_before = requests_count("MOVE_REQ", "ok")
    duplicate = make_ctx(MsgType.MOVE_REQ, 2, {}, session)
    await pipeline(duplicate)
    assert duplicate.response == retry.response and not duplicate.needs_commit
    assert attempts == [2, 2] and requests_count("MOVE_REQ", "ok") == ok_before


async def test_bad_payload_is_never_an_internal_error() -> None:
    # BadPayload is a ValueError: the Router, not the exception handler, must answer it.
    assert issubclass(BadPayload, ValueError)
    router, _ = make_router()
    ctx = make_ctx(MsgType.ECHO_REQ, 2, session=make_session(),
                   frame=encode_frame(MsgType.ECHO_REQ, 2, b"\x00"))
    await compose(standard_middlewares(), router)(ctx)
    assert error_of(ctx) == ErrorCode.BAD_PAYLOAD
