"""A well-behaved client that keeps using the system while a test abuses it.

"Everybody else keeps being served" is the point of every hostile-input test; this is the
everybody else: logged in, one ECHO every ``interval`` seconds, each answer checked and its
round trip recorded. Problems are collected rather than raised, so the abuse runs to its end
and the test reports everything at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from protocol import MsgType
from tests.support.raw import RawClient
from tests.support.users import new_user_id

#: An answer slower than this is a failure, not a slow machine: a queue is blocked.
ANSWER_TIMEOUT_S = 10.0


class Bystander:
    """Start with :meth:`start`, end with :meth:`stop`; then read :attr:`problems` and
    :attr:`round_trips` (seconds, one per answered ECHO)."""

    def __init__(self, client: RawClient, interval: float, max_round_trip: float | None
                 ) -> None:
        self.client = client
        self.interval = interval
        self.max_round_trip = max_round_trip
        self.round_trips: list[float] = []
        self.problems: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, address: tuple[str, int], interval: float,
                    max_round_trip: float | None = None) -> Bystander:
        """Log a fresh user in through ``address`` and start the ECHO loop."""
        client = await RawClient.connect(address)
        await client.login(new_user_id())
        bystander = cls(client, interval, max_round_trip)
        bystander._task = asyncio.create_task(bystander._run())
        return bystander

    async def _run(self) -> None:
        seq = 1
        while not self._stop.is_set():
            seq += 1
            started = time.monotonic()
            try:
                res = await self.client.request(MsgType.ECHO_REQ, seq, {"alive": seq},
                                                timeout=ANSWER_TIMEOUT_S)
            except (TimeoutError, ConnectionError, OSError) as exc:
                self.problems.append(f"bystander ECHO seq {seq} failed: {exc!r}")
                return
            rtt = time.monotonic() - started
            self.round_trips.append(rtt)
            if (res.msg_type, res.sequence_id, res.payload) != (MsgType.ECHO_RES, seq,
                                                                 {"alive": seq}):
                self.problems.append(f"bystander got {res} for ECHO seq {seq}")
            if self.max_round_trip is not None and rtt >= self.max_round_trip:
                self.problems.append(f"bystander ECHO seq {seq} took {rtt:.3f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def stop(self) -> None:
        """End the loop (an exception in it propagates here) and close the connection."""
        self._stop.set()
        assert self._task is not None
        await self._task
        await self.client.close()
