"""Group commit: state changes reach Redis before their responses leave, one round trip per
event-loop tick instead of one per message.

Handlers change in-memory state and hand their response here. Everything queued while a
commit is in flight goes into the next one (coalesced per session: only the latest state is
written, all responses are cached). After the commit returns, held responses are released
in arrival order to each session's *current* socket; any response a session produces while
it has held ones queues behind them, so a client never sees answers out of order.
If Redis fails the same writes are retried with backoff, responses stay held, and the
client's retries of those sequence ids join the wait instead of being processed again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.exceptions

from gameserver import metrics
from gameserver.state import Session
from gameserver.store import SessionStore, SessionWrite

log = logging.getLogger("gameserver.commits")

RETRY_DELAYS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass(slots=True)
class _PendingWrite:
    session: Session
    responses: list[tuple[int, bytes]] = field(default_factory=list)


class CommitQueue:
    def __init__(
        self,
        store: SessionStore,
        deliver: Callable[[Session, bytes], None],
        on_fenced: Callable[[Session, str], None],
        cache_size: int,
        lease_ms: int,
        max_pending: int,
    ) -> None:
        self._store = store
        self._deliver = deliver
        self._on_fenced = on_fenced
        self._cache_size = cache_size
        self._lease_ms = lease_ms
        self.max_pending = max_pending
        self._loop = asyncio.get_running_loop()
        self._writes: dict[int, _PendingWrite] = {}
        self._release: list[tuple[Session, bytes]] = []
        self._inflight = False
        self._scheduled = False
        self._started_generation = 0
        self._done_generation = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.redis_ok = True
        self._inflight_writes = 0
        metrics.commits_pending.set_function(lambda: len(self._writes) + self._inflight_writes)

    @property
    def pending(self) -> int:
        return len(self._writes)

    @property
    def backlogged(self) -> bool:
        """Too much is waiting for Redis: new state changes should be refused for now."""
        return len(self._writes) >= self.max_pending

    def add(self, session: Session, sequence_id: int, response: bytes) -> None:
        """A state change of ``session`` answered by ``response``: write, then release."""
        entry = self._writes.get(session.session_id)
        if entry is None:
            entry = self._writes[session.session_id] = _PendingWrite(session)
        if sequence_id:
            entry.responses.append((sequence_id, response))
            session.uncommitted.add(sequence_id)
        self.hold(session, response)

    def hold(self, session: Session, response: bytes) -> None:
        """Send ``response`` only after everything queued before it has been committed."""
        session.held += 1
        self._release.append((session, response))
        self._schedule()

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
        release: list[tuple[Session, bytes]],
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
                )
                for w in writes.values()
            ]
            # Never returns without having committed (cancellation at shutdown aside: then
            # nothing is released, which is the point).
            fenced = await self._commit_with_retry(batch)
            metrics.commit_batch_sessions.observe(len(batch))
        for w in writes.values():
            w.session.uncommitted.difference_update(seq for seq, _ in w.responses)
        for session, response in release:
            session.held -= 1
            if session.session_id in fenced or session.closed:
                continue
            self._deliver(session, response)
        for sid, reason in fenced.items():
            self._on_fenced(writes[sid].session, reason)
        self._done_generation = generation
        self._inflight = False
        self._inflight_writes = 0
        self._wake_waiters()
        if self._writes or self._release:
            self._schedule()

    async def _commit_with_retry(self, batch: list[SessionWrite]) -> dict[int, str]:
        attempt = 0
        while True:
            try:
                fenced = await self._store.commit(batch, self._cache_size, self._lease_ms)
            except (redis.exceptions.RedisError, OSError) as exc:
                if self.redis_ok:
                    log.error("Redis unavailable, holding %d session writes and retrying: %s",
                              len(batch), exc)
                self.redis_ok = False
                await asyncio.sleep(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)])
                attempt += 1
                continue
            if not self.redis_ok:
                log.info("Redis is back: %d held session writes committed, %d refused "
                         "(session moved or gone)", len(batch) - len(fenced), len(fenced))
            self.redis_ok = True
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
