"""Sessions in Redis, the single source of truth: every multi-key change is one Lua script.

The scripts live in ``lua/`` and are documented in docs/SESSION_LIFECYCLE.md. Each declares
every key it touches in ``KEYS`` (named by servicekit.keys), and the keys of one call share a
hash slot, so the same scripts run on Redis Cluster. Each call is timed and counted per
operation, so a slow or failing Redis shows up in the dashboards; the time includes the wait
for the end of the tick, since the calls of one tick go to Redis in one pipeline
(gameserver.script_calls).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.exceptions import RedisError

from gameserver import metrics
from gameserver.replica_wait import ReplicaWait
from gameserver.script_calls import ScriptCalls
from gameserver.state import PlayerState
from servicekit.keys import Keys, slot_of_session
from servicekit.redis_client import RedisClient

SEQ_BYTES = 8


def _script_text(name: str) -> str:
    return resources.files("gameserver").joinpath("lua", f"{name}.lua").read_text()


def _text(value: Any) -> str:
    if value is None or value is False:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class LoginResult:
    session_id: int
    old_session_id: int | None
    old_node_id: int | None
    old_gateway: bytes | None
    old_socket: bytes | None
    player: PlayerState


@dataclass(slots=True)
class ResumeResult:
    user_id: int
    epoch: int
    last_seq: int
    old_gateway: bytes | None
    old_socket: bytes | None
    old_attached: bool
    old_node_id: int | None
    player: PlayerState
    accept_lz4: bool
    responses: list[tuple[int, bytes]]  # newest first


@dataclass(frozen=True, slots=True)
class Location:
    session_id: int
    node_id: int
    attached: bool


class ResumeRejected(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class LoginContended(RedisError):
    """The user's current session changed under every attempt of one login (logins of the
    same user racing without end): answered like a Redis failure, SERVER_UNAVAILABLE."""


#: Calls one login makes at most: a replaced session seen late, or a session id drawn twice.
LOGIN_ATTEMPTS = 4


@dataclass(slots=True)
class SessionWrite:
    """One session's part of a group commit."""

    session_id: int
    epoch: int
    user_id: int
    player: PlayerState
    last_seq: int
    responses: list[tuple[int, bytes]]
    #: SessionStore.commit_keys of the session, if the caller has them already.
    keys: tuple[str, ...] = ()


