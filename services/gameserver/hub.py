"""GameServerHub: turns data-plane records into pipeline runs and owns the local sessions.

Requests of one socket are processed strictly in order: a request that has to wait (login,
reconnect: Redis round trips) parks the socket's later records in a queue until it is done,
while every other socket keeps going. Requests that do not wait run to completion inside
``create_task`` thanks to the eager task factory, so the common case costs no scheduling.

The hub keeps the data plane, the life of the sessions it holds, and housekeeping. Calls
to and from other GameServers are in :mod:`gameserver.mesh_endpoints`
(``hub.mesh_endpoints``), the drain handover in :mod:`gameserver.handover`
(``hub.handover``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections import Counter, deque
from typing import Any

import orjson

from gameserver import metrics
from gameserver.commits import CommitQueue
from gameserver.config import GameServerConfig
from gameserver.context import Reject, RequestContext, store_unavailable_as_reject
from gameserver.handover import Handover
from gameserver.link import GatewayLink
from gameserver.mesh import MeshClient
from gameserver.mesh_endpoints import MeshEndpoints
from gameserver.pipeline import Middleware, Router, compose
from gameserver.state import PlayerState, ResponseCache, Session, SessionTable
from gameserver.store import (
    Location,
    LoginResult,
    ResumeRejected,
    ResumeResult,
    SessionStore,
)
from protocol.internal import Kind, Record, format_socket_id
from protocol.messages import ErrorCode, KickReason, MsgType
from protocol.payload import encode_message
from servicekit.redis_health import REDIS_FAILURES, RedisHealth

log = logging.getLogger("gameserver.hub")

TOMBSTONE_MS = 24 * 3600 * 1000

_Item = tuple[int, bytes, int, bytes]  # kind, gateway_id, pinned session id, body


def new_reconnect_key() -> tuple[str, str]:
    """A fresh single-use key (192 random bits) and the hash Redis stores instead of it."""
    key = secrets.token_urlsafe(24)
    return key, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Hub:
    def __init__(
        self,
        config: GameServerConfig,
        store: SessionStore,
        link: GatewayLink,
        middlewares: list[Middleware],
        router: Router,
        node_id: int,
        health: RedisHealth | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.link = link
        self.node_id = node_id
        self.routing_id = f"gs-{node_id}".encode()
        self.sessions = SessionTable()
        self.lease_ms = int(config.session_lease_s * 1000)
        self.grace_ms = int(config.reconnect_grace_s * 1000)
        #: Shared with the heartbeat loop (the app passes its own).
        self.health = health or RedisHealth("redis", log)
        self.commits = CommitQueue(
            store, self._deliver, self._on_fenced, config.response_cache_size,
            config.max_pending_commits, self.health,
            config.redis_request_timeout_s,
        )
        #: Sockets whose RECONNECT failed on a Redis error after resume.lua was sent: it may
        #: have run (key rotated, socket attached) although the client never learned it.
        self._unsure_resumes: dict[bytes, int] = {}
        #: Sessions whose logout.lua may have run although the LOGOUT was answered
        #: SERVER_UNAVAILABLE: the retry must not be told the session is someone else's.
        self._unsure_logouts: set[int] = set()
        #: Sessions a LOGIN in progress here is replacing (session id -> such logins).
        self._being_replaced: Counter[int] = Counter()
        self.router = router
        self._pipeline = compose(middlewares, router)
        self._busy: dict[bytes, deque[_Item]] = {}
        #: Sessions detached here: session id -> when their grace ends (for the expiry metric).
        self._in_grace: dict[int, float] = {}
        self._loop = asyncio.get_running_loop()
        self.accepting = True
        #: Set by the app once the mesh is up; None on a node without peers.
        self.mesh: MeshClient | None = None
        self.mesh_deadline_s = config.mesh_deadline_s
        self.mesh_endpoints = MeshEndpoints(self)
        self.handover = Handover(self)
        link.on_dropped = self.handover.records_dropped
        metrics.sessions_active.set_function(lambda: len(self.sessions))
        log.info("GameServerHub initialized with %d middlewares", len(middlewares) + 1)

    def hello_ack_body(self) -> bytes:
        """What a Gateway needs for balancing: our load, and whether to stop sending us
        new sessions (told at once on drain, without waiting for the registry)."""
        return orjson.dumps({"sessions": len(self.sessions), "draining": not self.accepting})

    def announce_draining(self) -> None:
        for gateway_id in self.link.live_gateways():
            self.link.send(gateway_id, Kind.HELLO_ACK, bytes(16), self.node_id,
                           self.hello_ack_body())

    # ----------------------------------------------------------------- data plane in
    def on_records(self, gateway_id: bytes, records: list[Record]) -> None:
        for kind, socket_id, arg, body in records:
            if kind == Kind.FRAME or kind == Kind.CLOSED or kind == Kind.HOLD_ACK:
                self._submit(socket_id, (kind, gateway_id, arg, body))
            elif kind == Kind.HELLO:
                if self.link.note_hello(gateway_id):
                    log.info("Gateway connected: Gateway=%s", gateway_id.decode(errors="replace"))
                self.link.send(gateway_id, Kind.HELLO_ACK, socket_id, self.node_id,
                               self.hello_ack_body())
            else:
                log.warning("Ignoring record kind %d from %s", kind,
                            gateway_id.decode(errors="replace"))

    def _submit(self, socket_id: bytes, item: _Item) -> None:
        queue = self._busy.get(socket_id)
        if queue is not None:
            queue.append(item)
            return
        task = self._loop.create_task(self._process(socket_id, item))
        if not task.done():
            self._busy[socket_id] = deque()
            task.add_done_callback(lambda _: self._continue(socket_id))

    def _continue(self, socket_id: bytes) -> None:
        queue = self._busy.get(socket_id)
        while queue:
            task = self._loop.create_task(self._process(socket_id, queue.popleft()))
            if not task.done():
                task.add_done_callback(lambda _: self._continue(socket_id))
                return
        self._busy.pop(socket_id, None)

    async def _process(self, socket_id: bytes, item: _Item) -> None:
        kind, gateway_id, pinned, body = item
        try:
            if kind == Kind.FRAME:
                await self._process_frame(gateway_id, socket_id, pinned, body)
            elif kind == Kind.CLOSED:
                await self._socket_closed(socket_id, body.decode(errors="replace"))
            else:
                await self.handover.hand_over(gateway_id, socket_id)
        except Exception:
            log.exception("Failed to process a record for Socket=%s",
                          format_socket_id(socket_id))

    async def _process_frame(
        self, gateway_id: bytes, socket_id: bytes, pinned: int, frame: bytes
    ) -> None:
        session = self.sessions.by_socket.get(socket_id)
        if (session is None and not self.accepting
                and self.handover.reroute(gateway_id, socket_id, frame)):
            return
        if session is None and pinned:
            session = await self._adopt(gateway_id, socket_id, pinned, frame)
            if session is None:
                return
        ctx = RequestContext(self, gateway_id, socket_id, pinned, frame, session)
        await self._pipeline(ctx)
        response = ctx.response
        if response is None:
            return
        session = ctx.session
        if ctx.needs_commit and session is not None:
            self.commits.add(session, ctx.sequence_id, response)
        elif session is not None and (ctx.hold or session.held):
            # ctx.hold: a retry whose answer is still on its way to Redis; otherwise it only
            # waits for its turn behind held answers.
            self.commits.hold(session, response, ctx.sequence_id, durable=ctx.hold)
        else:
            self.link.send(gateway_id, Kind.SEND, socket_id, 0, response)
        if ctx.close_after:
            self.link.send(gateway_id, Kind.CLOSE, socket_id, 0, b"")

    def redis_deadline(self) -> float:
        """Event-loop time by which a request's Redis work must be done
        (``REDIS_REQUEST_TIMEOUT_S``): past it the request is answered SERVER_UNAVAILABLE.
        A cancelled redis-py call drops its connection, so the pool stays clean."""
        return self._loop.time() + self.config.redis_request_timeout_s

    def _deliver(self, session: Session, response: bytes) -> None:
        """Send a released response to wherever the session is attached now."""
        if session.socket_id is not None and session.gateway_id is not None:
            self.link.send(session.gateway_id, Kind.SEND, session.socket_id, 0, response)

    # ----------------------------------------------------------------- lifecycle
    def pin(self, session: Session) -> None:
        assert session.gateway_id is not None and session.socket_id is not None
        self.link.send(session.gateway_id, Kind.PIN, session.socket_id, session.session_id,
                       self.routing_id)
        log.debug("Session pinned: SocketId=%s, SessionId=%d", format_socket_id(session.socket_id),
                 session.session_id)

    def kick(self, gateway_id: bytes, socket_id: bytes, reason: KickReason) -> None:
        frame = encode_message(MsgType.KICKOUT_NTF, 0, {"reason": reason.value})
        self.link.send(gateway_id, Kind.CLOSE, socket_id, 0, frame)
        metrics.sessions_kicked.labels(reason.value).inc()
        log.info("Kicking socket: Socket=%s, Reason=%s", format_socket_id(socket_id), reason.value)

    def push(self, session: Session, msg_type: MsgType, payload: dict[str, Any]) -> bool:
        if session.socket_id is None or session.gateway_id is None:
            return False
        frame = encode_message(msg_type, 0, payload, session.compress_above)
        self.link.send(session.gateway_id, Kind.SEND, session.socket_id, 0, frame)
        return True

    def _new_session(self, session_id: int, user_id: int, epoch: int, last_seq: int,
                     player: PlayerState, accept_lz4: bool) -> Session:
        return Session(
            commit_keys=self.store.commit_keys(session_id, user_id),
            session_id=session_id, user_id=user_id, epoch=epoch, last_seq=last_seq,
            cache=ResponseCache(self.config.response_cache_size), player=player,
            compress_above=self.config.compression_threshold_bytes if accept_lz4 else None,
        )

    async def login(self, ctx: RequestContext, user_id: int, accept_lz4: bool) -> Session:
        if not self.accepting:
            raise Reject(ErrorCode.SERVER_UNAVAILABLE, "this GameServer is shutting down")
        log.info("Handling unpinned session: Socket=%s, UserId=%d",
                 format_socket_id(ctx.socket_id), user_id)
        key, key_hash = new_reconnect_key()
        deadline = self.redis_deadline()
        replaced = self.sessions.by_user.get(user_id)
        if replaced is not None:
            # A state change of the session we replace may still be committed after
            # login.lua ends it, and be fenced "gone": its socket must then get this login's
            # DUPLICATE_LOGIN kick, not a silent close (see _on_fenced).
            self._being_replaced[replaced.session_id] += 1
        try:
            return await self._login(ctx, user_id, accept_lz4, key, key_hash, deadline)
        finally:
            if replaced is not None:
                self._being_replaced[replaced.session_id] -= 1
                if not self._being_replaced[replaced.session_id]:
                    del self._being_replaced[replaced.session_id]

    async def _login(self, ctx: RequestContext, user_id: int, accept_lz4: bool, key: str,
                     key_hash: str, deadline: float) -> Session:
        released_elsewhere: int | None = None
        login_args = (user_id, key_hash, ctx.gateway_id, ctx.socket_id.hex(), ctx.sequence_id,
                      self.lease_ms, TOMBSTONE_MS, accept_lz4)
        local = self.sessions.by_user.get(user_id)
        #: The session this login replaces, as far as we know (the store checks).
        current = local.session_id if local is not None else None
        with store_unavailable_as_reject(log, "Login failed, Redis unavailable: UserId=%d",
                                         user_id):
            attempt: LoginResult | Location
            async with asyncio.timeout_at(deadline):
                if user_id in self.sessions.by_user:
                    # The session this login replaces may have state changes on their way
                    # to Redis; let them land first, or the login would fence them out and
                    # read stale state.
                    await self.commits.barrier()
                    attempt = await self.store.login(*login_args, current=current)
                else:
                    attempt = await self.store.login_unless_elsewhere(*login_args)
            if isinstance(attempt, Location):
                # Another node owns the user's session: ask it to let go, then log in.
                asked_at = self._loop.time()
                if await self.mesh_endpoints.release_elsewhere(attempt,
                                                               KickReason.DUPLICATE_LOGIN):
                    # Its owner flushed, kicked (DUPLICATE_LOGIN) and forgot it. Had it not
                    # answered in time, the login would go ahead anyway (forced takeover).
                    released_elsewhere = attempt.session_id
                deadline += self._loop.time() - asked_at  # mesh time is not Redis time
                async with asyncio.timeout_at(deadline):
                    attempt = await self.store.login(*login_args,
                                                     current=attempt.session_id)
            result = attempt
        old_local = self.sessions.by_user.get(user_id)
        if old_local is not None and old_local.session_id == result.old_session_id:
            self.sessions.forget(old_local)
        if (result.old_gateway is not None and result.old_socket is not None
                and result.old_session_id != released_elsewhere
                and result.old_socket != ctx.socket_id):
            # (Its own socket: an earlier LOGIN on it ran login.lua but was answered
            # SERVER_UNAVAILABLE; this retry replaces that session, nobody is kicked.)
            # Kicked straight through its Gateway: also when its owner was unreachable or
            # another login raced ours. The owner forgets it when the socket's CLOSED comes.
            self.kick(result.old_gateway, result.old_socket, KickReason.DUPLICATE_LOGIN)
        session = self._new_session(result.session_id, user_id, 1, ctx.sequence_id,
                                    result.player, accept_lz4)
        session.reconnect_key = key
        self.sessions.attach(session, ctx.gateway_id, ctx.socket_id)
        ctx.session = session
        metrics.sessions_created.inc()
        log.info("New session created: UserId=%d, SessionId=%d", user_id, session.session_id)
        self.pin(session)
        return session

    async def reconnect(self, ctx: RequestContext, session_id: int, key: str,
                        accept_lz4: bool) -> Session:
        if not self.accepting:
            raise Reject(ErrorCode.SERVER_UNAVAILABLE, "this GameServer is shutting down")
        new_key, new_hash = new_reconnect_key()
        local = self.sessions.by_id.get(session_id)
        try:
            with store_unavailable_as_reject(
                    log, "Reconnect failed, Redis unavailable: SessionId=%d", session_id):
                async with asyncio.timeout_at(self.redis_deadline()):
                    if local is not None:
                        # Our pending writes carry the epoch; finish them before ownership
                        # is re-checked.
                        await self.commits.barrier()
                    result = await self._resume(ctx, session_id, key, new_hash, accept_lz4,
                                                local.user_id if local is not None else None)
        except ResumeRejected as rejected:
            raise Reject(ErrorCode(rejected.code), "cannot resume this session") from None
        released = False
        if result.old_node_id is not None and result.old_node_id != self.node_id:
            # The key was right and ownership is ours now (new epoch): the old owner's
            # writes are fenced; tell it to kick its socket and forget the session.
            released = await self.mesh_endpoints.release_elsewhere(
                Location(session_id, result.old_node_id, result.old_attached),
                KickReason.SESSION_RESUMED_ELSEWHERE)
        session = self.take_over(ctx.gateway_id, ctx.socket_id, session_id, result,
                                 accept_lz4, None if released
                                 else KickReason.SESSION_RESUMED_ELSEWHERE)
        ctx.session = session
        session.reconnect_key = new_key
        metrics.sessions_resumed.labels("reconnect").inc()
        log.info("Session resumed: UserId=%d, SessionId=%d, Socket=%s", session.user_id,
                 session_id, format_socket_id(ctx.socket_id))
        return session

    async def _resume(self, ctx: RequestContext, session_id: int, key: str, new_hash: str,
                      accept_lz4: bool, user_id: int | None) -> ResumeResult:
        """resume.lua for a RECONNECT; if an earlier RECONNECT of this socket failed after
        sending it, that one may have rotated the key, so a refused key is retried as an
        adoption (no key; succeeds only if Redis already has this very socket attached,
        which only a correct key on this socket could have done)."""
        socket_hex = ctx.socket_id.hex()
        try:
            result = await self.store.resume(session_id, hash_key(key), new_hash,
                                             ctx.gateway_id, socket_hex, self.lease_ms,
                                             accept_lz4, user_id)
        except ResumeRejected:
            if self._unsure_resumes.get(ctx.socket_id) != session_id:
                raise
            result = await self.store.resume(session_id, "", new_hash, ctx.gateway_id,
                                             socket_hex, self.lease_ms, accept_lz4, user_id)
        except REDIS_FAILURES:
            self._unsure_resumes[ctx.socket_id] = session_id
            raise
        self._unsure_resumes.pop(ctx.socket_id, None)
        return result

    def take_over(self, gateway_id: bytes, socket_id: bytes, session_id: int,
                  result: ResumeResult, accept_lz4: bool, reason: KickReason | None) -> Session:
        """Install a session that Redis just gave us (resume.lua) on ``socket_id``;
        ``reason``: kick the session's previous socket with it (None: already done)."""
        local = self.sessions.by_id.get(session_id)
        if local is not None and local.epoch == result.epoch:
            session = local
            session.last_seq = max(session.last_seq, result.last_seq)
            session.compress_above = (self.config.compression_threshold_bytes
                                      if accept_lz4 else None)
        else:
            if local is not None:
                self.sessions.forget(local)
            session = self._new_session(session_id, result.user_id, result.epoch,
                                        result.last_seq, result.player, accept_lz4)
            for seq, body in reversed(result.responses):
                session.cache.put(seq, body)
        if (result.old_attached and result.old_gateway is not None
                and result.old_socket is not None and result.old_socket != socket_id):
            self.sessions.detach_socket(result.old_socket)
            if reason is not None:
                self.kick(result.old_gateway, result.old_socket, reason)
        previous_user_session = self.sessions.by_user.get(session.user_id)
        if previous_user_session is not None and previous_user_session is not session:
            self.sessions.forget(previous_user_session)
        self.sessions.attach(session, gateway_id, socket_id)
        self._in_grace.pop(session_id, None)
        self.pin(session)
        return session

    async def _adopt(self, gateway_id: bytes, socket_id: bytes, session_id: int,
                     frame: bytes) -> Session | None:
        """A pinned socket whose session this process does not know (it restarted): take
        the session over from Redis if the socket is still the session's own."""
        probe = RequestContext(self, gateway_id, socket_id, session_id, frame, None)
        try:
            async with asyncio.timeout_at(self.redis_deadline()):
                result = await self.store.resume(session_id, "", "", gateway_id,
                                                 socket_id.hex(), self.lease_ms, None)
        except ResumeRejected as rejected:
            log.info("Pinned socket has no resumable session: Socket=%s, SessionId=%d (%s)",
                     format_socket_id(socket_id), session_id, rejected.code)
            probe.fail(ErrorCode.INVALID_SESSION, "session is gone; log in again")
            assert probe.response is not None
            self.link.send(gateway_id, Kind.SEND, socket_id, 0, probe.response)
            self.link.send(gateway_id, Kind.PIN, socket_id, 0, self.routing_id)
            return None
        except REDIS_FAILURES as exc:
            log.error("Cannot adopt session, Redis unavailable: SessionId=%d: %s",
                      session_id, str(exc) or type(exc).__name__)
            probe.fail(ErrorCode.SERVER_UNAVAILABLE, "session store unavailable")
            assert probe.response is not None
            self.link.send(gateway_id, Kind.SEND, socket_id, 0, probe.response)
            return None
        session = self.take_over(gateway_id, socket_id, session_id, result,
                                 result.accept_lz4, KickReason.SESSION_RESUMED_ELSEWHERE)
        metrics.sessions_resumed.labels("adopt").inc()
        log.info("Session adopted after restart: UserId=%d, SessionId=%d, Socket=%s",
                 session.user_id, session_id, format_socket_id(socket_id))
        return session

    async def logout(self, session: Session) -> None:
        with store_unavailable_as_reject(log, "Logout failed, Redis unavailable: SessionId=%d",
                                         session.session_id):
            try:
                async with asyncio.timeout_at(self.redis_deadline()):
                    await self.commits.barrier()
                    ended = await self.store.logout(session.session_id, session.user_id,
                                                    session.epoch)
            except REDIS_FAILURES:
                # logout.lua may have run: the retry must not be told "taken over elsewhere".
                self._unsure_logouts.add(session.session_id)
                raise
        self.sessions.forget(session)
        if session.session_id in self._unsure_logouts:
            self._unsure_logouts.discard(session.session_id)
            ended = True  # (an earlier attempt may have ended it already)
        if not ended:
            log.warning("Logout of a session owned elsewhere now: SessionId=%d",
                        session.session_id)
            raise Reject(ErrorCode.INVALID_SESSION, "this session was taken over elsewhere")
        metrics.sessions_logged_out.inc()
        log.info("Session logged out: UserId=%d, SessionId=%d", session.user_id,
                 session.session_id)

    async def _socket_closed(self, socket_id: bytes, reason: str) -> None:
        self.handover.done(socket_id)  # a socket gone mid-handover needs none
        self._unsure_resumes.pop(socket_id, None)
        session = self.sessions.by_socket.get(socket_id)
        if session is None or session.socket_id != socket_id:
            return
        self._unsure_logouts.discard(session.session_id)  # no LOGOUT retry can come now
        self.sessions.detach_socket(socket_id)
        await self.commits.barrier()
        if _reattached_or_gone(session):
            return
        try:
            detached = await self.store.detach(session.session_id, session.user_id,
                                               session.epoch, socket_id.hex(),
                                               session.durable_seq(),
                                               self.grace_ms, TOMBSTONE_MS)
        except REDIS_FAILURES as exc:
            log.error("Could not mark session detached (its lease will expire it): "
                      "SessionId=%d: %s", session.session_id, exc)
            detached = False
        if not _reattached_or_gone(session):
            self.sessions.forget(session)
        if detached:
            self._in_grace[session.session_id] = self._loop.time() + self.config.reconnect_grace_s
            metrics.sessions_detached.inc()
            log.info("Session detached: SessionId=%d, Socket=%s, Reason=%s, resumable for %ss",
                     session.session_id, format_socket_id(socket_id), reason,
                     self.config.reconnect_grace_s)

    def _on_fenced(self, session: Session, reason: str) -> None:
        """The session is not ours any more: drop it here without touching Redis.

        ``moved``: another owner took it (newer epoch): its socket gets
        SESSION_RESUMED_ELSEWHERE. ``gone``: it no longer exists (lease expired, Redis lost
        its data): the socket is closed without a kick, so a client's RECONNECT learns
        INVALID_SESSION and logs in again.
        """
        log.warning("Session no longer ours (%s), dropping local copy: SessionId=%d",
                    reason, session.session_id)
        metrics.sessions_fenced.inc()
        if session.session_id in self._being_replaced:
            pass  # a LOGIN of its user replaced it here: that login kicks its socket
        elif session.socket_id is not None and session.gateway_id is not None:
            if reason == "moved":
                self.kick(session.gateway_id, session.socket_id,
                          KickReason.SESSION_RESUMED_ELSEWHERE)
            else:
                self.link.send(session.gateway_id, Kind.CLOSE, session.socket_id, 0, b"")
        self.sessions.forget(session)

    # ----------------------------------------------------------------- housekeeping
    async def renew_leases(self) -> None:
        owned = [(s.session_id, s.user_id) for s in self.sessions.by_id.values()
                 if s.socket_id is not None]
        for start in range(0, len(owned), 1000):
            lost = await self.store.renew(owned[start:start + 1000], self.lease_ms)
            for sid, reason in lost.items():
                session = self.sessions.by_id.get(sid)
                if session is not None:
                    self._on_fenced(session, reason)

    async def count_expired(self) -> None:
        """Sessions detached here whose grace has passed and that Redis no longer holds
        were not resumed (approximate: one resumed elsewhere and logged out counts too)."""
        now = self._loop.time()
        due = [sid for sid, deadline in self._in_grace.items() if deadline + 1.0 <= now]
        for sid in due:
            del self._in_grace[sid]
            if not await self.store.session_exists(sid):
                metrics.sessions_expired.inc()

    async def shutdown(self) -> None:
        """Stop taking sessions, commit everything, leave sessions resumable, kick sockets
        with SERVER_SHUTDOWN so clients reconnect (to another GameServer)."""
        self.accepting = False
        self.announce_draining()
        try:
            await asyncio.wait_for(self.commits.barrier(), self.config.drain_timeout_s)
        except TimeoutError:
            log.error("Drain timed out with %d session writes not committed",
                      self.commits.pending)
        for session in list(self.sessions.by_id.values()):
            gateway_id, socket_id = session.gateway_id, session.socket_id
            if socket_id is None or gateway_id is None:
                continue
            try:
                await self.store.detach(session.session_id, session.user_id, session.epoch,
                                        socket_id.hex(), session.durable_seq(),
                                        self.grace_ms, TOMBSTONE_MS)
            except REDIS_FAILURES as exc:
                log.error("Could not detach SessionId=%d at shutdown: %s",
                          session.session_id, exc)
            self.kick(gateway_id, socket_id, KickReason.SERVER_SHUTDOWN)
            self.sessions.forget(session)
        self.link.flush()


def _reattached_or_gone(session: Session) -> bool:
    """After an await: did a RECONNECT re-attach the session, or did it end meanwhile?"""
    return session.socket_id is not None or session.closed
