"""Asyncio game client speaking wire protocol v1 to a Gateway, with automatic session resume.

Built for tests of the backbone, so it makes the server's guarantees observable instead of
hiding them: sequence ids are explicit and monotonic across reconnects, pushes are queued, the
last kick reason is kept, and after a drop every still-unanswered request is re-sent with its
*original* sequence id. That last point is what turns the server's idempotency (a retried
sequence id gets the cached response) into exactly-once processing end to end.

Request timeouts count per transmission: the clock stops while the client is resuming the
session (resumption has its own bound) and restarts when the request is re-sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Self

from protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    BadPayload,
    ErrorCode,
    KickReason,
    MsgType,
    decode_payload,
    encode_message,
    read_header,
)
from servicekit.redis_health import RetryDelays
from test_client.connection import Connection, Endpoint, Response
from test_client.errors import (
    ClientError,
    ConnectionLost,
    NotConnected,
    ReconnectFailed,
    RequestError,
    RequestTimeout,
)
from test_client.tls import TlsOptions

log = logging.getLogger(__name__)

PUSH_TYPES = frozenset({MsgType.KICKOUT_NTF, MsgType.WHISPER_NTF})
#: Kicks after which resuming would fight another client, an operator or our own bug.
NO_RESUME_KICKS = frozenset(
    {
        KickReason.DUPLICATE_LOGIN,
        KickReason.SESSION_RESUMED_ELSEWHERE,
        KickReason.ADMIN_KICK,
        KickReason.PROTOCOL_ERROR,
    }
)
#: Kicks that announce the socket is going away although the session lives on.
RESUME_NOW_KICKS = frozenset({KickReason.SERVER_SHUTDOWN, KickReason.IDLE_TIMEOUT})
#: RECONNECT errors worth another attempt (possibly through another Gateway); RATE_LIMITED
#: comes from a Gateway that refused the frame unread (the backoff slows us down).
RETRYABLE_RESUME_ERRORS = frozenset(
    {ErrorCode.SERVER_UNAVAILABLE, ErrorCode.SERVER_BUSY, ErrorCode.INTERNAL_ERROR,
     ErrorCode.RATE_LIMITED}
)
#: A resumed connection that dies sooner than this counts as flapping and backs off.
FLAP_WINDOW_S = 2.0
#: Backoff between rounds of resume attempts, and before resuming a flapping connection:
#: the services' jittered policy (servicekit.redis_health), so clients that lost their
#: GameServer together do not come back together.
RESUME_BACKOFF_CAP_S = 1.0
FLAP_DELAYS = RetryDelays(cap_s=2.0)


class Push(NamedTuple):
    """A message the server sent on its own (sequence id 0): a notification or a kick."""

    msg_type: int
    payload: dict[str, Any]


class _Pending:
    """A request waiting for its answer; kept until answered so it can be re-sent."""

    __slots__ = ("frame", "future", "msg_type", "order", "seq", "timeout", "timer")

    def __init__(self, msg_type: int, seq: int, frame: bytes, timeout: float, order: int) -> None:
        self.msg_type = msg_type
        self.seq = seq
        self.frame = frame
        self.timeout = timeout
        self.order = order
        self.future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.timer: asyncio.TimerHandle | None = None

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def check_response(msg_type: int, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` if it is a success, else :class:`RequestError` with the server's code."""
    if msg_type == MsgType.ERROR_RES:
        raise RequestError(
            str(payload.get("code", "UNKNOWN")), str(payload.get("message", "")), msg_type
        )
    if payload.get("ok") is False:
        raise RequestError(
            str(payload.get("error", "UNKNOWN")), str(payload.get("message", "")), msg_type
        )
    return payload


