"""A LOGIN replacing a session held on the same GameServer, while that session's last MOVE
is still on its way to Redis: the old socket must get the login's DUPLICATE_LOGIN kick,
never a silent close.

The live fuzz found it: the MOVE's commit ran after login.lua had ended the old session,
came back fenced ``gone``, and the hub closed the old socket without a word before the
login's kick could reach it; the client could not tell "logged in elsewhere" from "session
lost". In-process with a fake store (the interleaving of two Redis calls cannot be forced
against a real Redis) and a fake link recording what would go to the Gateway.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gameserver.config import GameServerConfig
from gameserver.context import RequestContext
from gameserver.hub import Hub
from gameserver.middlewares import standard_middlewares
from gameserver.state import PlayerState
from gameserver.store import LoginResult, SessionWrite
from protocol import KickReason, MsgType, encode_message
from protocol.internal import Kind

GATEWAY = b"gw-1-test"
OLD_SOCKET = b"o" * 16
NEW_SOCKET = b"n" * 16
USER = 42


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int, bytes, int, bytes]] = []
        self.on_dropped: Any = None

    def send(self, gateway_id: bytes, kind: int, socket_id: bytes, arg: int,
             body: bytes) -> None:
        self.sent.append((gateway_id, kind, socket_id, arg, body))

    def live_gateways(self) -> list[bytes]:
        return [GATEWAY]

    def closes(self, socket_id: bytes) -> list[bytes]:
        return [body for _, kind, sid, _, body in self.sent
                if kind == Kind.CLOSE and sid == socket_id]


class FakeStore:
    """login.lua's answers on demand; the second login waits until the test lets it go."""

    def __init__(self) -> None:
        self.logins = 0
        self.second_login_may_finish = asyncio.Event()
        self.second_login_started = asyncio.Event()

    async def login_unless_elsewhere(self, user_id: int, *args: Any, **kwargs: Any
                                     ) -> LoginResult:
        return await self.login(user_id, *args)  # no other node in this test

    async def login(self, user_id: int, *args: Any, **kwargs: Any) -> LoginResult:
        self.logins += 1
        if self.logins == 1:
            return LoginResult(1, None, None, None, None, PlayerState())
        self.second_login_started.set()
        await self.second_login_may_finish.wait()
        # login.lua ended session 1, which was attached to the old socket.
        return LoginResult(2, 1, 1, GATEWAY, OLD_SOCKET, PlayerState())

    def commit_keys(self, session_id: int, user_id: int) -> tuple[str, ...]:
        return ()

    async def commit(self, batch: list[SessionWrite], *args: Any) -> dict[int, str]:
        # By the time this commit reaches Redis, session 1 no longer exists.
        return {w.session_id: "gone" for w in batch if w.session_id == 1}


def login_context(hub: Hub, socket_id: bytes, seq: int) -> RequestContext:
    frame = encode_message(MsgType.LOGIN_REQ, seq, {"user_id": USER})
    return RequestContext(hub, GATEWAY, socket_id, 0, frame, None)


async def test_a_move_fenced_gone_by_a_replacing_login_ends_in_its_kick() -> None:
    link, store = FakeLink(), FakeStore()
    hub = Hub(GameServerConfig(), store, link, standard_middlewares(),  # type: ignore[arg-type]
              None, 1)  # type: ignore[arg-type]
    old = await hub.login(login_context(hub, OLD_SOCKET, 1), USER, False)

    second = asyncio.create_task(hub.login(login_context(hub, NEW_SOCKET, 1), USER, False))
    await store.second_login_started.wait()
    # The old session's MOVE, accepted after the login's barrier: committed meanwhile.
    hub.commits.add(old, 2, encode_message(MsgType.MOVE_RES, 2, {"moves": 1}))
    await hub.commits.barrier()
    assert link.closes(OLD_SOCKET) == [], "closed before the login could kick it"

    store.second_login_may_finish.set()
    new = await second
    assert new.session_id == 2
    kicks = link.closes(OLD_SOCKET)
    assert len(kicks) == 1 and orjson.loads(kicks[0][12:]) == {
        "reason": KickReason.DUPLICATE_LOGIN.value}
    # The fenced MOVE was not answered: the kick says why.
    assert not any(kind == Kind.SEND and sid == OLD_SOCKET and body[5] == MsgType.MOVE_RES
                   for _, kind, sid, _, body in link.sent)
