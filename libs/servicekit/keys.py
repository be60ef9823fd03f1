"""Every Redis key name of the system, in one place (docs/SESSION_LIFECYCLE.md, "Keys").

Layout, with ``P`` the prefix (``REDIS_KEY_PREFIX``, default ``gb:``)::

    P{u:<user id>}:session         the user's current session id          string
    P{u:<user id>}:player          the player's state, kept across logins  hash
    P{<slot tag>}:sess:<sid>       a session                               hash
    P{<slot tag>}:sess:<sid>:resp  its cached responses, newest first      list
    P{<slot tag>}:sess:<sid>:tomb  "this session existed" (SESSION_EXPIRED) string
    P{nodes}:node:<node id>        a GameServer's registry entry           hash
    P{nodes}:ids                   the registered node ids                 set

Why the braces: on Redis Cluster every key of one script must be in one hash slot, and only
the part in braces (the hash tag) decides the slot. A login, a RECONNECT, a commit and a
logout each touch the user's keys and the session's together, so they must share a slot.
The user's keys are tagged by the user; a session's keys by a tag that hashes to *the same
slot*: a session id carries that slot in its top bits (:meth:`Keys.new_session_id`), so a
RECONNECT, which names only the session, finds its keys, and they sit beside the user's.
The registry's keys share the tag ``{nodes}``, so claiming an entry and listing it in the
set is one script. On a single Redis (and on Sentinel) the tags cost nothing.

Session ids stay below 2**53, so JavaScript clients hold them exactly (a JSON number).

Why not a library: the slot function is redis-py's own (``redis.crc.key_slot``); what is
ours is the layout, which has to be decided somewhere.
"""

from __future__ import annotations

import secrets
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

DEFAULT_PREFIX = "gb:"

#: A session id: the user's hash slot in the top 14 bits, 39 random bits below (never 0).
_RANDOM_BITS = 39
SLOT_BITS = 14
assert 1 << SLOT_BITS == REDIS_CLUSTER_HASH_SLOTS
MAX_SESSION_ID = (1 << (SLOT_BITS + _RANDOM_BITS)) - 1


def check_prefix(prefix: str) -> str:
    """A usable ``REDIS_KEY_PREFIX`` (ValueError if not): braces would become the hash tag
    of every key, and whitespace breaks the scripts' argument packing."""
    if not prefix or any(c in prefix for c in "{} \t\r\n") or len(prefix) > 64:
        raise ValueError(
            f"REDIS_KEY_PREFIX {prefix!r}: 1-64 characters without braces or whitespace "
            "(e.g. 'gb:' or 'eu1:gb:')")
    return prefix


def slot_of_user(user_id: int) -> int:
    """The hash slot of every key of ``user_id`` (and of their sessions)."""
    return key_slot(f"u:{user_id}".encode())


def slot_of_session(session_id: int) -> int:
    return session_id >> _RANDOM_BITS


@cache
def _slot_tags() -> tuple[str, ...]:
    """For each hash slot, a short string that hashes to it (``s`` + hex; at most 6
    characters). Found once per process, when a session's key is first named, by counting
    up (about 0.2 s)."""
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    missing = REDIS_CLUSTER_HASH_SLOTS
    n = 0
    while missing:
        tag = f"s{n:x}"
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


class Keys:
    """Key names under one prefix. Pure: no Redis client, easy to test."""

    __slots__ = ("nodes", "prefix")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = check_prefix(prefix)
        #: The set of registered node ids.
        self.nodes = f"{prefix}{{nodes}}:ids"

    # ------------------------------------------------------------------ users
    def user_session(self, user_id: int) -> str:
        return f"{self.prefix}{{u:{user_id}}}:session"

    def player(self, user_id: int) -> str:
        return f"{self.prefix}{{u:{user_id}}}:player"

    # ------------------------------------------------------------------ sessions
    def new_session_id(self, user_id: int) -> int:
        """A fresh id whose keys share the user's hash slot. Random, so no counter key (in
        some other slot) is needed; login.lua refuses an id whose keys exist, and the
        caller draws again (one chance in 2**39 per live session of the same slot)."""
        return (slot_of_user(user_id) << _RANDOM_BITS) | (secrets.randbits(_RANDOM_BITS) or 1)

    def session(self, session_id: int) -> str:
        # The table is built on first use: a Gateway, which names no session, never does.
        tag = _slot_tags()[session_id >> _RANDOM_BITS]
        return f"{self.prefix}{{{tag}}}:sess:{session_id}"

    def session_keys(self, session_id: int) -> tuple[str, str, str]:
        """The session's hash, its response list and its tombstone."""
        session = self.session(session_id)
        return session, f"{session}:resp", f"{session}:tomb"

    # ------------------------------------------------------------------ registry
    def node(self, node_id: int) -> str:
        return f"{self.prefix}{{nodes}}:node:{node_id}"


def valid_session_id(session_id: int) -> bool:
    """Could the system have issued this id? (A client's RECONNECT names one.)"""
    return 0 < session_id <= MAX_SESSION_ID and (session_id & ((1 << _RANDOM_BITS) - 1)) != 0
