"""In-memory session and player state owned by this GameServer (Redis holds the truth)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class PlayerState:
    """Belongs to the user, not the session: survives logout, login and failover."""

    x: float = 0.0
    y: float = 0.0
    moves: int = 0

    def copy(self) -> PlayerState:
        return PlayerState(self.x, self.y, self.moves)

    def snapshot(self) -> dict[str, float | int]:
        return {"x": self.x, "y": self.y, "moves": self.moves}

    @classmethod
    def from_redis(cls, x: bytes | None, y: bytes | None, moves: bytes | None) -> PlayerState:
        return cls(
            float(x) if x is not None else 0.0,
            float(y) if y is not None else 0.0,
            int(moves) if moves is not None else 0,
        )


class ResponseCache:
    """The last N responses by sequence id, as the exact bytes that were (or will be) sent."""

    __slots__ = ("_entries", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, bytes] = OrderedDict()

    def put(self, sequence_id: int, response: bytes) -> None:
        self._entries[sequence_id] = response
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, sequence_id: int) -> bytes | None:
        return self._entries.get(sequence_id)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(slots=True, eq=False)
class Session:
    session_id: int
    user_id: int
    epoch: int
    last_seq: int
    cache: ResponseCache
    player: PlayerState
    gateway_id: bytes | None = None
    socket_id: bytes | None = None
    compress_above: int | None = None
    #: The key the client must present to RECONNECT (Redis only keeps its hash).
    reconnect_key: str = ""
    #: Sequence ids whose response is cached but not yet committed to Redis.
    uncommitted: set[int] = field(default_factory=set)
    #: Responses waiting for a commit; later responses of this session queue behind them.
    held: int = 0
    closed: bool = False
    #: The Redis keys its commits declare, formatted once (gameserver.store.commit_keys).
    commit_keys: tuple[str, ...] = ()

    def durable_seq(self) -> int:
        """The watermark Redis may record now: never past a state change that has not been
        committed (else its retry would be refused as a duplicate and the change lost)."""
        if self.uncommitted:
            return min(self.last_seq, min(self.uncommitted) - 1)
        return self.last_seq


class SessionTable:
    """Indexes of the sessions this process owns right now."""

    def __init__(self) -> None:
        self.by_socket: dict[bytes, Session] = {}
        self.by_id: dict[int, Session] = {}
        self.by_user: dict[int, Session] = {}

    def attach(self, session: Session, gateway_id: bytes, socket_id: bytes) -> None:
        if session.socket_id is not None and self.by_socket.get(session.socket_id) is session:
            del self.by_socket[session.socket_id]
        session.gateway_id = gateway_id
        session.socket_id = socket_id
        session.closed = False
        self.by_socket[socket_id] = session
        self.by_id[session.session_id] = session
        self.by_user[session.user_id] = session

    def detach_socket(self, socket_id: bytes) -> Session | None:
        session = self.by_socket.pop(socket_id, None)
        if session is not None and session.socket_id == socket_id:
            session.socket_id = None
            session.gateway_id = None
        return session

    def forget(self, session: Session) -> None:
        """Drop every index entry that still points at this session object."""
        session.closed = True
        if session.socket_id is not None and self.by_socket.get(session.socket_id) is session:
            del self.by_socket[session.socket_id]
        if self.by_id.get(session.session_id) is session:
            del self.by_id[session.session_id]
        if self.by_user.get(session.user_id) is session:
            del self.by_user[session.user_id]

    def __len__(self) -> int:
        return len(self.by_id)
