"""Group commit: state changes reach Redis before their responses leave, one round trip per
event-loop tick instead of one per message.

Handlers change in-memory state and hand their response here. Everything queued while a
commit is in flight goes into the next one (coalesced per session: only the latest state is
written, all responses are cached). After the commit returns, held responses are released
in arrival order to each session's *current* socket; any response a session produces while
it has held ones queues behind them, so a client never sees answers out of order.
If Redis fails the same writes are retried with backoff, responses stay held, and the
client's retries of those sequence ids join the wait instead of being processed again.

No response is held longer than ``answer_within_s`` (``REDIS_REQUEST_TIMEOUT_S``): when its
time is up, a response that waits for its own state change is answered
``ERROR_RES SERVER_UNAVAILABLE`` instead (the real one is never sent for that request; the
write keeps being retried, and a retry of the sequence id gets the real answer once it is
committed), and a response that only waits for its turn (ECHO behind a held MOVE) is sent
as it is. Deadlines are in arrival order, so expiring them in that order keeps each
session's answers in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gameserver import metrics
from gameserver.state import Session
from gameserver.store import SessionStore, SessionWrite
from protocol.messages import ErrorCode, MsgType
from protocol.payload import encode_message
from servicekit.redis_health import REDIS_FAILURES, RedisHealth, RetryDelays

log = logging.getLogger("gameserver.commits")


@dataclass(slots=True)
class _PendingWrite:
    session: Session
    responses: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Held:
    """One response waiting to be sent: for its own commit (``durable``) or for its turn."""

    session: Session
    response: bytes
    sequence_id: int
    durable: bool
    deadline: float
    #: Sent, answered SERVER_UNAVAILABLE, or dropped: nothing more to do for it.
    done: bool = False


def unavailable_response(sequence_id: int) -> bytes:
    """What a request whose state change could not be confirmed in time gets."""
    return encode_message(MsgType.ERROR_RES, sequence_id, {
        "code": ErrorCode.SERVER_UNAVAILABLE.value,
        "message": "session store unavailable; retry with the same sequence id to learn "
                   "the outcome"})


class CommitQueue:
    def __init__(
        self,
        store: SessionStore,
        deliver: Callable[[Session, bytes], None],
        on_fenced: Callable[[Session, str], None],
        cache_size: int,
        max_pending: int,
        health: RedisHealth,
        answer_within_s: float,
    ) -> None:
        self._store = store
        self._deliver = deliver
        self._on_fenced = on_fenced
        self._cache_size = cache_size
        self.max_pending = max_pending
        self._loop = asyncio.get_running_loop()
        self._writes: dict[int, _PendingWrite] = {}
        self._release: list[_Held] = []
        #: Every held response not yet done, in arrival order (so also deadline order).
        self._holding: deque[_Held] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.health = health
        self.answer_within_s = answer_within_s
        self._inflight = False
        self._scheduled = False
        self._started_generation = 0
        self._done_generation = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._inflight_writes = 0
        metrics.commits_pending.set_function(lambda: len(self._writes) + self._inflight_writes)

    @property
    def pending(self) -> int:
        return len(self._writes)

    @property
    def backlogged(self) -> bool:
        """Too much is waiting for Redis: new state changes should be refused for now."""
        return len(self._writes) >= self.max_pending

    @property
    def redis_down(self) -> bool:
        """Redis was failing when last asked: a new state change would only be held."""
        return not self.health.reachable

    def add(self, session: Session, sequence_id: int, response: bytes) -> None:
        """A state change of ``session`` answered by ``response``: write, then release."""
        entry = self._writes.get(session.session_id)
        if entry is None:
            entry = self._writes[session.session_id] = _PendingWrite(session)
        if sequence_id:
            entry.responses.append((sequence_id, response))
            session.uncommitted.add(sequence_id)
        self.hold(session, response, sequence_id, durable=True)

    def hold(self, session: Session, response: bytes, sequence_id: int = 0,
             durable: bool = False) -> None:
        """Send ``response`` only after everything queued before it has been committed.

        ``durable``: it answers a state change of sequence id ``sequence_id`` that is not
        committed yet (a retry joining the wait passes True too): if its time runs out it is
        answered SERVER_UNAVAILABLE instead of being sent.
        """
        session.held += 1
        entry = _Held(session, response, sequence_id, durable,
                      self._loop.time() + self.answer_within_s)
        self._release.append(entry)
        self._holding.append(entry)
        if self._timer is None:
            self._timer = self._loop.call_at(entry.deadline, self._expire)
        self._schedule()

    def _expire(self) -> None:
        """Answer every held response whose time is up (see the module docstring)."""
        self._timer = None
        now = self._loop.time()
        holding = self._holding
        unavailable = 0
        while holding and (holding[0].done or holding[0].deadline <= now):
            entry = holding.popleft()
            if entry.done:
                continue
            entry.done = True
            session = entry.session
            session.held -= 1
            if session.closed:
                continue
            if entry.durable:
                unavailable += 1
                self._deliver(session, unavailable_response(entry.sequence_id))
            else:
                self._deliver(session, entry.response)
        if unavailable:
            metrics.commits_unconfirmed.inc(unavailable)
            log.warning("Answered %d held state changes SERVER_UNAVAILABLE: not committed "
                        "within %.1fs (REDIS_REQUEST_TIMEOUT_S); still retrying them",
                        unavailable, self.answer_within_s)
        if holding:
            self._timer = self._loop.call_at(holding[0].deadline, self._expire)

    def _schedule(self) -> None:
        if not self._inflight and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if self._inflight or not (self._writes or self._release):
            return
        self._inflight = True
        self._started_generation += 1
        writes, self._writes = self._writes, {}
        self._inflight_writes = len(writes)
        release, self._release = self._release, []
        self._loop.create_task(self._commit(self._started_generation, writes, release))

    async def _commit(
        self,
        generation: int,
        writes: dict[int, _PendingWrite],
        release: list[_Held],
    ) -> None:
        fenced: dict[int, str] = {}
        if writes:
            # Snapshot now: a retry must write exactly this state, never a later one whose
            # responses belong to the next commit.
            batch = [
                SessionWrite(
                    session_id=w.session.session_id, epoch=w.session.epoch,
                    user_id=w.session.user_id, player=w.session.player.copy(),
                    last_seq=w.session.last_seq, responses=w.responses,
                    keys=w.session.commit_keys,
                )
                for w in writes.values()
            ]
            # Never returns without having committed (cancellation at shutdown aside: then
            # nothing is released, which is the point).
            fenced = await self._commit_with_retry(batch)
            metrics.commit_batch_sessions.observe(len(batch))
        for w in writes.values():
            w.session.uncommitted.difference_update(seq for seq, _ in w.responses)
        for entry in release:
            if entry.done:
                continue  # its time ran out: answered already
            entry.done = True
            session = entry.session
            session.held -= 1
            if session.session_id in fenced or session.closed:
                continue
            self._deliver(session, entry.response)
        holding = self._holding
        while holding and holding[0].done:
            holding.popleft()
        for sid, reason in fenced.items():
            self._on_fenced(writes[sid].session, reason)
        self._done_generation = generation
        self._inflight = False
        self._inflight_writes = 0
        self._wake_waiters()
        if self._writes or self._release:
            self._schedule()

    async def _commit_with_retry(self, batch: list[SessionWrite]) -> dict[int, str]:
        delays = RetryDelays()
        while True:
            try:
                fenced = await self._store.commit(batch, self._cache_size)
            except REDIS_FAILURES as exc:
                if delays.failures == 0:
                    log.error("Redis unavailable, holding %d session writes and retrying: %s",
                              len(batch), exc)
                self.health.failed(exc, "holding session writes and retrying")
                await asyncio.sleep(delays.next())
                continue
            if delays.failures:
                log.info("Redis is back: %d held session writes committed, %d refused "
                         "(session moved or gone)", len(batch) - len(fenced), len(fenced))
            self.health.succeeded()
            return fenced

    async def barrier(self) -> None:
        """Return once everything queued before this call has been committed."""
        if self._writes or self._release:
            target = self._started_generation + 1
        elif self._inflight:
            target = self._started_generation
        else:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((target, future))
        await future

    def _wake_waiters(self) -> None:
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if self._done_generation >= target:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still
