"""Middleware composition and the handler router.

A middleware is any object with ``async def __call__(self, ctx, call_next)``; it may act
before and after ``await call_next(ctx)`` or answer without calling it. A handler is one
decorated ``async def`` returning the response payload (or raising :class:`Reject`).
Composition builds plain closures once at start-up, so a request costs one coroutine per
layer and no lookups.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gameserver.context import Reject, RequestContext
from protocol.messages import ErrorCode, MsgType
from protocol.payload import BadPayload

Next = Callable[[RequestContext], Awaitable[None]]
HandlerFn = Callable[[RequestContext], Awaitable[Any]]


class Middleware(Protocol):
    async def __call__(self, ctx: RequestContext, call_next: Next) -> None: ...


def compose(middlewares: Sequence[Middleware], endpoint: Next) -> Next:
    """``middlewares[0]`` runs first (outermost); ``endpoint`` runs last."""
    chain = endpoint
    for middleware in reversed(middlewares):
        chain = _link(middleware, chain)
    return chain


def _link(middleware: Middleware, call_next: Next) -> Next:
    def step(ctx: RequestContext) -> Awaitable[None]:
        return middleware(ctx, call_next)

    return step


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    fn: HandlerFn
    requires_session: bool
    mutates_state: bool


class Router:
    """Maps message types to handlers; it is the innermost step of the pipeline."""

    def __init__(self) -> None:
        self.handlers: dict[int, HandlerSpec] = {}

    def handler(
        self, msg_type: MsgType, *, requires_session: bool = True, mutates_state: bool = False
    ) -> Callable[[HandlerFn], HandlerFn]:
        """Register ``fn`` for ``msg_type``.

        ``requires_session``: answer NOT_LOGGED_IN before login. ``mutates_state``: the
        response is held until the changed state has reached Redis (exactly-once).
        """

        def register(fn: HandlerFn) -> HandlerFn:
            if msg_type in self.handlers:
                raise ValueError(f"a handler for {msg_type.name} is already registered")
            self.handlers[msg_type] = HandlerSpec(fn, requires_session, mutates_state)
            return fn

        return register

    async def __call__(self, ctx: RequestContext) -> None:
        spec = self.handlers.get(ctx.msg_type)
        if spec is None:
            ctx.fail(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown message type {ctx.msg_type}")
            return
        if spec.requires_session and ctx.session is None:
            ctx.fail(ErrorCode.NOT_LOGGED_IN, "log in first")
            return
        try:
            result = await spec.fn(ctx)
            if ctx.response is None and result is not None:
                ctx.reply(result)
        except Reject as rejection:
            ctx.fail(rejection.code, rejection.message)
            return
        except BadPayload as exc:
            ctx.fail(ErrorCode.BAD_PAYLOAD, str(exc))
            return
        if spec.mutates_state:
            ctx.needs_commit = True
