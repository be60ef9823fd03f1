"""The GameServer's in-memory session state (services/gameserver/state.py), in process.

Redis is the truth, but every request is routed by these indexes and answered from these
caches: a stale ``by_socket`` entry sends one user's answers to another user's socket, a
watermark that runs ahead of Redis loses a state change on failover. So the invariants are
checked directly, including by a state machine that drives the table the way the hub does.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from gameserver.state import PlayerState, ResponseCache, Session, SessionTable

GW_1 = b"gw-1-aaaa"
GW_2 = b"gw-2-bbbb"


def socket(n: int) -> bytes:
    return n.to_bytes(16, "big")


def make_session(session_id: int = 1, user_id: int = 42, last_seq: int = 0,
                 epoch: int = 1, cache_size: int = 8) -> Session:
    return Session(session_id=session_id, user_id=user_id, epoch=epoch, last_seq=last_seq,
                   cache=ResponseCache(cache_size), player=PlayerState())


def assert_consistent(table: SessionTable) -> None:
    """The indexes describe one set of live sessions, each findable every way it should be."""
    for socket_id, session in table.by_socket.items():
        assert session.socket_id == socket_id
        assert session.gateway_id is not None
        assert table.by_id.get(session.session_id) is session
    for session_id, session in table.by_id.items():
        assert session.session_id == session_id
        assert not session.closed
        assert table.by_user.get(session.user_id) is session
        if session.socket_id is not None:
            assert table.by_socket.get(session.socket_id) is session
    for user_id, session in table.by_user.items():
        assert session.user_id == user_id
        assert table.by_id.get(session.session_id) is session
    assert len(table) == len(table.by_id)


# --- PlayerState ---------------------------------------------------------------------------


def test_player_state_starts_at_the_origin() -> None:
    assert PlayerState().snapshot() == {"x": 0.0, "y": 0.0, "moves": 0}


def test_player_state_copy_is_equal_and_independent() -> None:
    # The group commit writes a copy: a MOVE handled while the write is in flight must not
    # change what that write (or its retry) stores.
    original = PlayerState(1.5, -2.0, 3)
    copied = original.copy()
    assert copied == original and copied is not original
    copied.x, copied.moves = 9.0, 4
    assert original == PlayerState(1.5, -2.0, 3)


def test_player_state_snapshot_is_a_detached_dict() -> None:
    state = PlayerState(1.0, 2.0, 1)
    snapshot = state.snapshot()
    assert snapshot == {"x": 1.0, "y": 2.0, "moves": 1}
    snapshot["x"] = 100.0
    assert state.x == 1.0


def test_player_state_from_redis_parses_and_defaults_missing_fields() -> None:
    assert PlayerState.from_redis(b"1.5", b"-2", b"7") == PlayerState(1.5, -2.0, 7)
    # A user who never moved has no state hash yet.
    assert PlayerState.from_redis(None, None, None) == PlayerState()
    assert PlayerState.from_redis(None, b"3.25", None) == PlayerState(0.0, 3.25, 0)


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False,
       allow_infinity=False), st.integers(0, 2**53))
def test_player_state_round_trips_through_redis_text(x: float, y: float, moves: int) -> None:
    state = PlayerState(x, y, moves)
    # What store.py writes: repr() of each coordinate, the move count as an integer.
    restored = PlayerState.from_redis(repr(x).encode(), repr(y).encode(), str(moves).encode())
    assert restored == state


# --- ResponseCache -------------------------------------------------------------------------


def test_response_cache_answers_what_was_put() -> None:
    cache = ResponseCache(4)
    assert cache.get(1) is None and len(cache) == 0
    cache.put(1, b"one")
    cache.put(2, b"two")
    assert (cache.get(1), cache.get(2), cache.get(3)) == (b"one", b"two", None)
    assert len(cache) == 2


def test_response_cache_evicts_the_oldest_first() -> None:
    cache = ResponseCache(3)
    for seq in (1, 2, 3, 4):
        cache.put(seq, f"r{seq}".encode())
    assert len(cache) == 3
    assert cache.get(1) is None
    assert [cache.get(seq) for seq in (2, 3, 4)] == [b"r2", b"r3", b"r4"]
    cache.put(5, b"r5")
    assert cache.get(2) is None and cache.get(5) == b"r5"


def test_response_cache_overwrite_replaces_bytes_but_not_age() -> None:
    # Re-putting an id (a takeover reloading responses from Redis) must not let an old
    # answer outlive newer ones.
    cache = ResponseCache(2)
    cache.put(1, b"old")
    cache.put(2, b"r2")
    cache.put(1, b"new")
    assert cache.get(1) == b"new" and len(cache) == 2
    cache.put(3, b"r3")
    assert cache.get(1) is None
    assert (cache.get(2), cache.get(3)) == (b"r2", b"r3")


@given(st.integers(1, 10), st.lists(st.binary(max_size=4), max_size=40))
def test_response_cache_keeps_exactly_the_last_capacity_responses(
    capacity: int, responses: list[bytes]
) -> None:
    cache = ResponseCache(capacity)
    for seq, body in enumerate(responses, start=1):
        cache.put(seq, body)
        assert len(cache) <= capacity
    kept = dict(list(enumerate(responses, start=1))[-capacity:])
    assert len(cache) == len(kept)
    for seq in range(1, len(responses) + 1):
        assert cache.get(seq) == kept.get(seq)


# --- Session -------------------------------------------------------------------------------


def test_durable_seq_is_last_seq_when_everything_is_committed() -> None:
    assert make_session(last_seq=7).durable_seq() == 7


def test_durable_seq_stops_below_the_oldest_uncommitted_change() -> None:
    session = make_session(last_seq=7)
    session.uncommitted.update({5, 7})
    # Recording 7 now would make a retry of 5 a "duplicate" while its change is not stored.
    assert session.durable_seq() == 4
    session.uncommitted.discard(5)
    assert session.durable_seq() == 6
    session.uncommitted.clear()
    assert session.durable_seq() == 7


def test_durable_seq_never_passes_last_seq() -> None:
    # An uncommitted id above the watermark (the watermark was rolled back after it).
    session = make_session(last_seq=3)
    session.uncommitted.add(9)
    assert session.durable_seq() == 3


@given(st.integers(0, 1000), st.sets(st.integers(1, 1000), max_size=10))
def test_durable_seq_is_the_highest_safe_watermark(last_seq: int, uncommitted: set[int]) -> None:
    session = make_session(last_seq=last_seq)
    session.uncommitted.update(uncommitted)
    durable = session.durable_seq()
    assert durable <= last_seq
    assert all(durable < seq for seq in uncommitted)
    assert durable == last_seq or durable + 1 in uncommitted


def test_sessions_do_not_share_mutable_defaults() -> None:
    first, second = make_session(1), make_session(2)
    first.uncommitted.add(3)
    assert second.uncommitted == set()
    assert (second.held, second.closed, second.socket_id, second.gateway_id) == (
        0, False, None, None)


def test_a_session_is_an_identity_not_a_value() -> None:
    # The table's "is this entry still this session object" checks depend on it: a session
    # reloaded from Redis with the same fields is another session.
    first, second = make_session(), make_session()
    assert first != second
    assert len({first, second}) == 2


# --- SessionTable --------------------------------------------------------------------------


def test_attach_indexes_the_session_every_way() -> None:
    table = SessionTable()
    session = make_session(session_id=7, user_id=42)
    table.attach(session, GW_1, socket(1))
    assert table.by_socket == {socket(1): session}
    assert table.by_id == {7: session}
    assert table.by_user == {42: session}
    assert (session.gateway_id, session.socket_id) == (GW_1, socket(1))
    assert len(table) == 1
    assert_consistent(table)


def test_reattach_moves_the_socket_and_gateway() -> None:
    table = SessionTable()
    session = make_session()
    table.attach(session, GW_1, socket(1))
    table.attach(session, GW_2, socket(2))
    assert table.by_socket == {socket(2): session}
    assert (session.gateway_id, session.socket_id) == (GW_2, socket(2))
    assert len(table) == 1
    assert_consistent(table)


def test_detach_keeps_the_session_for_its_reconnect_grace() -> None:
    table = SessionTable()
    session = make_session(session_id=7, user_id=42)
    table.attach(session, GW_1, socket(1))
    assert table.detach_socket(socket(1)) is session
    assert table.by_socket == {}
    assert (session.socket_id, session.gateway_id) == (None, None)
    assert table.by_id == {7: session} and table.by_user == {42: session}
    assert not session.closed
    assert_consistent(table)
    # Resumed on a new socket within the grace.
    table.attach(session, GW_2, socket(2))
    assert table.by_socket == {socket(2): session}
    assert_consistent(table)


def test_detach_of_an_unknown_socket_is_none() -> None:
    table = SessionTable()
    session = make_session()
    table.attach(session, GW_1, socket(1))
    assert table.detach_socket(socket(2)) is None
    assert table.detach_socket(socket(1)) is session
    assert table.detach_socket(socket(1)) is None
    assert_consistent(table)


def test_forget_drops_every_index_and_closes_the_session() -> None:
    table = SessionTable()
    session = make_session()
    table.attach(session, GW_1, socket(1))
    table.forget(session)
    assert (table.by_socket, table.by_id, table.by_user) == ({}, {}, {})
    assert session.closed and len(table) == 0
    table.forget(session)  # a second forget (logout racing a fence) is harmless
    assert len(table) == 0


def test_forget_of_a_detached_session() -> None:
    table = SessionTable()
    session = make_session()
    table.attach(session, GW_1, socket(1))
    table.detach_socket(socket(1))
    table.forget(session)
    assert (table.by_socket, table.by_id, table.by_user) == ({}, {}, {})
    assert session.closed


def test_forgetting_a_replaced_session_spares_its_replacement() -> None:
    # A second login of the same user (new session id, new socket) or a takeover of the same
    # session id (new epoch): the stale object's late forget must not unindex the new one.
    table = SessionTable()
    old = make_session(session_id=1, user_id=42)
    table.attach(old, GW_1, socket(1))
    same_user = make_session(session_id=2, user_id=42)
    table.attach(same_user, GW_2, socket(2))
    table.forget(old)
    assert table.by_user == {42: same_user}
    assert table.by_id == {2: same_user}
    assert table.by_socket == {socket(2): same_user}
    assert old.closed and not same_user.closed

    same_id = make_session(session_id=2, user_id=42, epoch=2)
    table.forget(same_user)
    table.attach(same_id, GW_1, socket(3))
    table.forget(same_user)
    assert table.by_id == {2: same_id} and table.by_user == {42: same_id}
    assert table.by_socket == {socket(3): same_id}
    assert_consistent(table)


def test_reattaching_a_forgotten_session_reopens_it() -> None:
    table = SessionTable()
    session = make_session()
    table.attach(session, GW_1, socket(1))
    table.forget(session)
    table.attach(session, GW_1, socket(2))
    assert not session.closed
    assert table.by_socket == {socket(2): session} and len(table) == 1
    assert_consistent(table)


def test_sockets_and_users_are_independent_entries() -> None:
    table = SessionTable()
    sessions = [make_session(session_id=n, user_id=100 + n) for n in range(3)]
    for n, session in enumerate(sessions):
        table.attach(session, GW_1, socket(n))
    table.detach_socket(socket(1))
    table.forget(sessions[2])
    assert table.by_socket == {socket(0): sessions[0]}
    assert set(table.by_id) == {0, 1} and set(table.by_user) == {100, 101}
    assert_consistent(table)


class HubLikeSessionTable(RuleBasedStateMachine):
    """Drives a SessionTable the way hub.py does and checks the indexes after every step.

    The hub's own rules are part of the contract: a socket that has a session cannot log in
    or reconnect (ALREADY_LOGGED_IN), a login first forgets the user's previous session, a
    takeover detaches the session's old socket, and a closed socket is detached and then
    forgotten unless it is kept for its reconnect grace.
    """

    users = Bundle("users")
    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.table = SessionTable()
        self.next_session_id = 1
        self.next_socket = 1
        #: Model: the socket each user's live session is attached to (None: in grace).
        self.model: dict[int, bytes | None] = {}

    def _new_socket(self) -> bytes:
        self.next_socket += 1
        return socket(self.next_socket)

    @rule(target=users, user_id=st.integers(1, 4))
    def a_user(self, user_id: int) -> int:
        return user_id

    @rule(target=sessions, user_id=users, gateway=st.sampled_from([GW_1, GW_2]))
    def login(self, user_id: int, gateway: bytes) -> Session:
        previous = self.table.by_user.get(user_id)
        if previous is not None:
            self.table.forget(previous)
        session = make_session(session_id=self.next_session_id, user_id=user_id)
        self.next_session_id += 1
        sock = self._new_socket()
        self.table.attach(session, gateway, sock)
        self.model[user_id] = sock
        return session

    @rule(session=sessions, gateway=st.sampled_from([GW_1, GW_2]), detach_first=st.booleans())
    def reconnect(self, session: Session, gateway: bytes, detach_first: bool) -> None:
        if self.table.by_id.get(session.session_id) is not session:
            return  # gone: INVALID_SESSION, the table is not touched
        if session.socket_id is not None and detach_first:
            # Redis still had the old socket attached: it is kicked (resumed elsewhere).
            # Otherwise Redis already saw it go and its CLOSED is still on its way here.
            self.table.detach_socket(session.socket_id)
        sock = self._new_socket()
        self.table.attach(session, gateway, sock)
        self.model[session.user_id] = sock

    @rule(session=sessions, keep_for_grace=st.booleans())
    def socket_closed(self, session: Session, keep_for_grace: bool) -> None:
        sock = session.socket_id
        if sock is None or self.table.by_socket.get(sock) is not session:
            return
        assert self.table.detach_socket(sock) is session
        if keep_for_grace:
            self.model[session.user_id] = None
        else:
            self.table.forget(session)
            del self.model[session.user_id]

    @precondition(lambda self: len(self.table) > 0)
    @rule(session=consumes(sessions))
    def logout_or_fenced(self, session: Session) -> None:
        if self.table.by_id.get(session.session_id) is session:
            del self.model[session.user_id]
        self.table.forget(session)

    @rule(sock=st.integers(0, 60))
    def stray_close(self, sock: int) -> None:
        """A CLOSED for a socket this table may never have had."""
        session = self.table.by_socket.get(socket(sock))
        if session is None:
            assert self.table.detach_socket(socket(sock)) is None

    @invariant()
    def indexes_agree(self) -> None:
        assert_consistent(self.table)

    @invariant()
    def matches_the_model(self) -> None:
        assert {u: s.socket_id for u, s in self.table.by_user.items()} == self.model
        attached = {sock: user for user, sock in self.model.items() if sock is not None}
        assert {k: s.user_id for k, s in self.table.by_socket.items()} == attached


TestHubLikeSessionTable = HubLikeSessionTable.TestCase


@pytest.mark.parametrize("capacity", [1, 64])
def test_session_cache_capacity_is_per_session(capacity: int) -> None:
    first = make_session(1, cache_size=capacity)
    second = make_session(2, cache_size=capacity)
    for seq in range(1, capacity + 2):
        first.cache.put(seq, b"x")
    assert len(first.cache) == capacity and len(second.cache) == 0
