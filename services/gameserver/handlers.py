"""The packet handlers of protocol v1. Adding one is one decorated function (docs/MIDDLEWARE.md)."""

from __future__ import annotations

import math
import time
from typing import Any, cast

from gameserver.context import Reject, RequestContext
from gameserver.pipeline import Router
from gameserver.state import Session
from protocol.auth import verify_token
from protocol.messages import ErrorCode, MsgType
from servicekit.keys import valid_session_id

router = Router()

MAX_WHISPER_CHARS = 512


def _int_field(payload: dict[str, Any], name: str, minimum: int = 1) -> int:
    value = payload.get(name)
    if type(value) is not int or value < minimum:
        raise Reject(ErrorCode.BAD_PAYLOAD, f"{name} must be an integer >= {minimum}")
    return value


def _number_field(payload: dict[str, Any], name: str) -> float:
    value = payload.get(name)
    if type(value) not in (int, float) or not math.isfinite(cast(float, value)):
        raise Reject(ErrorCode.BAD_PAYLOAD, f"{name} must be a finite number")
    return float(cast(float, value))


def _accepts_lz4(payload: dict[str, Any]) -> bool:
    accepted = payload.get("accept_compression")
    if accepted is None:
        return False
    if not isinstance(accepted, list):
        raise Reject(ErrorCode.BAD_PAYLOAD, "accept_compression must be a list of strings")
    return "lz4" in accepted


def _session_result(ctx: RequestContext, session: Session) -> dict[str, Any]:
    return {
        "ok": True,
        "result": "LOGIN_SUCCESS",
        "user_id": session.user_id,
        "session_id": session.session_id,
        "reconnect_key": session.reconnect_key,
        "node_id": ctx.hub.node_id,
        "last_sequence_id": session.last_seq,
        "state": session.player.snapshot(),
    }


def _login_failure(ctx: RequestContext, code: ErrorCode, message: str) -> None:
    """LOGIN_RES / RECONNECT_RES carry their own failure shape (``ok: false``)."""
    ctx.result = code.value
    ctx.reply({"ok": False, "error": code.value, "message": message})


def admit_state_change(ctx: RequestContext) -> None:
    """Refuse a state change before it touches any state when it could only be held: Redis
    is failing (SERVER_UNAVAILABLE) or too much already waits for it (SERVER_BUSY). Both are
    transient: the watermark is rolled back and the same sequence id may be retried."""
    commits = ctx.hub.commits
    if commits.redis_down:
        raise Reject(ErrorCode.SERVER_UNAVAILABLE, "session store unavailable; retry shortly")
    if commits.backlogged:
        raise Reject(ErrorCode.SERVER_BUSY, "state store is lagging; retry shortly")


@router.handler(MsgType.LOGIN_REQ, requires_session=False)
async def login(ctx: RequestContext) -> Any:
    if ctx.session is not None:
        _login_failure(ctx, ErrorCode.ALREADY_LOGGED_IN, "this connection is already logged in")
        return None
    payload = ctx.payload
    user_id = _int_field(payload, "user_id")
    accept_lz4 = _accepts_lz4(payload)
    config = ctx.hub.config
    if config.auth_mode == "hmac":
        problem = verify_token(config.auth_secret.encode(), user_id, payload.get("token"))
        if problem is not None:
            _login_failure(ctx, ErrorCode.AUTH_FAILED, "authentication failed")
            return None
    try:
        session = await ctx.hub.login(ctx, user_id, accept_lz4)
    except Reject as rejection:
        _login_failure(ctx, rejection.code, rejection.message)
        return None
    return _session_result(ctx, session)


@router.handler(MsgType.RECONNECT_REQ, requires_session=False)
async def reconnect(ctx: RequestContext) -> Any:
    if ctx.session is not None:
        _login_failure(ctx, ErrorCode.ALREADY_LOGGED_IN, "this connection is already logged in")
        return None
    payload = ctx.payload
    session_id = _int_field(payload, "session_id")
    key = payload.get("reconnect_key")
    if not isinstance(key, str) or not key:
        raise Reject(ErrorCode.BAD_PAYLOAD, "reconnect_key must be a non-empty string")
    if not valid_session_id(session_id):  # not one this system could have issued
        _login_failure(ctx, ErrorCode.INVALID_SESSION, "cannot resume this session")
        return None
    accept_lz4 = _accepts_lz4(payload)
    try:
        session = await ctx.hub.reconnect(ctx, session_id, key, accept_lz4)
    except Reject as rejection:
        _login_failure(ctx, rejection.code, rejection.message)
        return None
    return _session_result(ctx, session)


@router.handler(MsgType.LOGOUT_REQ)
async def logout(ctx: RequestContext) -> Any:
    assert ctx.session is not None
    try:
        await ctx.hub.logout(ctx.session)
    except Reject as rejection:
        # Taken over elsewhere: this socket's session is over anyway. (SERVER_UNAVAILABLE
        # keeps the socket: the client may retry the LOGOUT.)
        ctx.close_after = rejection.code == ErrorCode.INVALID_SESSION
        raise
    ctx.close_after = True
    return {"ok": True}


@router.handler(MsgType.PING_REQ)
async def ping(ctx: RequestContext) -> Any:
    client_time = _int_field(ctx.payload, "client_time_ms", minimum=0)
    return {"client_time_ms": client_time, "server_time_ms": int(time.time() * 1000)}


@router.handler(MsgType.ECHO_REQ)
async def echo(ctx: RequestContext) -> Any:
    payload = ctx.payload
    if not payload:
        ctx.reply({})
        return None
    return payload


@router.handler(MsgType.MOVE_REQ, mutates_state=True)
async def move(ctx: RequestContext) -> Any:
    session = ctx.session
    assert session is not None
    payload = ctx.payload
    x = _number_field(payload, "x")
    y = _number_field(payload, "y")
    admit_state_change(ctx)
    player = session.player
    player.x, player.y = x, y
    player.moves += 1
    return {"x": x, "y": y, "moves": player.moves}


@router.handler(MsgType.WHISPER_REQ)
async def whisper(ctx: RequestContext) -> Any:
    session = ctx.session
    assert session is not None
    payload = ctx.payload
    to_user_id = _int_field(payload, "to_user_id")
    text = payload.get("text")
    if not isinstance(text, str) or len(text) > MAX_WHISPER_CHARS:
        raise Reject(ErrorCode.BAD_PAYLOAD,
                     f"text must be a string of at most {MAX_WHISPER_CHARS} characters")
    return {"delivered": await ctx.hub.mesh_endpoints.whisper(session, to_user_id, text)}