class SessionStore:
    """The session operations, each one script call (or, where noted, two).

    ``per_slot``: on Redis Cluster a call may only touch one hash slot, so the group commit
    and the lease renewal send one call per slot (all in the tick's pipeline, which redis-py
    splits per master); on one Redis they send one call for everything."""

    def __init__(self, client: RedisClient, keys: Keys, owner: str, node_id: int,
                 per_slot: bool = False, wait: ReplicaWait | None = None) -> None:
        self.client = client
        self.keys = keys
        self.owner = owner
        self.node_id = node_id
        self.per_slot = per_slot
        self._calls = ScriptCalls(client, {
            name: _script_text(name)
            for name in ("login", "resume", "commit", "detach", "logout", "renew",
                         "end_session")
        }, wait)

    async def close(self) -> None:
        """Let the script calls in flight finish."""
        await self._calls.close()

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any],
                   durable: bool = False) -> Any:
        start = time.perf_counter()
        try:
            return await self._calls.call(name, keys, args, durable)
        except Exception:
            metrics.redis_errors.labels(name).inc()
            raise
        finally:
            metrics.redis_duration.labels(name).observe(time.perf_counter() - start)

    def commit_keys(self, session_id: int, user_id: int) -> tuple[str, str, str]:
        """The keys a commit of this session declares. A session keeps them
        (``Session.commit_keys``): formatting them at every commit cost 3% of the
        GameServer's CPU under MOVE load."""
        session, responses, _ = self.keys.session_keys(session_id)
        return session, responses, self.keys.player(user_id)

    async def _run_each(self, name: str,
                        calls: Sequence[tuple[Sequence[str], Sequence[Any], int | None]],
                        durable: bool = False) -> list[Any]:
        """Several calls of one script in this tick's pipeline (one per hash slot on a
        cluster), timed and counted as one operation. Plain futures, gathered: a task per
        call cost a sixth of the GameServer's CPU with hundreds of slots per commit."""
        start = time.perf_counter()
        try:
            futures = [self._calls.call(name, keys, args, durable, slot)
                       for keys, args, slot in calls]
            # Every outcome is collected (no "exception never retrieved"); the first failure
            # fails the operation, which the caller retries whole (commits are idempotent).
            results = await asyncio.gather(*futures, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return results
        except Exception:
            metrics.redis_errors.labels(name).inc()
            raise
        finally:
            metrics.redis_duration.labels(name).observe(time.perf_counter() - start)

    def _by_slot[T](self, items: Sequence[T], session_id: Any
                    ) -> list[tuple[int | None, Sequence[T]]]:
        """``items`` grouped by their session's hash slot (one group, slot None, on one
        Redis)."""
        if not self.per_slot:
            return [(None, items)] if items else []
        groups: dict[int, list[T]] = {}
        for item in items:
            groups.setdefault(slot_of_session(session_id(item)), []).append(item)
        return list(groups.items())

    # ------------------------------------------------------------------ login
    async def login(
        self, user_id: int, key_hash: str, gateway: bytes, socket_hex: str, login_seq: int,
        lease_ms: int, tomb_ms: int, accept_lz4: bool, current: int | None = None,
    ) -> LoginResult:
        """Replace the user's session, wherever it is, with a new one. ``current``: the
        user's session as far as the caller knows (saves a call when it is right)."""
        result = await self._login(user_id, key_hash, gateway, socket_hex, login_seq,
                                   lease_ms, tomb_ms, accept_lz4, False, current)
        assert isinstance(result, LoginResult)  # never deferred
        return result

    async def login_unless_elsewhere(
        self, user_id: int, key_hash: str, gateway: bytes, socket_hex: str, login_seq: int,
        lease_ms: int, tomb_ms: int, accept_lz4: bool, current: int | None = None,
    ) -> LoginResult | Location:
        """:meth:`login`, except that a session of the user owned by another node is left
        alone and its :class:`Location` returned, so that its owner can be asked to let go
        first. One round trip, not a lookup and then a login, in the usual case: no session,
        or one of ours."""
        return await self._login(user_id, key_hash, gateway, socket_hex, login_seq,
                                 lease_ms, tomb_ms, accept_lz4, True, current)

    async def _login(
        self, user_id: int, key_hash: str, gateway: bytes, socket_hex: str, login_seq: int,
        lease_ms: int, tomb_ms: int, accept_lz4: bool, defer: bool, current: int | None,
    ) -> LoginResult | Location:
        """login.lua must declare the keys of the session it replaces, which only Redis
        knows for sure: it is called with the caller's guess (usually right: no session, or
        the one this node holds), and answers CURRENT with the real one when the guess was
        wrong; then it is called again with that one's keys."""
        keys = self.keys
        user_keys = (keys.user_session(user_id), keys.player(user_id))
        for _ in range(LOGIN_ATTEMPTS):
            session_id = keys.new_session_id(user_id)
            declared = [*user_keys, *keys.session_keys(session_id)]
            if current:
                declared += keys.session_keys(current)
            r = await self._run("login", declared, (
                session_id, current or "", user_id, key_hash, self.owner, self.node_id,
                gateway.decode(), socket_hex, login_seq, lease_ms, int(time.time() * 1000),
                tomb_ms, int(accept_lz4), int(defer),
            ))
            if r[0] == b"CURRENT":
                current = int(r[1]) if r[1] else None
                continue
            if r[0] == b"TAKEN":
                continue
            if r[0] == b"ELSEWHERE":
                return Location(int(r[1]), int(r[2]), r[3] == b"1")
            return LoginResult(
                session_id=int(r[0]),
                old_session_id=int(r[1]) if r[1] else None,
                old_node_id=int(r[2]) if r[2] else None,
                old_gateway=r[3] if r[3] else None,
                old_socket=bytes.fromhex(_text(r[4])) if r[4] and r[5] == b"1" else None,
                player=PlayerState.from_redis(r[6], r[7], r[8]),
            )
        raise LoginContended(f"the session of user {user_id} kept changing during a login")

    # ------------------------------------------------------------------ resume
    async def resume(
        self, session_id: int, key_hash: str, new_key_hash: str, gateway: bytes,
        socket_hex: str, lease_ms: int, accept_lz4: bool | None, user_id: int | None = None,
    ) -> ResumeResult:
        """RECONNECT (with a key) or adoption of a pinned socket (``key_hash=''``);
        ``accept_lz4=None`` keeps the session's stored compression choice. ``user_id``: the
        session's user if the caller knows it; if not, it is read first (the script must
        declare the user's keys)."""
        keys = self.keys
        if user_id is None:
            user_id = await self._user_of(session_id)
        r = await self._run("resume", (*keys.session_keys(session_id),
                                       keys.user_session(user_id), keys.player(user_id)), (
            session_id, user_id, key_hash, new_key_hash, self.owner, self.node_id,
            gateway.decode(), socket_hex, lease_ms,
            "" if accept_lz4 is None else int(accept_lz4),
        ))
        if r[0] == b"ERR":
            raise ResumeRejected(_text(r[1]))
        responses = []
        for entry in r[12:]:
            responses.append((int.from_bytes(entry[:SEQ_BYTES], "big"), bytes(entry[SEQ_BYTES:])))
        old_socket_text = _text(r[5])
        return ResumeResult(
            user_id=int(r[1]),
            epoch=int(r[2]),
            last_seq=int(r[3] or 0),
            old_gateway=r[4] if r[4] else None,
            old_socket=bytes.fromhex(old_socket_text) if old_socket_text else None,
            old_attached=r[6] == b"1",
            old_node_id=int(r[7]) if r[7] else None,
            player=PlayerState.from_redis(r[8], r[9], r[10]),
            accept_lz4=r[11] == b"1",
            responses=responses,
        )

    async def _user_of(self, session_id: int) -> int:
        """The session's user (it never changes); ResumeRejected when there is no such
        session: SESSION_EXPIRED if its tombstone is still there."""
        session, _, tombstone = self.keys.session_keys(session_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(session, "user_id")
            pipe.exists(tombstone)
            user_id, expired = await pipe.execute()
        if user_id is None:
            raise ResumeRejected("SESSION_EXPIRED" if expired else "INVALID_SESSION")
        return int(user_id)

    # ------------------------------------------------------------------ data plane
    async def commit(self, writes: Sequence[SessionWrite], cache_size: int) -> dict[int, str]:
        """Write all changes (atomically per call: one call, or one per hash slot on a
        cluster); returns the sessions not written, each with ``'moved'`` (another owner)
        or ``'gone'`` (no longer exists). Durable: with REDIS_WAIT_REPLICAS it returns
        only once the replicas have it (else NotReplicated, and the caller retries)."""
        groups = self._by_slot(writes, lambda w: w.session_id)
        if len(groups) == 1 and groups[0][0] is None:  # one Redis: no gather (every tick)
            keys, args = self._commit_call(groups[0][1], cache_size)
            answers = [await self._run("commit", keys, args, durable=True)]
        else:
            answers = await self._run_each(
                "commit", [(*self._commit_call(group, cache_size), slot)
                           for slot, group in groups], durable=True)
        fenced: dict[int, str] = {}
        for answer in answers:
            fenced.update((int(answer[i]), _text(answer[i + 1]))
                          for i in range(0, len(answer), 2))
        return fenced

    def _commit_call(self, writes: Sequence[SessionWrite], cache_size: int
                     ) -> tuple[list[str], list[Any]]:
        """commit.lua's keys and arguments for ``writes``."""
        declared: list[str] = []
        args: list[Any] = [cache_size, self.owner]
        for w in writes:
            declared += w.keys or self.commit_keys(w.session_id, w.user_id)
            player = w.player
            args.append(f"{w.session_id} {w.epoch} {player.x!r} {player.y!r} "
                        f"{player.moves} {w.last_seq} {len(w.responses)}".encode())
            args += [seq.to_bytes(SEQ_BYTES, "big") + body for seq, body in w.responses]
        return declared, args

    # ------------------------------------------------------------------ end of a socket
    def _ending_keys(self, session_id: int, user_id: int) -> list[str]:
        return [*self.keys.session_keys(session_id), self.keys.user_session(user_id)]

    async def detach(self, session_id: int, user_id: int, epoch: int, socket_hex: str,
                     last_seq: int, grace_ms: int, tomb_ms: int) -> bool:
        r = await self._run("detach", self._ending_keys(session_id, user_id), (
            session_id, epoch, socket_hex, last_seq, grace_ms, tomb_ms, self.owner))
        return bool(r)

    async def logout(self, session_id: int, user_id: int, epoch: int) -> bool:
        return bool(await self._run("logout", self._ending_keys(session_id, user_id),
                                    (session_id, epoch, self.owner)))

    async def end_detached(self, session_id: int, user_id: int) -> bool:
        """End a session that no process holds (in its reconnect grace)."""
        return bool(await self._run("end_session", self._ending_keys(session_id, user_id),
                                    (session_id,)))

    # ------------------------------------------------------------------ housekeeping
    async def renew(self, sessions: Sequence[tuple[int, int]], lease_ms: int
                    ) -> dict[int, str]:
        """Extend the leases of ``(session id, user id)``s; returns the sessions no longer
        ours ('moved' or 'gone')."""
        calls: list[tuple[Sequence[str], Sequence[Any], int | None]] = []
        for slot, group in self._by_slot(sessions, lambda s: s[0]):
            declared: list[str] = []
            for session_id, user_id in group:
                session, responses, _ = self.keys.session_keys(session_id)
                declared += (session, responses, self.keys.user_session(user_id))
            calls.append((declared, (self.owner, lease_ms, *(sid for sid, _ in group)), slot))
        lost: dict[int, str] = {}
        for answer in await self._run_each("renew", calls):
            lost.update((int(answer[i]), _text(answer[i + 1]))
                        for i in range(0, len(answer), 2))
        return lost

    async def locate_user(self, user_id: int) -> Location | None:
        """The user's current session and the node that owns it, if any. Two reads, not a
        script: the answer is a hint either way (it may change the moment it is read), and
        the session's keys are only known once its id is."""
        session_id = await self.client.get(self.keys.user_session(user_id))
        if session_id is None:
            return None
        node_id, attached = await self.client.hmget(self.keys.session(int(session_id)),
                                                    "node_id", "attached")
        if node_id is None:
            return None
        return Location(int(session_id), int(node_id), attached == b"1")

    async def session_exists(self, session_id: int) -> bool:
        return bool(await self.client.exists(self.keys.session(session_id)))
