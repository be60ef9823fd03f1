"""Sessions in Redis, the single source of truth: every multi-key change is one Lua script.

The scripts live in ``lua/`` and are documented in docs/SESSION_LIFECYCLE.md. Each call is
timed and counted per operation, so a slow or failing Redis shows up in the dashboards; the
time includes the wait for the end of the tick, since the calls of one tick go to Redis in
one pipeline (gameserver.script_calls).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from gameserver import metrics
from gameserver.keys import Keys
from gameserver.script_calls import ScriptCalls
from gameserver.state import PlayerState

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


def _location(raw: Any) -> Location | None:
    if not raw:
        return None
    return Location(int(raw[0]), int(raw[1]), raw[2] == b"1")


class ResumeRejected(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(slots=True)
class SessionWrite:
    """One session's part of a group commit."""

    session_id: int
    epoch: int
    user_id: int
    player: PlayerState
    last_seq: int
    responses: list[tuple[int, bytes]]


class SessionStore:
    def __init__(self, client: aioredis.Redis, keys: Keys, owner: str, node_id: int) -> None:
        self.client = client
        self.keys = keys
        self.owner = owner
        self.node_id = node_id
        self._calls = ScriptCalls(client, {
            name: _script_text(name)
            for name in ("login", "resume", "commit", "detach", "logout", "renew", "locate",
                         "end_session")
        })

    async def close(self) -> None:
        """Let the script calls in flight finish."""
        await self._calls.close()

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        start = time.perf_counter()
        try:
            return await self._calls.call(name, keys, args)
        except Exception:
            metrics.redis_errors.labels(name).inc()
            raise
        finally:
            metrics.redis_duration.labels(name).observe(time.perf_counter() - start)

    async def login(
        self, user_id: int, key_hash: str, gateway: bytes, socket_hex: str, login_seq: int,
        lease_ms: int, tomb_ms: int, accept_lz4: bool,
    ) -> LoginResult:
        """Replace the user's session, wherever it is, with a new one."""
        result = await self._login(user_id, key_hash, gateway, socket_hex, login_seq,
                                   lease_ms, tomb_ms, accept_lz4, defer=False)
        assert isinstance(result, LoginResult)  # never deferred
        return result

    async def login_unless_elsewhere(
        self, user_id: int, key_hash: str, gateway: bytes, socket_hex: str, login_seq: int,
        lease_ms: int, tomb_ms: int, accept_lz4: bool,
    ) -> LoginResult | Location:
        """:meth:`login`, except that a session of the user owned by another node is left
        alone and its :class:`Location` returned, so that its owner can be asked to let go
        first. One round trip, not a lookup and then a login, in the usual case: no session,
        or one of ours."""
        return await self._login(user_id, key_hash, gateway, socket_hex, login_seq,
                                 lease_ms, tomb_ms, accept_lz4, defer=True)

    async def _login(
        self, user_id: int, key_hash: str, gateway: bytes, socket_hex: str, login_seq: int,
        lease_ms: int, tomb_ms: int, accept_lz4: bool, defer: bool,
    ) -> LoginResult | Location:
        r = await self._run("login", (), (
            self.keys.prefix, user_id, key_hash, self.owner, self.node_id, gateway.decode(),
            socket_hex, login_seq, lease_ms, int(time.time() * 1000), tomb_ms,
            int(accept_lz4), int(defer),
        ))
        if r[0] == b"ELSEWHERE":
            return Location(int(r[1]), int(r[2]), r[3] == b"1")
        old_sid = int(r[1]) if r[1] else None
        return LoginResult(
            session_id=int(r[0]),
            old_session_id=old_sid,
            old_node_id=int(r[2]) if r[2] else None,
            old_gateway=r[3] if r[3] else None,
            old_socket=bytes.fromhex(_text(r[4])) if r[4] and r[5] == b"1" else None,
            player=PlayerState.from_redis(r[6], r[7], r[8]),
        )

    async def resume(
        self, session_id: int, key_hash: str, new_key_hash: str, gateway: bytes,
        socket_hex: str, lease_ms: int, accept_lz4: bool | None,
    ) -> ResumeResult:
        """RECONNECT (with a key) or adoption of a pinned socket (``key_hash=''``);
        ``accept_lz4=None`` keeps the session's stored compression choice."""
        r = await self._run("resume", (), (
            self.keys.prefix, session_id, key_hash, new_key_hash, self.owner, self.node_id,
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

    async def commit(self, writes: Sequence[SessionWrite], cache_size: int,
                     lease_ms: int) -> dict[int, str]:
        """Write all changes atomically; returns the sessions not written, each with
        ``'moved'`` (another owner) or ``'gone'`` (no longer exists)."""
        args: list[Any] = [self.keys.prefix, cache_size, lease_ms, self.owner]
        for w in writes:
            player = w.player
            args.append(f"{w.session_id} {w.epoch} {w.user_id} {player.x!r} {player.y!r} "
                        f"{player.moves} {w.last_seq} {len(w.responses)}".encode())
            args += [seq.to_bytes(SEQ_BYTES, "big") + body for seq, body in w.responses]
        fenced = await self._run("commit", (), args)
        return {int(fenced[i]): _text(fenced[i + 1]) for i in range(0, len(fenced), 2)}

    async def detach(self, session_id: int, epoch: int, socket_hex: str, last_seq: int,
                     grace_ms: int, tomb_ms: int) -> bool:
        r = await self._run("detach", (), (
            self.keys.prefix, session_id, epoch, socket_hex, last_seq, grace_ms, tomb_ms,
            self.owner))
        return bool(r)

    async def logout(self, session_id: int, epoch: int) -> bool:
        return bool(await self._run("logout", (), (self.keys.prefix, session_id, epoch,
                                                    self.owner)))

    async def renew(self, session_ids: Sequence[int], lease_ms: int) -> dict[int, str]:
        """Extend the leases; returns the sessions no longer ours ('moved' or 'gone')."""
        lost = await self._run("renew", (), (self.keys.prefix, self.owner, lease_ms,
                                              *session_ids))
        return {int(lost[i]): _text(lost[i + 1]) for i in range(0, len(lost), 2)}

    async def locate_user(self, user_id: int) -> Location | None:
        """The user's current session and the node that owns it, if any."""
        return _location(await self._run("locate", (), (self.keys.prefix, user_id, "")))

    async def locate_session(self, session_id: int) -> Location | None:
        return _location(await self._run("locate", (), (self.keys.prefix, "", session_id)))

    async def end_detached(self, session_id: int) -> bool:
        """End a session that no process holds (in its reconnect grace)."""
        return bool(await self._run("end_session", (), (self.keys.prefix, session_id)))

    async def session_exists(self, session_id: int) -> bool:
        return bool(await self.client.exists(self.keys.session(session_id)))
