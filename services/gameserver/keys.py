"""Redis key layout (documented in docs/SESSION_LIFECYCLE.md). Lua scripts build the same
names from the prefix, so a change here is a change there too."""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def session(self, session_id: int) -> str:
        return f"{self.prefix}sess:{session_id}"
