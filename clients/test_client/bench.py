"""Load generator: N connections, each looping ECHO_REQ with exactly one request in flight.

It must never be the bottleneck it measures, so the per-message path is kept tiny: the request
frame is encoded once and only its sequence id is patched (``struct.pack_into``); responses are
split with :class:`protocol.FrameSplitter` and judged by their header alone (ECHO_RES counts,
anything else answering the request is an error), never JSON-decoded; latencies go into an
``array('q')``. Connections are spread over ``--workers`` (alias ``--processes``) worker
processes on uvloop, each raising its own open-file limit, which ship raw samples back so
percentiles are exact (see :mod:`test_client.latency`). Each worker opens at most
``connect_concurrency`` connections at a time, so 10,000 connects do not overflow the
server's accept backlog.

One request in flight per connection makes the result a closed-loop measurement: throughput is
connections / latency, which is what a game's request/response clients look like.

``--idle`` measures the other extreme, many connections doing nothing: open and log in every
connection, hold them for ``--duration`` seconds (silent, or a PING every ``--ping-interval``
seconds to stay under the Gateway's IDLE_TIMEOUT_S), then one ECHO on each.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import socket
import struct
import sys
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Protocol, TextIO, cast

import orjson
import uvloop

from protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    BadPayload,
    FrameSplitter,
    MsgType,
    decode_payload,
    encode_frame,
    encode_message,
    read_header,
)
from protocol.auth import mint_token
from protocol.frame import HEADER
from servicekit.fdlimit import raise_nofile_limit
from test_client import procstat
from test_client.latency import merge_samples, summarize_ms
from test_client.tls import TlsOptions
from test_client.ws_transport import WsClientShell, ws_url

_SEQ = struct.Struct(">I")
_SEQ_OFFSET = 8  # u32 length, u16 msg_type, u8 flags, u8 reserved, then u32 sequence_id
unpack_header = HEADER.unpack_from
_ECHO_RES = int(MsgType.ECHO_RES)
_MOVE_RES = int(MsgType.MOVE_RES)
_PONG_RES = int(MsgType.PONG_RES)
#: Shared counters per worker: ok messages, errors, open connections, phase.
_SLOTS = 4
_PHASE_CONNECTING, _PHASE_READY, _PHASE_DONE = 0, 1, 2
PUBLISH_INTERVAL_S = 0.1


class _Counters(Protocol):
    """The shared ``array('q')``-like block workers publish their counters in."""

    def __getitem__(self, index: int, /) -> int: ...
    def __setitem__(self, index: int, value: int, /) -> None: ...
    def __len__(self) -> int: ...


@dataclass(frozen=True)
class BenchConfig:
    host: str = "127.0.0.1"
    port: int = 5000
    connections: int = 100
    duration_s: float = 10.0
    payload_bytes: int = 64
    processes: int = 1
    login: bool = True
    warmup_s: float = 0.0
    user_id_base: int = 1_000_000
    auth_secret: str | None = None
    token_ttl_s: int = 3600
    request_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    connect_concurrency: int = 200
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: Idle mode: hold the connections for ``duration_s`` (PING every ``ping_interval_s``
    #: if > 0, else silent), then one ECHO on each; see :func:`_idle_phase`.
    idle: bool = False
    #: ``echo`` (ECHO_REQ, its payload echoed) or ``move`` (MOVE_REQ: a state change, held
    #: for the group commit to Redis; every MOVE_RES must count ``moves`` one higher).
    mode: str = "echo"
    #: Login mode: each loop logs the same user in again and again (a returning player)
    #: instead of a new user every time.
    returning: bool = False
    ping_interval_s: float = 0.0
    #: Paced load: each connection sends this many requests a second (still one in flight),
    #: a game-like load instead of flat out; 0 = closed loop, flat out. Latency counts from
    #: when a request was due, so an answer that delays the next request is not hidden.
    rate_per_connection: float = 0.0
    #: Log in accepting LZ4: answers above the GameServer's COMPRESSION_THRESHOLD_BYTES come
    #: compressed (and are checked after decompression).
    lz4: bool = False
    #: Connect over TLS (each worker builds its context from these plain options).
    tls: TlsOptions | None = None
    #: ``tcp``, or ``ws``: the Gateway's WebSocket port, one frame per binary message
    #: (test_client.ws_transport).
    transport: str = "tcp"
    #: Other processes whose CPU the report shows over the measured window (name, pid):
    #: the servers under test. The load generator's own is always shown.
    watch: tuple[tuple[str, int], ...] = ()


@dataclass
class WorkerResult:
    connections: int = 0
    connect_errors: int = 0
    messages: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies: bytes = b""
    first_error: str = ""
    pongs: int = 0  # idle mode: PING_REQs answered during the hold
    compressed: int = 0  # answers that came LZ4-compressed
    dropped: int = 0  # idle mode: connections the server closed during the hold


#: Where each request's tag (connection index, sequence id: 16 ASCII digits) sits in the
#: ECHO_REQ frame: right after the header and ``{"d":"``. Every request's payload differs
#: from every other's, so an answer that is not its own request's echo cannot pass.
_TAG_OFFSET = HEADER.size + len(b'{"d":"')
_TAG_LENGTH = 16


def echo_frame(payload_bytes: int) -> bytes:
    """An ECHO_REQ frame (sequence id 0) whose JSON payload is about ``payload_bytes`` long
    (at least the tag's), the tag zeroed (:meth:`BenchConnection.send` fills it in)."""
    filler = "x" * max(0, payload_bytes - len(b'{"d":""}') - _TAG_LENGTH)
    return encode_frame(MsgType.ECHO_REQ, 0, orjson.dumps({"d": "0" * _TAG_LENGTH + filler}))


def move_frame() -> bytes:
    """A MOVE_REQ frame (sequence id 0): the same position every time; what is checked is
    that each one counts exactly once."""
    return encode_frame(MsgType.MOVE_REQ, 0, orjson.dumps({"x": 12.5, "y": -3.25}))


class _Stats:
    """Counters shared by all connections of one worker (plain attributes: cheapest)."""

    __slots__ = ("compressed", "errors", "first_error", "latencies", "ok", "recording",
                 "running")

    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.running = False
        self.recording = False
        self.latencies = array("q")
        self.first_error = ""
        self.compressed = 0  # answers that came LZ4-compressed (and matched)

    def error(self, text: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = text


class BenchConnection(asyncio.Protocol):
    """One connection: optional login, then echo, echo, echo... with one request in flight.

    The request frame is a ``bytearray`` patched in place. That is safe only because the next
    patch happens after the answer arrived, i.e. after the server read every byte we wrote.
    """

    __slots__ = (
        "answer",
        "due",
        "expected",
        "frame",
        "in_flight",
        "index",
        "interval_ns",
        "login_frame",
        "moves",
        "ready",
        "sent_at",
        "seq",
        "splitter",
        "stats",
        "transport",
    )

    def __init__(
        self, stats: _Stats, template: bytes, login_frame: bytes | None, max_frame_bytes: int,
        index: int = 0,
    ) -> None:
        self.stats = stats
        self.index = index % 1_000_000
        self.frame = bytearray(template)
        #: The answer type of this connection's requests (ECHO_RES or MOVE_RES).
        self.answer = _MOVE_RES if read_header(template).msg_type == MsgType.MOVE_REQ \
            else _ECHO_RES
        #: Move mode: the last acknowledged ``moves`` (from LOGIN_RES's state at first).
        self.moves = 0
        self.login_frame = login_frame
        self.splitter = FrameSplitter(max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seq = 1 if login_frame else 0  # the login used sequence id 1
        self.in_flight = False
        self.sent_at = 0
        self.expected = _ECHO_RES  # the answer type of the request in flight
        #: Paced load: nanoseconds between requests (0: flat out), and when the next is due.
        self.interval_ns = 0
        self.due = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.login_frame is None:
            self.ready.set_result(None)
        else:
            self.transport.write(self.login_frame)

    def data_received(self, data: bytes) -> None:
        frames = self.splitter.feed(data)
        if not self.ready.done():
            self._login_answer(frames)
        else:
            stats = self.stats
            for frame in frames:
                _, msg_type, flags, _, seq = unpack_header(frame)
                if seq != self.seq or not self.in_flight:
                    continue  # a push (sequence id 0) or a late answer: not ours to count
                now = perf_counter_ns()
                self.in_flight = False
                if msg_type != self.expected:
                    stats.error(f"answer type {msg_type}, expected {self.expected}")
                elif msg_type == _ECHO_RES and not self._echoes_request(frame, flags):
                    stats.error(f"ECHO_RES payload is not the request's: {frame[12:60]!r}")
                elif msg_type == _MOVE_RES and not self._counts_one_more(frame, flags):
                    stats.error(f"MOVE_RES is not moves {self.moves + 1}: {frame[12:80]!r}")
                else:
                    stats.ok += 1
                    if stats.recording:
                        stats.latencies.append(now - self.sent_at)
                if stats.running:
                    if self.interval_ns:
                        self._send_when_due(now)
                    else:
                        self.send()
        if self.splitter.error is not None:
            self.stats.error(f"framing: {self.splitter.error}")
            self.abandon()

    def _echoes_request(self, answer: bytes, flags: int) -> bool:
        """The answer's payload is the request's: the same bytes (the GameServer writes
        JSON as compactly as the request was), or, compressed, the same JSON."""
        request = memoryview(self.frame)[HEADER.size:]
        if not flags:
            return memoryview(answer)[HEADER.size:] == request
        try:
            same = bool(decode_payload(answer, flags) == orjson.loads(request))
        except (BadPayload, orjson.JSONDecodeError):
            return False
        self.stats.compressed += same
        return same

    def _counts_one_more(self, answer: bytes, flags: int) -> bool:
        """Exactly once: this MOVE_RES says ``moves`` is the last acknowledged + 1."""
        try:
            payload = decode_payload(answer, flags)
        except BadPayload:
            return False
        if payload.get("moves") != self.moves + 1:
            return False
        self.moves += 1
        return True

    def start_paced(self, interval_ns: int, first_due: int) -> None:
        """Paced load: the first request at ``first_due`` (``perf_counter_ns``), then one
        every ``interval_ns``, or at once when the previous answer came too late."""
        self.interval_ns = interval_ns
        self.due = first_due
        self._send_when_due(perf_counter_ns())

    def _send_when_due(self, now: int) -> None:
        if now >= self.due:
            self.send()
        else:
            asyncio.get_running_loop().call_later((self.due - now) / 1e9, self.send)

    def send(self) -> None:
        seq = self.seq + 1
        self.seq = seq
        transport = self.transport
        if transport is None:
            return  # the connection is gone (its loss was counted)
        _SEQ.pack_into(self.frame, _SEQ_OFFSET, seq)
        expected = self.expected = self.answer
        if expected == _ECHO_RES:
            self.frame[_TAG_OFFSET:_TAG_OFFSET + _TAG_LENGTH] = b"%06d%010d" % (
                self.index, seq % 10_000_000_000)
        self.in_flight = True
        if self.interval_ns:
            # Latency from when the request was due: a late answer's delay counts.
            self.sent_at = self.due
            self.due += self.interval_ns
        else:
            self.sent_at = perf_counter_ns()
        transport.write(self.frame)

    def ping(self) -> None:
        """One PING_REQ (idle mode's keep-alive); answered by PONG_RES, counted as ok."""
        transport = self.transport
        if transport is None or self.in_flight:
            return
        self.seq += 1
        self.in_flight = True
        self.expected = _PONG_RES
        self.sent_at = perf_counter_ns()
        transport.write(encode_message(MsgType.PING_REQ, self.seq, {"client_time_ms": 0}))

    def abandon(self) -> None:
        self.in_flight = False
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during login: {exc}"))
        if self.in_flight:
            self.in_flight = False
            self.stats.error(f"connection lost with a request in flight: {exc}")

    def _login_answer(self, frames: list[bytes]) -> None:
        for frame in frames:
            header = read_header(frame)
            if header.sequence_id != 1:
                continue
            try:
                payload = decode_payload(frame, header.flags)
            except BadPayload as exc:
                self.ready.set_exception(ConnectionError(f"login answer: {exc}"))
                return
            if header.msg_type == MsgType.LOGIN_RES and payload.get("ok") is True:
                last_seq = payload.get("last_sequence_id")
                if isinstance(last_seq, int) and last_seq > self.seq:
                    self.seq = last_seq
                state = payload.get("state")
                moves = state.get("moves") if isinstance(state, dict) else 0
                self.moves = moves if isinstance(moves, int) else 0
                self.ready.set_result(None)
            else:
                code = payload.get("error") or payload.get("code") or "?"
                self.ready.set_exception(ConnectionError(f"login refused: {code}"))
            return


async def _open_connections(
    cfg: BenchConfig, first_index: int, count: int, stats: _Stats
) -> tuple[list[BenchConnection], list[str]]:
    """Open (and log in) ``count`` connections, at most ``connect_concurrency`` at a time."""
    loop = asyncio.get_running_loop()
    template = (move_frame() if cfg.mode == "move" else echo_frame(cfg.payload_bytes))
    gate = asyncio.Semaphore(max(1, cfg.connect_concurrency))
    secret = cfg.auth_secret.encode() if cfg.auth_secret else None
    tls: dict[str, Any] = {}
    if cfg.tls is not None:
        tls = {"ssl": cfg.tls.context(), "server_hostname": cfg.tls.server_hostname(cfg.host)}

    async def open_one(index: int) -> BenchConnection | str:
        login_frame = None
        if cfg.login:
            user_id = cfg.user_id_base + index
            body: dict[str, Any] = {"user_id": user_id}
            if secret is not None:
                body["token"] = mint_token(secret, user_id, cfg.token_ttl_s)
            if cfg.lz4:
                body["accept_compression"] = ["lz4"]
            login_frame = encode_message(MsgType.LOGIN_REQ, 1, body)
        conn: BenchConnection | None = None

        def session() -> BenchConnection:
            return BenchConnection(stats, template, login_frame, cfg.max_frame_bytes, index)

        async with gate:
            try:
                async with asyncio.timeout(cfg.connect_timeout_s):
                    if cfg.transport == "ws":
                        url = ws_url(cfg.host, cfg.port)
                        _, shell = await loop.create_connection(
                            lambda: WsClientShell(session, url), cfg.host, cfg.port, **tls)
                        conn = cast(BenchConnection, shell.app)
                    else:
                        _, conn = await loop.create_connection(session, cfg.host, cfg.port,
                                                               **tls)
                    await conn.ready
            except (OSError, TimeoutError) as exc:
                if conn is not None and conn.transport is not None:
                    conn.transport.abort()  # refused login: do not keep the socket
                return f"{type(exc).__name__}: {exc}"
            return conn

    outcomes = await asyncio.gather(*(open_one(first_index + i) for i in range(count)))
    conns = [o for o in outcomes if isinstance(o, BenchConnection)]
    return conns, [o for o in outcomes if isinstance(o, str)]


class _LoginConnection(asyncio.Protocol):
    """One short-lived connection of the login mode: answers by sequence id."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.splitter = FrameSplitter(max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.waiters: dict[int, asyncio.Future[tuple[int, dict[str, Any]]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for frame in self.splitter.feed(data):
            header = read_header(frame)
            waiter = self.waiters.pop(header.sequence_id, None)
            if waiter is not None and not waiter.done():
                try:
                    waiter.set_result((header.msg_type, decode_payload(frame, header.flags)))
                except BadPayload as exc:
                    waiter.set_exception(ConnectionError(f"bad payload: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def request(self, msg_type: MsgType, seq: int,
                      body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        waiter: asyncio.Future[tuple[int, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future())
        self.waiters[seq] = waiter
        if self.transport is None:
            raise ConnectionError("connection lost")
        self.transport.write(encode_message(msg_type, seq, body))
        return await waiter


async def _login_phase(
    cfg: BenchConfig, first_index: int, count: int, stats: _Stats, result: WorkerResult
) -> None:
    """Login mode: ``count`` loops of connect, LOGIN, LOGOUT, close, flat out; a LOGIN's
    latency is from its send to its LOGIN_RES, and only ok logins whose LOGOUT was
    answered count."""
    stats.running = True
    address = await _resolve_once(cfg.host, cfg.port)
    loops = [asyncio.create_task(_login_loop(cfg, address, first_index + i, stats))
             for i in range(count)]
    await _measured_window(cfg, stats, result)
    await asyncio.gather(*loops, return_exceptions=True)


async def _resolve_once(host: str, port: int) -> str:
    """The numeric address to connect to. A game client resolves its server's name once;
    passing the name to every ``create_connection`` made the generator run a threaded
    ``getaddrinfo`` per login, which cost it a third of its CPU and 20% fewer logins/s on
    the 2-core machine (docs/BENCHMARKS.md, "Logins")."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                        type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


async def _login_loop(cfg: BenchConfig, address: str, index: int, stats: _Stats) -> None:
    loop = asyncio.get_running_loop()
    secret = cfg.auth_secret.encode() if cfg.auth_secret else None
    tls: dict[str, Any] = {}
    if cfg.tls is not None:
        tls = {"ssl": cfg.tls.context(), "server_hostname": cfg.tls.server_hostname(cfg.host)}
    round_no = 0
    while stats.running:
        # New users: a fresh id every round, distinct across every loop of every worker.
        user_id = cfg.user_id_base + index + (0 if cfg.returning
                                              else round_no * cfg.connections)
        round_no += 1
        body: dict[str, Any] = {"user_id": user_id}
        if secret is not None:
            body["token"] = mint_token(secret, user_id, cfg.token_ttl_s)
        conn: _LoginConnection | None = None
        try:
            async with asyncio.timeout(cfg.request_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _LoginConnection(cfg.max_frame_bytes), address, cfg.port, **tls)
                sent = perf_counter_ns()
                msg_type, payload = await conn.request(MsgType.LOGIN_REQ, 1, body)
                latency = perf_counter_ns() - sent
                if msg_type != MsgType.LOGIN_RES or payload.get("ok") is not True:
                    stats.error(f"login refused: {payload.get('error') or msg_type}")
                    continue
                msg_type, payload = await conn.request(MsgType.LOGOUT_REQ, 2, {})
                if msg_type != MsgType.LOGOUT_RES or payload.get("ok") is not True:
                    stats.error(f"logout refused: {payload}")
                    continue
            stats.ok += 1
            if stats.recording:
                stats.latencies.append(latency)
        except (OSError, TimeoutError, ConnectionError) as exc:
            stats.error(f"{type(exc).__name__}: {exc}")
        finally:
            if conn is not None and conn.transport is not None:
                conn.transport.close()


async def _publish(
    stats: _Stats,
    conns: list[BenchConnection],
    shared: _Counters,
    slot: int,
    timeout_s: float,
) -> None:
    """Copy counters to shared memory for the parent's progress line; expire lost requests."""
    timeout_ns = int(timeout_s * 1e9)
    next_check = time.monotonic() + 1.0
    while True:
        shared[slot] = stats.ok
        shared[slot + 1] = stats.errors
        if time.monotonic() >= next_check:
            next_check += 1.0
            now = time.perf_counter_ns()
            for conn in conns:
                if conn.in_flight and now - conn.sent_at > timeout_ns:
                    stats.error(f"no answer within {timeout_s}s")
                    conn.abandon()
        await asyncio.sleep(PUBLISH_INTERVAL_S)


async def run_worker(
    cfg: BenchConfig,
    first_index: int,
    count: int,
    shared: _Counters,
    slot: int,
    wait_for_start: Callable[[], None],
) -> WorkerResult:
    """One worker's share of the run: connect, wait for the common start, echo (or hold
    idle, then echo once), report."""
    stats = _Stats()
    conns: list[BenchConnection] = []
    failures: list[str] = []
    if cfg.mode == "login":
        opened = count  # its connections open and close in the loops
    else:
        conns, failures = await _open_connections(cfg, first_index, count, stats)
        opened = len(conns)
    shared[slot + 2] = opened
    shared[slot + 3] = _PHASE_READY
    wait_for_start()  # blocks the loop on purpose: every connection is idle until the start
    result = WorkerResult(connections=opened, connect_errors=len(failures))
    result.first_error = failures[0] if failures else ""
    if opened:
        publisher = asyncio.create_task(_publish(stats, conns, shared, slot, cfg.request_timeout_s))
        if cfg.mode == "login":
            await _login_phase(cfg, first_index, count, stats, result)
        elif cfg.idle:
            await _idle_phase(cfg, conns, stats, result)
        else:
            await _echo_phase(cfg, conns, stats, result)
        result.latencies = stats.latencies.tobytes()
        result.first_error = result.first_error or stats.first_error
        result.compressed = stats.compressed
        publisher.cancel()
        shared[slot] = stats.ok
        shared[slot + 1] = stats.errors
        for conn in conns:
            if conn.transport is not None:
                conn.transport.abort()
    shared[slot + 3] = _PHASE_DONE
    return result


async def _echo_phase(
    cfg: BenchConfig, conns: list[BenchConnection], stats: _Stats, result: WorkerResult
) -> None:
    """Closed-loop requests on every connection (ECHO or MOVE), measured."""
    stats.running = True
    if cfg.rate_per_connection > 0:
        # Spread the first requests over one interval, so the load is even, not in waves.
        interval_ns = int(1e9 / cfg.rate_per_connection)
        start = perf_counter_ns()
        for i, conn in enumerate(conns):
            conn.start_paced(interval_ns, start + interval_ns * i // len(conns))
    else:
        for conn in conns:
            conn.send()
    await _measured_window(cfg, stats, result)


async def _measured_window(cfg: BenchConfig, stats: _Stats, result: WorkerResult) -> None:
    """Warm-up, then ``duration_s`` measured, then stop (every closed-loop mode's window;
    the parent's CPU watch assumes exactly this timing)."""
    if cfg.warmup_s > 0:
        await asyncio.sleep(cfg.warmup_s)
    errors_before = stats.errors
    started = time.perf_counter()
    stats.recording = True
    await asyncio.sleep(cfg.duration_s)
    stats.recording = False
    stats.running = False
    result.elapsed_s = time.perf_counter() - started
    result.messages = len(stats.latencies)
    result.errors = stats.errors - errors_before


async def _idle_phase(
    cfg: BenchConfig, conns: list[BenchConnection], stats: _Stats, result: WorkerResult
) -> None:
    """Hold every connection for ``duration_s``, silent or with a PING every
    ``ping_interval_s``; then one ECHO on each that is still open, all at once.

    This is what a lobby full of players looks like to the servers: connections that cost
    memory, not CPU. The closing echo proves each one still works end to end.
    """
    pinger = None
    if cfg.ping_interval_s > 0:
        pinger = asyncio.create_task(_ping_every(conns, cfg.ping_interval_s))
    await asyncio.sleep(cfg.duration_s)
    if pinger is not None:
        pinger.cancel()
    await _all_answered(conns)  # a late PONG must not be taken for the echo's answer
    result.pongs = stats.ok
    result.dropped = sum(1 for conn in conns if conn.transport is None)
    errors_before = stats.errors
    started = time.perf_counter()
    stats.recording = True
    for conn in conns:
        conn.send()
    await _all_answered(conns)
    stats.recording = False
    result.elapsed_s = time.perf_counter() - started
    result.messages = len(stats.latencies)
    result.errors = stats.errors - errors_before


async def _ping_every(conns: list[BenchConnection], interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        for conn in conns:
            conn.ping()


async def _all_answered(conns: list[BenchConnection]) -> None:
    """Until no request is in flight; :func:`_publish` expires the ones never answered.

    Polled, not an Event: signalling would put bookkeeping on the per-answer hot path that
    echo mode is measured with, and this runs twice per idle run.
    """
    while any(conn.in_flight for conn in conns):  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def _worker_process(
    cfg: BenchConfig,
    first_index: int,
    count: int,
    shared: _Counters,
    slot: int,
    start: threading.Barrier,
    results: multiprocessing.connection.Connection,
) -> None:
    raise_nofile_limit()

    def wait_for_start() -> None:
        start.wait(timeout=600)

    try:
        result = uvloop.run(run_worker(cfg, first_index, count, shared, slot, wait_for_start))
    except threading.BrokenBarrierError:
        result = WorkerResult(first_error="aborted before the start")
    except Exception as exc:
        result = WorkerResult(first_error=f"worker failed: {type(exc).__name__}: {exc}")
    results.send(result)
    results.close()


def run_bench(
    cfg: BenchConfig,
    progress: TextIO | None = sys.stderr,
    on_ready: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark in worker processes; return the report (see :func:`build_report`).

    ``on_ready`` runs once every worker has opened (and logged in) its connections and
    before any of them sends another byte: the moment to look at the servers with all
    connections established and idle (``scripts/bench_idle.py`` reads their RSS there).
    """
    processes = max(1, min(cfg.processes, cfg.connections))
    ctx = multiprocessing.get_context("fork")  # cheap, and the parent has no loop or threads
    shared = ctx.Array("q", processes * _SLOTS, lock=False)
    start = ctx.Barrier(processes + 1)
    workers: list[tuple[Any, multiprocessing.connection.Connection]] = []
    first = 0
    for index in range(processes):
        count = cfg.connections // processes + (1 if index < cfg.connections % processes else 0)
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker_process,
            args=(cfg, first, count, shared, index * _SLOTS, start, sender),
            name=f"bench-worker-{index}",
            daemon=True,
        )
        proc.start()
        sender.close()
        workers.append((proc, receiver))
        first += count
    connect_s = 0.0
    try:
        if progress is not None:
            print(f"connecting {cfg.connections} connection(s)...", file=progress, flush=True)
        connecting = time.monotonic()
        cpu: _CpuWatch | None = None
        if _await_ready(workers, shared):
            connect_s = time.monotonic() - connecting
            if progress is not None:
                opened = sum(shared[i * _SLOTS + 2] for i in range(processes))
                print(f"{opened} open after {connect_s:.1f} s", file=progress, flush=True)
            if on_ready is not None:
                on_ready()
            start.wait(timeout=60)
            if not cfg.idle and procstat.available():
                cpu = _CpuWatch(cfg, [proc.pid for proc, _ in workers if proc.pid])
        else:
            start.abort()  # a worker died while connecting: release the others
        results = _collect(workers, shared, cfg, progress)
    finally:
        for proc, _ in workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    report = build_report(cfg, processes, results)
    report["connect_s"] = round(connect_s, 3)
    if cpu is not None and cpu.result:
        report["cpu"] = cpu.result
    return report


class _CpuWatch:
    """Per-process CPU and the machine's idle share over the measured window (the workers'
    warm-up excluded), from a thread of the parent, which only waits meanwhile."""

    def __init__(self, cfg: BenchConfig, worker_pids: list[int]) -> None:
        pids: dict[str, list[int]] = {"loadgen": worker_pids}
        for name, pid in cfg.watch:
            pids.setdefault(name, []).append(pid)
        self.result: dict[str, float] = {}
        self._window = procstat.CpuWindow(pids)
        self._cfg = cfg
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        time.sleep(self._cfg.warmup_s)
        self._window.start()
        time.sleep(max(0.1, self._cfg.duration_s - 0.1))  # inside the window, not past it
        self.result = self._window.stop()


def _await_ready(
    workers: list[tuple[Any, multiprocessing.connection.Connection]], shared: _Counters
) -> bool:
    """Wait until every worker has opened its connections; ``False`` if one died first."""
    while True:
        if all(shared[i * _SLOTS + 3] >= _PHASE_READY for i in range(len(workers))):
            return True
        sentinels = [proc.sentinel for proc, _ in workers]
        if multiprocessing.connection.wait(sentinels, timeout=0.05):
            return all(shared[i * _SLOTS + 3] >= _PHASE_READY for i in range(len(workers)))


def _collect(
    workers: list[tuple[Any, multiprocessing.connection.Connection]],
    shared: _Counters,
    cfg: BenchConfig,
    progress: TextIO | None,
) -> list[WorkerResult]:
    """Gather worker results, printing one progress line per second meanwhile."""
    results: dict[int, WorkerResult] = {}
    started = last_tick = time.monotonic()
    last_ok = last_errors = 0
    second = 0
    while len(results) < len(workers):
        waitables: list[Any] = []
        for index, (proc, receiver) in enumerate(workers):
            if index not in results:
                waitables += [receiver, proc.sentinel]
        ready = multiprocessing.connection.wait(
            waitables, timeout=max(0.0, last_tick + 1.0 - time.monotonic())
        )
        for index, (proc, receiver) in enumerate(workers):
            if index in results:
                continue
            if receiver in ready or receiver.poll():
                with contextlib.suppress(EOFError):
                    results[index] = receiver.recv()
                    continue
            if proc.sentinel in ready and not receiver.poll():
                results[index] = WorkerResult(first_error=f"worker exited ({proc.exitcode})")
        now = time.monotonic()
        if now - last_tick >= 1.0:
            second += 1
            ok = sum(shared[i] for i in range(0, len(shared), _SLOTS))
            errors = sum(shared[i + 1] for i in range(0, len(shared), _SLOTS))
            if progress is not None:
                phase = " (warmup)" if now - started <= cfg.warmup_s else ""
                rate = (ok - last_ok) / (now - last_tick)
                print(
                    f"[{second:3d}s] {rate:10.0f} msg/s  errors {errors - last_errors}{phase}",
                    file=progress,
                    flush=True,
                )
            last_tick, last_ok, last_errors = now, ok, errors
    return [results[i] for i in range(len(workers))]


def build_report(cfg: BenchConfig, processes: int, results: list[WorkerResult]) -> dict[str, Any]:
    """The JSON report: the keys the brief promised plus a few for diagnosis.

    In idle mode ``messages``, ``duration_s`` and the latencies describe the closing ECHO
    round (one per connection), and ``hold_s``, ``ping_interval_s``, ``pongs`` and
    ``dropped`` the hold before it.
    """
    messages = sum(r.messages for r in results)
    elapsed = max((r.elapsed_s for r in results), default=0.0)
    report: dict[str, Any] = {
        "connections": sum(r.connections for r in results),
        "duration_s": round(elapsed, 3),
        "messages": messages,
        "msgs_per_s": round(messages / elapsed, 1) if elapsed > 0 else 0.0,
        **summarize_ms(merge_samples(r.latencies for r in results)),
        "errors": sum(r.errors for r in results),
        "connect_errors": sum(r.connect_errors for r in results),
        "processes": processes,
        "payload_bytes": cfg.payload_bytes,
        "login": cfg.login,
        "first_error": next((r.first_error for r in results if r.first_error), ""),
        "compressed_answers": sum(r.compressed for r in results),
        "rate_per_connection": cfg.rate_per_connection,
    }
    report["mode"] = cfg.mode
    if cfg.idle:
        report.update(
            mode="idle",
            hold_s=cfg.duration_s,
            ping_interval_s=cfg.ping_interval_s,
            pongs=sum(r.pongs for r in results),
            dropped=sum(r.dropped for r in results),
        )
    return report


def format_report(report: dict[str, Any], cfg: BenchConfig) -> str:
    if cfg.idle:
        return _format_idle_report(report, cfg)
    load = (f"paced {cfg.rate_per_connection:g}/s per connection"
            if cfg.rate_per_connection > 0 else "flat out")
    lines = [
        f"target      {cfg.host}:{cfg.port}  ({'login' if cfg.login else 'no login'}, "
        f"{cfg.mode}, {cfg.payload_bytes}-byte payloads{', LZ4' if cfg.lz4 else ''}, {load}, "
        f"{report['processes']} process(es))",
        f"connections {report['connections']} open, {report['connect_errors']} failed",
        f"messages    {report['messages']} in {report['duration_s']} s = "
        f"{report['msgs_per_s']:.0f} msgs/s",
    ]
    if "cpu" in report:
        lines.append("cpu         " + format_cpu(report["cpu"]))
    return "\n".join(lines + _latency_and_errors(report))


def format_cpu(cpu: dict[str, float]) -> str:
    """``loadgen 0.52 gateway 0.66 ... cores; machine 1.60 busy, 20% idle``."""
    processes = " ".join(f"{name} {value:.2f}" for name, value in cpu.items()
                         if name not in ("idle_share", "busy_cores"))
    return (f"{processes} cores; machine {cpu['busy_cores']:.2f} busy, "
            f"{100 * cpu['idle_share']:.0f}% idle")


def _latency_and_errors(report: dict[str, Any]) -> list[str]:
    lines = [
        f"latency ms  p50 {report['p50_ms']}  p90 {report['p90_ms']}  "
        f"p99 {report['p99_ms']}  max {report['max_ms']}",
        f"errors      {report['errors']}",
    ]
    if report["first_error"]:
        lines.append(f"first error {report['first_error']}")
    return lines


def _format_idle_report(report: dict[str, Any], cfg: BenchConfig) -> str:
    keepalive = (f"PING every {cfg.ping_interval_s:g} s, {report['pongs']} answered"
                 if cfg.ping_interval_s > 0 else "silent")
    lines = [
        f"target      {cfg.host}:{cfg.port}  ({'login' if cfg.login else 'no login'}, idle, "
        f"{report['processes']} process(es))",
        f"connections {report['connections']} open, {report['connect_errors']} failed, "
        f"in {report['connect_s']} s",
        f"held        {cfg.duration_s:g} s ({keepalive}), {report['dropped']} dropped",
        f"echo        {report['messages']} answered, one per open connection, in "
        f"{report['duration_s']} s",
    ]
    return "\n".join(lines + _latency_and_errors(report))


def default_user_id_base() -> int:
    """A base unlikely to collide with another run's users (ids stay below 2**31)."""
    return 100_000_000 + (os.getpid() * 7919 + int(time.time() * 1000)) % 1_000_000_000
