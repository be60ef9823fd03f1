"""Clients of a fault run: each plays one MOVE at a time until it is acknowledged exactly once.

A MOVE whose answer is an error the protocol calls transient (``SERVER_UNAVAILABLE``,
``SERVER_BUSY``, ``INTERNAL_ERROR``), a timeout or a lost connection has an *unknown*
outcome: it may have been applied. The only way to learn the outcome without risking a
double move is to send the **same sequence id** again until a ``MOVE_RES`` comes back: the
server either processes it for the first time or answers from its response cache
(docs/PROTOCOL.md §7). With one MOVE in flight no higher id is ever processed in between,
so the same id always stays valid. Every transmission and answer goes into the client's
:class:`~tests.support.history.ClientHistory`; judging it is the checker's job, not ours.

The library (``test_client.GameClient``) resumes the session on its own after a drop and
re-sends what was unanswered; when it gives up (its time budget ran out, e.g. during a
long Redis outage) the player resumes explicitly and keeps retrying, and only a refusal
that says the session is gone ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol import ErrorCode, MsgType
from test_client import ClientError, GameClient, RequestError, RequestTimeout
from test_client.client import check_response
from tests.support.history import ClientHistory

#: Answers after which the request was not carried out and the same id may be sent again.
#: (``RATE_LIMITED``: the Gateway refused the frame unread; runs switch the limit off anyway.)
TRANSIENT: frozenset[str] = frozenset(
    {ErrorCode.SERVER_UNAVAILABLE, ErrorCode.SERVER_BUSY, ErrorCode.INTERNAL_ERROR,
     "RATE_LIMITED"}
)
#: Pause before re-sending after a transient error answer: the fault is still there.
RETRY_PAUSE_S = 0.1
#: How long a player keeps trying to resume a session before calling it lost.
RESUME_BUDGET_S = 60.0


class PlayerStopped(Exception):
    """The player cannot go on: the session is gone or a MOVE was refused for good."""


@dataclass
class Player:
    """One logged-in client and its history."""

    index: int
    client: GameClient
    history: ClientHistory
    events: list[tuple[float, str, str]] = field(default_factory=list)
    stopped: str | None = None

    def on_event(self, name: str, detail: str) -> None:
        self.events.append((time.monotonic(), name, detail))

    @property
    def reconnects(self) -> int:
        return sum(1 for _, name, _ in self.events if name == "reconnected")

    async def move(self, *, final: bool = False) -> int:
        """One MOVE, retried with its sequence id until acknowledged; returns ``moves``."""
        seq = self.client.next_sequence_id()
        body = {"x": float(self.index), "y": float(seq)}
        while True:
            self.history.sent(time.monotonic(), seq, final=final)
            try:
                msg_type, payload = await self.client.request(MsgType.MOVE_REQ, body, seq=seq)
                moves = int(check_response(msg_type, payload)["moves"])
            except RequestError as exc:
                if exc.code not in TRANSIENT:
                    self.history.failed(time.monotonic(), seq, f"ERROR_RES {exc.code}",
                                        final=True)
                    raise PlayerStopped(f"MOVE seq={seq} refused: {exc}") from exc
                self.history.failed(time.monotonic(), seq, f"ERROR_RES {exc.code}")
                await asyncio.sleep(RETRY_PAUSE_S)
            except RequestTimeout:
                self.history.failed(time.monotonic(), seq, "timeout")
            except (ClientError, OSError) as exc:
                self.history.failed(time.monotonic(), seq, type(exc).__name__)
                await self._resume()
            else:
                self.history.answered(time.monotonic(), seq, moves)
                return moves

    async def _resume(self) -> None:
        """Get a connection back to the session, unless the library is already doing it."""
        deadline = time.monotonic() + RESUME_BUDGET_S
        while not self.client.connected:
            if self.client.resuming:
                with contextlib.suppress(ClientError, OSError):  # we look again below
                    await self.client.wait_ready()
                continue
            try:
                await self.client.reconnect()
            except (ClientError, OSError) as exc:
                if isinstance(exc, RequestError) and exc.code not in TRANSIENT:
                    self.history.lost_session(f"RECONNECT refused: {exc}")
                    raise PlayerStopped(f"session lost: {exc}") from exc
                if time.monotonic() >= deadline:
                    self.history.lost_session(f"could not resume for {RESUME_BUDGET_S:g} s: "
                                              f"{exc}")
                    raise PlayerStopped(f"session lost: {exc}") from exc
                await asyncio.sleep(RETRY_PAUSE_S)

    async def play(self, stop: asyncio.Event, interval: float) -> None:
        """MOVE until ``stop`` is set, one at a time, ``interval`` s apart; then one last."""
        try:
            while not stop.is_set():
                await self.move()
                if interval > 0:
                    await asyncio.sleep(interval)
        except PlayerStopped as exc:
            self.stopped = str(exc)

    async def final_move(self) -> None:
        """The after-run MOVE: the checker wants it to be ``last acknowledged + 1``."""
        if self.stopped is not None:
            return
        try:
            await self.move(final=True)
        except PlayerStopped as exc:
            self.stopped = str(exc)


async def join(
    index: int,
    user_id: int,
    gateways: Sequence[tuple[str, int]],
    request_timeout: float,
) -> Player:
    """Log a new client in through ``gateways[index % n]``; it knows the others for resuming."""
    primary = gateways[index % len(gateways)]
    others = [g for g in gateways if g != primary]
    client = GameClient(primary[0], primary[1], gateways=others, auto_reconnect=True,
                        request_timeout=request_timeout, reconnect_timeout=RESUME_BUDGET_S,
                        reconnect_attempts=1_000_000)
    result: dict[str, Any] = await client.login(user_id)
    history = ClientHistory(index, initial_moves=int(result["state"]["moves"]))
    player = Player(index, client, history)
    client.on_event = player.on_event
    return player