class GameClient:
    """A game client: one session, resumed across connections and Gateways.

    ``gateways`` lists failover endpoints tried after ``(host, port)``; ``tls`` connects to
    all of them over TLS (:class:`test_client.tls.TlsOptions`). Pushes land in
    :attr:`pushes` (and ``on_push``); ``on_event(name, detail)`` reports ``disconnected``,
    ``reconnecting``, ``reconnected`` and ``reconnect_failed`` for logs or a terminal.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 5000,
        *,
        request_timeout: float = 5.0,
        auto_reconnect: bool = True,
        accept_compression: bool = True,
        gateways: Sequence[Endpoint] | None = None,
        connect_timeout: float = 3.0,
        reconnect_timeout: float = 30.0,
        reconnect_attempts: int = 30,
        compress_above: int | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        on_push: Callable[[Push], None] | None = None,
        on_event: Callable[[str, str], None] | None = None,
        tls: TlsOptions | None = None,
    ) -> None:
        self.endpoints: list[Endpoint] = [(host, port)]
        #: TLS to every Gateway endpoint (resumes included), or plaintext when None.
        self.tls = tls
        self._tls_context = tls.context() if tls is not None else None
        for endpoint in gateways or ():
            if tuple(endpoint) not in self.endpoints:
                self.endpoints.append((endpoint[0], endpoint[1]))
        self.request_timeout = request_timeout
        self.auto_reconnect = auto_reconnect
        self.accept_compression = accept_compression
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self.reconnect_attempts = reconnect_attempts
        self.compress_above = compress_above
        self.max_frame_bytes = max_frame_bytes
        self.on_push = on_push
        self.on_event = on_event

        self.pushes: asyncio.Queue[Push] = asyncio.Queue()
        self.kicked_reason: str | None = None
        self.user_id: int | None = None
        self.session_id: int | None = None
        self.reconnect_key: str | None = None
        self.node_id: int | None = None
        self.last_login: dict[str, Any] | None = None
        self.logged_in = False
        #: Successful resumptions (automatic and explicit) so far.
        self.reconnect_count = 0

        self._conn: Connection | None = None
        self._endpoint_index = 0
        self._next_seq = 1
        self._pending: dict[int, list[_Pending]] = {}
        self._order = itertools.count()
        self._resume_task: asyncio.Task[dict[str, Any]] | None = None
        self._closed = False
        self._logging_out = False
        self._resumed_at = -FLAP_WINDOW_S
        self._flaps = 0

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # state --------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.alive

    @property
    def connection(self) -> Connection | None:
        """The current connection (for diagnostics and protocol-level tests)."""
        return self._conn

    @property
    def resuming(self) -> bool:
        return self._resume_task is not None and not self._resume_task.done()

    @property
    def endpoint(self) -> Endpoint | None:
        return self._conn.endpoint if self._conn is not None else None

    @property
    def pending_count(self) -> int:
        return sum(len(waiters) for waiters in self._pending.values())

    def next_sequence_id(self) -> int:
        """Take the next sequence id (monotonic for the life of the client)."""
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def peek_sequence_id(self) -> int:
        """The sequence id the next request will get."""
        return self._next_seq

    # connecting ---------------------------------------------------------------------------------

    async def connect(self, *, sock: Any = None) -> None:
        """Open a connection: the preferred endpoint first, then the others in order.

        ``sock`` adopts an already connected socket instead (a socketpair in tests, a tunnel).
        """
        if self.connected:
            return
        self._closed = False
        if sock is not None:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(
                lambda: self._new_connection(("sock", 0)), sock=sock
            )
            self._adopt(conn)
            return
        failures: list[str] = []
        for index, endpoint in self._endpoint_order():
            try:
                conn = await self._open(endpoint, self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                failures.append(f"{endpoint[0]}:{endpoint[1]}: {exc or type(exc).__name__}")
                continue
            self._endpoint_index = index
            self._adopt(conn)
            return
        raise NotConnected("cannot connect to any gateway (" + "; ".join(failures) + ")")

    async def close(self) -> None:
        """Close the connection without logging out; nothing is resumed afterwards."""
        self._closed = True
        task, self._resume_task = self._resume_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # no re-raise: its waiters already got the outcome
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.retired = True
            if conn.transport is not None:
                conn.transport.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.closed), 1.0)
            conn.abort()
        self._fail_all(lambda: ConnectionLost("client closed"))

    async def wait_disconnected(self) -> None:
        """Wait until the current connection is gone (closed by the server, usually).

        Bound it with ``asyncio.timeout()``; the connection itself is not affected by that.
        """
        conn = self._conn
        if conn is not None:
            await asyncio.shield(conn.closed)

    async def wait_closed(self) -> None:
        """Same as :meth:`wait_disconnected` (the name stream-based code expects)."""
        await self.wait_disconnected()

    async def wait_ready(self) -> None:
        """Wait until no resumption is running; raise if the client ended up disconnected."""
        task = self._resume_task
        if task is not None and not task.done():
            await asyncio.shield(task)
        if not self.connected:
            raise NotConnected("not connected")

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (malformed frames, partial frames) on the current socket."""
        if self._conn is None or not self._conn.write(data):
            raise NotConnected("not connected")

    # requests -----------------------------------------------------------------------------------

    async def request(
        self,
        msg_type: int,
        payload: dict[str, Any] | None = None,
        *,
        seq: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - per transmission, see module doc
    ) -> Response:
        """Send a request and return the answer ``(msg_type, payload)`` as it came.

        ``ERROR_RES`` is returned, not raised (see :func:`check_response`). ``seq`` overrides
        the automatic sequence id (0 opts out of idempotency; re-using an old one is a retry).
        """
        if seq is None:
            seq = self.next_sequence_id()
        elif seq >= self._next_seq:
            self._next_seq = seq + 1
        frame = encode_message(msg_type, seq, payload or {}, self.compress_above)
        return await self._send_and_wait(msg_type, seq, frame, timeout)

    async def call(self, msg_type: int, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """:meth:`request`, raising :class:`RequestError` unless the answer is a success."""
        return check_response(*await self.request(msg_type, payload))

    async def login(self, user_id: int, token: str | None = None) -> dict[str, Any]:
        """Connect if needed and log in; the answer's session fields are kept on the client."""
        if not self.connected and not self.resuming:
            await self.connect()
        body: dict[str, Any] = {"user_id": user_id}
        if token is not None:
            body["token"] = token
        if self.accept_compression:
            body["accept_compression"] = ["lz4"]
        result = await self.call(MsgType.LOGIN_REQ, body)
        self.user_id = user_id
        self._logging_out = False
        self._accept_session(result)
        return result

    async def reconnect(
        self, session_id: int | None = None, reconnect_key: str | None = None
    ) -> dict[str, Any]:
        """Drop the connection (if any) and resume the session on a new one.

        Without arguments the stored session is resumed; a fresh client can resume someone
        else's session by passing its id and key. Unanswered requests are re-sent afterwards.
        """
        task = self._resume_task
        if task is not None and not task.done():
            return await asyncio.shield(task)
        session_id = self.session_id if session_id is None else session_id
        reconnect_key = self.reconnect_key if reconnect_key is None else reconnect_key
        if session_id is None or reconnect_key is None:
            raise ClientError("no session to resume: log in first or pass session_id/key")
        self._closed = False
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.retire()
        return await self._start_resume(session_id, reconnect_key, first_delay=0.0)

    async def logout(self) -> dict[str, Any]:
        """Log out; the server closes the socket afterwards and nothing is resumed."""
        self._logging_out = True
        try:
            result = await self.call(MsgType.LOGOUT_REQ)
        except RequestError:
            self._logging_out = False
            raise
        self.logged_in = False
        return result

    async def echo(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.call(MsgType.ECHO_REQ, obj)

    async def move(self, x: float, y: float) -> dict[str, Any]:
        return await self.call(MsgType.MOVE_REQ, {"x": x, "y": y})

    async def whisper(self, to_user_id: int, text: str) -> dict[str, Any]:
        return await self.call(MsgType.WHISPER_REQ, {"to_user_id": to_user_id, "text": text})

    async def ping(self) -> dict[str, Any]:
        """PONG_RES payload plus ``rtt_ms`` measured here."""
        started = time.perf_counter()
        result = await self.call(MsgType.PING_REQ, {"client_time_ms": int(time.time() * 1000)})
        result["rtt_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    # internals: sending and receiving -----------------------------------------------------------

    async def _send_and_wait(
        self, msg_type: int, seq: int, frame: bytes, timeout_s: float | None
    ) -> Response:
        if self._conn is None and not self.resuming:
            raise NotConnected("not connected")
        pending = _Pending(
            msg_type,
            seq,
            frame,
            self.request_timeout if timeout_s is None else timeout_s,
            next(self._order),
        )
        self._pending.setdefault(seq, []).append(pending)
        if not self.resuming:
            self._transmit(pending)
        try:
            return await pending.future
        finally:
            if not pending.future.done():  # the caller gave up (cancelled)
                self._forget(pending)

    def _transmit(self, pending: _Pending) -> None:
        if self._conn is not None:
            self._conn.write(pending.frame)
        pending.stop_timer()
        pending.timer = asyncio.get_running_loop().call_later(
            pending.timeout, self._expire, pending
        )

    def _expire(self, pending: _Pending) -> None:
        pending.timer = None
        self._forget(pending)
        if not pending.future.done():
            name = _type_name(pending.msg_type)
            pending.future.set_exception(
                RequestTimeout(f"{name} seq={pending.seq}: no answer within {pending.timeout}s")
            )

    def _forget(self, pending: _Pending) -> None:
        pending.stop_timer()
        waiters = self._pending.get(pending.seq)
        if waiters is not None and pending in waiters:
            waiters.remove(pending)
            if not waiters:
                del self._pending[pending.seq]

    def _fail_all(self, make_error: Callable[[], BaseException]) -> None:
        pending_lists, self._pending = self._pending, {}
        for waiters in pending_lists.values():
            for pending in waiters:
                pending.stop_timer()
                if not pending.future.done():
                    pending.future.set_exception(make_error())

    def _on_frame(self, conn: Connection, frame: bytes) -> None:
        header = read_header(frame)
        try:
            payload = decode_payload(frame, header.flags)
        except BadPayload as exc:
            log.warning("%r: undecodable %s: %s", conn, _type_name(header.msg_type), exc)
            waiters = self._pending.get(header.sequence_id)
            if header.sequence_id and waiters:
                pending = waiters[0]
                self._forget(pending)
                pending.future.set_exception(exc)
            return
        msg_type, seq = header.msg_type, header.sequence_id
        handshake = conn.handshake
        if (
            handshake is not None
            and seq == 0
            and msg_type in (MsgType.RECONNECT_RES, MsgType.ERROR_RES)
            and not handshake.done()
        ):
            handshake.set_result((msg_type, payload))
            return
        if seq == 0 and msg_type in PUSH_TYPES:
            self._on_push(conn, Push(msg_type, payload))
            return
        waiters = self._pending.get(seq)
        if not waiters:
            if seq == 0:  # an unsolicited error or notification we do not know: surface it
                self._on_push(conn, Push(msg_type, payload))
            else:
                log.debug("%r: unmatched %s seq=%d", conn, _type_name(msg_type), seq)
            return
        pending = waiters[0]
        self._forget(pending)
        if not pending.future.done():
            pending.future.set_result((msg_type, payload))

    def _on_push(self, conn: Connection, push: Push) -> None:
        if push.msg_type == MsgType.KICKOUT_NTF:
            reason = str(push.payload.get("reason", ""))
            conn.kick_reason = reason
            self.kicked_reason = reason
            if reason in NO_RESUME_KICKS:
                self.logged_in = False
            elif reason in RESUME_NOW_KICKS and conn is self._conn and self._will_resume(reason):
                if reason == KickReason.SERVER_SHUTDOWN:
                    self._endpoint_index += 1  # this Gateway is draining: prefer another one
                conn.abort()  # nothing more will come on it: resume right away
        self.pushes.put_nowait(push)
        if self.on_push is not None:
            try:
                self.on_push(push)
            except Exception:
                log.exception("on_push callback failed")

    def _on_lost(self, conn: Connection, exc: Exception | None) -> None:
        if conn is not self._conn or conn.retired:
            return
        self._conn = None
        for waiters in self._pending.values():
            for pending in waiters:
                pending.stop_timer()
        reason = conn.kick_reason
        detail = f"{conn.endpoint[0]}:{conn.endpoint[1]}" + (f" kicked {reason}" if reason else "")
        self._event("disconnected", detail)
        if self._closed:
            self._fail_all(lambda: ConnectionLost("client closed"))
            return
        if self._logging_out:
            self.logged_in = False
        if self._will_resume(reason):
            assert self.session_id is not None and self.reconnect_key is not None
            now = asyncio.get_running_loop().time()
            self._flaps = self._flaps + 1 if now - self._resumed_at < FLAP_WINDOW_S else 0
            delay = 0.0 if self._flaps == 0 else FLAP_DELAYS.after(self._flaps)
            task = self._start_resume(self.session_id, self.reconnect_key, first_delay=delay)
            task.add_done_callback(_log_resume_failure)
            return
        message = f"connection to {detail} lost" + (f" ({exc})" if exc else "")
        self._fail_all(lambda: ConnectionLost(message, reason))

    # internals: connections and resumption ------------------------------------------------------

    def _will_resume(self, kick_reason: str | None) -> bool:
        """Whether losing the connection now would start an automatic resumption."""
        return (
            self.auto_reconnect
            and self.logged_in
            and not self._logging_out
            and not self._closed
            and kick_reason not in NO_RESUME_KICKS
            and self.session_id is not None
            and self.reconnect_key is not None
        )

    def _new_connection(self, endpoint: Endpoint) -> Connection:
        return Connection(endpoint, self._on_frame, self._on_lost, self.max_frame_bytes)

    async def _open(self, endpoint: Endpoint, limit_s: float) -> Connection:
        loop = asyncio.get_running_loop()
        host, port = endpoint
        if self.tls is None:
            opening = loop.create_connection(lambda: self._new_connection(endpoint), host, port)
        else:
            opening = loop.create_connection(
                lambda: self._new_connection(endpoint), host, port, ssl=self._tls_context,
                server_hostname=self.tls.server_hostname(host))
        _, conn = await asyncio.wait_for(opening, max(limit_s, 0.001))
        return conn

    def _adopt(self, conn: Connection) -> None:
        """Make ``conn`` current; if it already died in between, report that now."""
        self._conn = conn
        if conn.closed.done():
            self._on_lost(conn, None)

    def _endpoint_order(self) -> Iterator[tuple[int, Endpoint]]:
        count = len(self.endpoints)
        for offset in range(count):
            index = (self._endpoint_index + offset) % count
            yield index, self.endpoints[index]

    def _accept_session(self, result: dict[str, Any]) -> None:
        self.last_login = result
        self.logged_in = True
        if isinstance(result.get("user_id"), int):
            self.user_id = result["user_id"]
        if isinstance(result.get("session_id"), int):
            self.session_id = result["session_id"]
        if isinstance(result.get("reconnect_key"), str):
            self.reconnect_key = result["reconnect_key"]
        if isinstance(result.get("node_id"), int):
            self.node_id = result["node_id"]
        last_seq = result.get("last_sequence_id")
        if isinstance(last_seq, int) and last_seq >= self._next_seq:
            self._next_seq = last_seq + 1

    def _start_resume(
        self, session_id: int, reconnect_key: str, first_delay: float
    ) -> asyncio.Task[dict[str, Any]]:
        for waiters in self._pending.values():
            for pending in waiters:
                pending.stop_timer()
        task = asyncio.create_task(self._resume(session_id, reconnect_key, first_delay))
        self._resume_task = task
        return task

    async def _resume(
        self, session_id: int, reconnect_key: str, first_delay: float
    ) -> dict[str, Any]:
        self._event("reconnecting", f"session_id={session_id}")
        try:
            result, conn = await self._resume_attempts(session_id, reconnect_key, first_delay)
        except asyncio.CancelledError:
            self._fail_all(lambda: ConnectionLost("client closed while resuming"))
            raise
        except BaseException as exc:
            if isinstance(exc, RequestError):
                self.logged_in = False  # the server says the session is gone
            self._event("reconnect_failed", str(exc) or type(exc).__name__)
            reason = f"cannot resume session {session_id}: {exc or type(exc).__name__}"
            self._fail_all(lambda: ReconnectFailed(reason))
            raise
        self.reconnect_count += 1
        self._resumed_at = asyncio.get_running_loop().time()
        self._accept_session(result)
        self._conn = conn
        self._event("reconnected", f"{conn.endpoint[0]}:{conn.endpoint[1]}")
        # Re-send every unanswered request with its original sequence id, oldest first.
        for pending in sorted(
            (p for waiters in self._pending.values() for p in waiters), key=lambda p: p.order
        ):
            self._transmit(pending)
        self._adopt(conn)
        return result

    async def _resume_attempts(
        self, session_id: int, reconnect_key: str, first_delay: float
    ) -> tuple[dict[str, Any], Connection]:
        """Try every endpoint in turn, backing off between rounds, within the time budget."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout
        body: dict[str, Any] = {"session_id": session_id, "reconnect_key": reconnect_key}
        if self.accept_compression:
            body["accept_compression"] = ["lz4"]
        frame = encode_message(MsgType.RECONNECT_REQ, 0, body)
        delay, attempts = first_delay, 0
        delays = RetryDelays(cap_s=RESUME_BACKOFF_CAP_S)
        last_error: BaseException | None = None
        while True:
            if delay > 0:
                await asyncio.sleep(min(delay, max(deadline - loop.time(), 0)))
            for index, endpoint in list(self._endpoint_order()):
                remaining = deadline - loop.time()
                if attempts >= self.reconnect_attempts or remaining <= 0:
                    raise ReconnectFailed(f"gave up after {attempts} attempts: {last_error}")
                attempts += 1
                try:
                    conn = await self._open(endpoint, min(self.connect_timeout, remaining))
                except (OSError, TimeoutError) as exc:
                    last_error = exc
                    continue
                try:
                    msg_type, result = await conn.handshake_request(
                        frame, min(self.request_timeout, max(deadline - loop.time(), 0.001))
                    )
                    check_response(msg_type, result)
                except RequestError as exc:
                    conn.retire()
                    if exc.code not in RETRYABLE_RESUME_ERRORS:
                        raise
                    last_error = exc
                    continue
                except (ConnectionError, TimeoutError) as exc:
                    conn.retire()
                    last_error = exc
                    continue
                except BaseException:
                    conn.retire()
                    raise
                self._endpoint_index = index
                return result, conn
            delay = delays.next()

    def _event(self, name: str, detail: str) -> None:
        log.info("%s %s", name, detail)
        if self.on_event is not None:
            try:
                self.on_event(name, detail)
            except Exception:
                log.exception("on_event callback failed")


def _type_name(msg_type: int) -> str:
    try:
        return MsgType(msg_type).name
    except ValueError:
        return f"type {msg_type}"


def _log_resume_failure(task: asyncio.Task[dict[str, Any]]) -> None:
    """Consume the outcome of an automatic resumption (waiters already got the error)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("automatic reconnect failed: %s", task.exception())
