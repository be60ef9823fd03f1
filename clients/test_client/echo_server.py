"""Minimal echo server with the real framing: benchmark baseline "(a) the physical limit".

It does the least a server speaking protocol v1 can do: split frames and answer each ECHO_REQ
by rewriting one header byte of the received frame (same payload bytes, same sequence id), with
no JSON and no routing. What ``bench`` reaches against it is what one Python/uvloop process per
side can move on this machine, so the Gateway's numbers can be read as a fraction of it.

LOGIN_REQ, PING_REQ and LOGOUT_REQ get plausible answers so ``bench`` (with login) and the
client library work against it; it keeps no sessions, so RECONNECT_REQ is refused.

    python -m test_client.echo_server --port 5099
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import secrets
import signal
import sys
import time
from typing import Any, cast

import uvloop

from protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    BadPayload,
    ErrorCode,
    FrameSplitter,
    MsgType,
    decode_payload,
    encode_message,
    read_header,
)
from servicekit.fdlimit import raise_nofile_limit

log = logging.getLogger(__name__)

_ECHO_REQ = int(MsgType.ECHO_REQ)
_ECHO_RES = int(MsgType.ECHO_RES)
_session_ids = itertools.count(1)


class EchoProtocol(asyncio.Protocol):
    """One client connection; the ECHO_REQ path touches only header bytes."""

    __slots__ = ("splitter", "transport")

    def __init__(self, max_frame_bytes: int) -> None:
        self.splitter = FrameSplitter(max_frame_bytes)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        frames = self.splitter.feed(data)
        transport = self.transport
        assert transport is not None
        if len(frames) == 1 and self.splitter.error is None:
            frame = frames[0]
            # msg_type is a big-endian u16 at offset 4; ECHO_REQ and ECHO_RES fit in byte 5.
            if frame[5] == _ECHO_REQ and frame[4] == 0:  # the hot path: one echo per read
                answer = bytearray(frame)
                answer[5] = _ECHO_RES
                transport.write(answer)
                return
        out = bytearray()
        close_after = False
        for frame in frames:
            if frame[5] == _ECHO_REQ and frame[4] == 0:
                start = len(out)
                out += frame
                out[start + 5] = _ECHO_RES
            else:
                answer_bytes, close_after = self._answer(frame)
                out += answer_bytes
                if close_after:
                    break
        if out:
            transport.write(out)
        if close_after or self.splitter.error is not None:
            transport.close()

    def _answer(self, frame: bytes) -> tuple[bytes, bool]:
        """Answer a non-echo frame: ``(response bytes, close afterwards)``."""
        header = read_header(frame)
        seq = header.sequence_id
        try:
            payload = decode_payload(frame, header.flags)
        except BadPayload as exc:
            return _error(seq, ErrorCode.BAD_PAYLOAD, str(exc)), False
        if header.msg_type == MsgType.LOGIN_REQ:
            user_id = payload.get("user_id")
            if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id < 1:
                return _error(seq, ErrorCode.BAD_PAYLOAD, "user_id must be an int >= 1"), False
            return encode_message(MsgType.LOGIN_RES, seq, _login_result(user_id)), False
        if header.msg_type == MsgType.PING_REQ:
            pong = {
                "client_time_ms": payload.get("client_time_ms"),
                "server_time_ms": int(time.time() * 1000),
            }
            return encode_message(MsgType.PONG_RES, seq, pong), False
        if header.msg_type == MsgType.LOGOUT_REQ:
            return encode_message(MsgType.LOGOUT_RES, seq, {"ok": True}), True
        if header.msg_type == MsgType.RECONNECT_REQ:
            refusal = {
                "ok": False,
                "error": ErrorCode.INVALID_SESSION,
                "message": "the echo server keeps no sessions",
            }
            return encode_message(MsgType.RECONNECT_RES, seq, refusal), False
        return _error(seq, ErrorCode.UNKNOWN_MESSAGE_TYPE, f"type {header.msg_type}"), False


def _login_result(user_id: int) -> dict[str, Any]:
    return {
        "ok": True,
        "result": "LOGIN_SUCCESS",
        "user_id": user_id,
        "session_id": next(_session_ids),
        "reconnect_key": secrets.token_hex(16),
        "node_id": 0,
        "last_sequence_id": 0,
        "state": {"x": 0, "y": 0, "moves": 0},
    }


def _error(seq: int, code: str, message: str) -> bytes:
    return encode_message(MsgType.ERROR_RES, seq, {"code": code, "message": message})


async def serve(host: str, port: int, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
    """Serve until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: EchoProtocol(max_frame_bytes), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    bound = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
    print(f"echo server listening on {bound}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m test_client.echo_server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5099)
    parser.add_argument("--max-frame-bytes", type=int, default=DEFAULT_MAX_FRAME_BYTES)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    try:
        uvloop.run(serve(args.host, args.port, args.max_frame_bytes))
    except OSError as exc:
        print(f"echo server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
