"""gameserver.store against a real redis-server, with the keys of servicekit.keys: every
script call declares keys of one hash slot (what Redis Cluster demands) when the store runs
per slot; a login that replaces a session it did not know about still declares it (the
CURRENT round); a RECONNECT naming only the session finds its user; and two prefixes share
one Redis without touching each other's keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from redis.crc import key_slot

from gameserver.hub import hash_key
from gameserver.state import PlayerState
from gameserver.store import ResumeRejected, SessionStore, SessionWrite
from servicekit.keys import Keys
from servicekit.redis_client import open_redis
from tests.support.redis_servers import RedisServer
from tests.support.waiting import wait_until_async

LEASE_MS = 60_000
GATEWAY = b"gw-1-test"


class RecordingStore(SessionStore):
    """The real store; each script call's name and keys are kept for the test (taken where
    every call goes: its ScriptCalls)."""

    calls: list[tuple[str, list[str]]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = []
        send = self._calls.call

        def recording(name: str, keys: Sequence[str], args: Sequence[Any],
                      durable: bool = False, slot: int | None = None) -> Any:
            self.calls.append((name, list(keys)))
            return send(name, keys, args, durable, slot)

        self._calls.call = recording  # type: ignore[method-assign]


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RecordingStore, ...]]:
    client = open_redis(redis_server.connection)
    made = []
    for prefix in ("test-a:", "test-b:"):
        store = RecordingStore(client, Keys(prefix), owner=f"1:{prefix}", node_id=1,
                               per_slot=True)
        made.append(store)
    try:
        yield tuple(made)
    finally:
        for store in made:
            await store.close()
        await client.aclose()


async def _gone(store: SessionStore, session_id: int) -> bool:
    return not await store.session_exists(session_id)


async def _login(store: SessionStore, user_id: int, socket: str, key: str = "k",
                 current: int | None = None) -> int:
    result = await store.login(user_id, hash_key(key), GATEWAY, socket, 1, LEASE_MS, 60_000,
                               False, current=current)
    return result.session_id


async def test_every_call_declares_keys_of_one_slot(
        stores: tuple[RecordingStore, ...]) -> None:
    store = stores[0]
    users = [101, 202, 303]
    sessions = {u: await _login(store, u, f"{u:032x}") for u in users}
    writes = [SessionWrite(session_id=sessions[u], epoch=1, user_id=u,
                           player=PlayerState(x=1.5, y=-2.0, moves=1), last_seq=2,
                           responses=[(2, b"answer")]) for u in users]
    assert await store.commit(writes, cache_size=8) == {}
    assert await store.renew([(sessions[u], u) for u in users], LEASE_MS) == {}
    assert await store.detach(sessions[101], 101, 1, f"{101:032x}", 2, 30_000, 60_000)
    resumed = await store.resume(sessions[101], hash_key("k"), hash_key("k2"), GATEWAY,
                                 "ff" * 16, LEASE_MS, None)
    assert (resumed.user_id, resumed.player.moves, resumed.responses) == (101, 1,
                                                                          [(2, b"answer")])
    assert await store.logout(sessions[202], 202, 1)
    assert await store.detach(sessions[303], 303, 1, f"{303:032x}", 2, 30_000, 60_000)
    assert await store.end_detached(sessions[303], 303)
    kinds = {name for name, _ in store.calls}
    assert kinds == {"login", "commit", "renew", "detach", "resume", "logout", "end_session"}
    for name, keys in store.calls:
        assert len({key_slot(k.encode()) for k in keys}) == 1, (name, keys)
    # Three users in three slots: the commit and the renewal went out as three calls each.
    assert sum(1 for name, _ in store.calls if name == "commit") == 3


async def test_a_login_replacing_an_unknown_session_declares_it_and_ends_it(
        stores: tuple[RecordingStore, ...], redis_server: RedisServer) -> None:
    store = stores[0]
    first = await _login(store, 404, "aa" * 16)
    store.calls.clear()
    second = await _login(store, 404, "bb" * 16)  # the caller did not know about ``first``
    assert second != first
    assert [len(keys) for _, keys in store.calls] == [5, 8]  # CURRENT, then with its keys
    raw = redis_server.client()
    assert not any(raw.exists(k) for k in store.keys.session_keys(first)[:2])
    assert raw.get(store.keys.user_session(404)) == str(second).encode()
    store.calls.clear()
    third = await _login(store, 404, "cc" * 16, current=second)  # known: one call
    assert len(store.calls) == 1 and third not in (first, second)


async def test_a_reconnect_naming_a_gone_session_is_told_why(
        stores: tuple[RecordingStore, ...]) -> None:
    store = stores[0]
    session_id = await _login(store, 505, "dd" * 16)
    assert await store.detach(session_id, 505, 1, "dd" * 16, 1, 1, 60_000)  # 1 ms grace
    await wait_until_async(lambda: _gone(store, session_id), 5.0,
                           message="the session to expire")
    # The tombstone outlives the session: SESSION_EXPIRED, not INVALID_SESSION.
    with pytest.raises(ResumeRejected, match="SESSION_EXPIRED"):
        await store.resume(session_id, hash_key("k"), "", GATEWAY, "ee" * 16, LEASE_MS, None)
    with pytest.raises(ResumeRejected, match="INVALID_SESSION"):
        await store.resume(store.keys.new_session_id(505), hash_key("k"), "", GATEWAY,
                           "ee" * 16, LEASE_MS, None)


async def test_two_prefixes_share_one_redis_without_seeing_each_other(
        stores: tuple[RecordingStore, ...], redis_server: RedisServer) -> None:
    a, b = stores
    in_a = await _login(a, 606, "11" * 16)
    in_b = await _login(b, 606, "22" * 16)
    # Same user, two deployments: neither login replaced the other's session.
    located_a, located_b = await a.locate_user(606), await b.locate_user(606)
    assert located_a is not None and located_a.session_id == in_a
    assert located_b is not None and located_b.session_id == in_b
    raw = redis_server.client()
    assert raw.exists(a.keys.session(in_a)) and raw.exists(b.keys.session(in_b))
    under_a = set(raw.scan_iter("test-a:*", count=1000))
    under_b = set(raw.scan_iter("test-b:*", count=1000))
    assert {a.keys.user_session(606).encode(), a.keys.session(in_a).encode()} <= under_a
    assert {b.keys.user_session(606).encode(), b.keys.session(in_b).encode()} <= under_b
    assert not raw.exists(a.keys.session(in_b)) and not raw.exists(b.keys.session(in_a))


def test_migrate_keys_moves_player_state_to_the_new_layout(redis_server: RedisServer) -> None:
    from gameserver.admin import main as admin_main

    raw = redis_server.client()
    raw.hset("test-m:player:71", mapping={"x": "1.5", "y": "2.0", "moves": "9"})
    raw.hset("test-m:player:72", mapping={"x": "0.0", "y": "0.0", "moves": "1"})
    raw.hset("test-m:{u:72}:player", mapping={"x": "5.0", "y": "5.0", "moves": "3"})
    raw.set("test-m:player:not-a-user", "x")
    argv = ["migrate-keys", "--redis-connection", redis_server.connection,
            "--redis-key-prefix", "test-m:"]
    assert admin_main([*argv, "--dry-run"]) == 0
    assert raw.exists("test-m:player:71") and not raw.exists("test-m:{u:71}:player")
    assert admin_main(argv) == 0
    keys = Keys("test-m:")
    assert raw.hgetall(keys.player(71)) == {b"x": b"1.5", b"y": b"2.0", b"moves": b"9"}
    assert not raw.exists("test-m:player:71")
    # State already under the new name wins; the old key stays for the operator.
    assert raw.hget(keys.player(72), "moves") == b"3" and raw.exists("test-m:player:72")
    assert raw.exists("test-m:player:not-a-user")
    assert admin_main(argv) == 0  # again: nothing left to move, nothing broken
    assert raw.hget(keys.player(71), "moves") == b"9"
