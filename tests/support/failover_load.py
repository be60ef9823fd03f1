"""One fault under MOVE load, judged by the history checker: clients play MOVEs one at a
time (tests/support/chaos_players.py), the test's fault runs while they do, then every
client's history must show its MOVEs acknowledged exactly once and in order
(tests/support/history.py), and every client must have been served again after the fault.

Used by the Redis failover tests (Sentinel and Cluster); the randomized fault run
(tests/support/chaos.py) drives the same players with a schedule of faults instead.
While it runs, ``/readyz`` of one service is sampled, so a test can say what an operator's
probe saw during the fault.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from tests.support.chaos_players import Player, join
from tests.support.history import Finding, check_all
from tests.support.processes import http_get
from tests.support.waiting import wait_until_async


@dataclass
class ReadyzSamples:
    """``/readyz`` status codes of one service, sampled every ``period`` s by a thread
    (0: no answer)."""

    port: int
    period: float = 0.05
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> ReadyzSamples:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                status, _ = http_get("127.0.0.1", self.port, "/readyz", 1.0)
            except OSError:
                status = 0
            self.samples.append((time.monotonic(), status))

    def statuses(self, since: float) -> set[int]:
        return {status for at, status in self.samples if at >= since}


@dataclass
class LoadResult:
    players: list[Player]
    user_ids: list[int]
    findings: list[Finding]
    fault_at: float
    #: When ``fault`` returned (the fault is over: e.g. the new master promoted).
    fault_over_at: float
    #: Per player: seconds from the end of the fault to its first acknowledged MOVE.
    served_again_after: list[float]

    def summary(self) -> str:
        acks = sum(len(p.history.acknowledgements()) for p in self.players)
        worst = max(self.served_again_after, default=0.0)
        lines = [f"{len(self.players)} players, {acks} MOVEs acknowledged, every player "
                 f"served again within {worst:.2f} s of the end of the fault (which took "
                 f"{self.fault_over_at - self.fault_at:.2f} s)"]
        lines += [str(finding) for finding in self.findings]
        lines += [f"player {p.index} stopped: {p.stopped}" for p in self.players if p.stopped]
        return "\n".join(lines)


async def moves_through_a_fault(
    gateways: Sequence[tuple[str, int]],
    user_ids: Sequence[int],
    fault: Callable[[list[Player]], Awaitable[None]],
    *,
    interval: float = 0.02,
    warm_acks: int = 3,
    request_timeout: float = 5.0,
    recovery_timeout: float = 30.0,
) -> LoadResult:
    """Log ``user_ids`` in (new users: tests.support.users.new_user_id), let each get
    ``warm_acks`` MOVEs acknowledged, run ``fault(players)`` (it returns once it is done,
    e.g. the new master is promoted), wait until every player has an acknowledged MOVE
    after the fault, then stop and check."""
    joined = list(await asyncio.gather(
        *(join(i, uid, gateways, request_timeout) for i, uid in enumerate(user_ids))))
    stop = asyncio.Event()
    loops = [asyncio.create_task(p.play(stop, interval)) for p in joined]
    try:
        await wait_until_async(lambda: all(len(p.history.acknowledgements()) >= warm_acks
                                           for p in joined),
                               timeout=recovery_timeout, message="the load did not start")
        fault_at = time.monotonic()
        await fault(joined)
        fault_over_at = time.monotonic()
        await wait_until_async(
            lambda: all(p.stopped or _acked_after(p, fault_over_at) for p in joined),
            timeout=recovery_timeout,
            message="not every player was served again after the fault")
    finally:
        stop.set()
        _, pending = await asyncio.wait(loops, timeout=recovery_timeout)
        for task in pending:
            task.cancel()
    await asyncio.gather(*(p.final_move() for p in joined))
    await asyncio.gather(*(p.client.close() for p in joined), return_exceptions=True)
    return LoadResult(
        players=joined, user_ids=list(user_ids), findings=check_all(p.history for p in joined),
        fault_at=fault_at, fault_over_at=fault_over_at,
        served_again_after=[_acked_after(p, fault_over_at) or float("inf") for p in joined])


def acks_after(player: Player, since: float) -> int:
    """How many MOVEs the player got acknowledged after ``since``."""
    return sum(1 for at in player.history.ack_times() if at > since)


def _acked_after(player: Player, since: float) -> float:
    """Seconds from ``since`` to the player's first acknowledgement after it (0.0: none)."""
    later = [at for at in player.history.ack_times() if at > since]
    return later[0] - since if later else 0.0
