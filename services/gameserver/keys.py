"""Redis key layout (documented in docs/SESSION_LIFECYCLE.md). Lua scripts build the same
names from the prefix, so a change here is a change there too."""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes = f"{prefix}nodes"

    def node(self, node_id: int) -> str:
        return f"{self.prefix}node:{node_id}"

    def session(self, session_id: int) -> str:
        return f"{self.prefix}sess:{session_id}"

    def user_session(self, user_id: int) -> str:
        return f"{self.prefix}user:{user_id}:session"

    def player(self, user_id: int) -> str:
        return f"{self.prefix}player:{user_id}"
