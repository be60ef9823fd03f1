"""Every Lua script call of one event-loop tick goes to Redis in one pipeline.

Why: one awaited redis-py call costs 95-160 µs of CPU on the 2-core benchmark machine (pool
checkout, the retry wrapper, command packing, one write and one read per call), while a
pipeline of 30 ``EVALSHA`` costs about 21 µs per call (docs/BENCHMARKS.md, "Logins"). A
login makes two script calls and a logout one, so at a thousand logins a second the
GameServer spent half its CPU inside redis-py. The group commit (gameserver.commits) already
batches state changes per tick; this batches every script call, the group commit's included.

Nothing is reordered or merged: the calls of one tick run in the order they were made, each
its own script with its own atomicity, on one connection. Calls made in different ticks were
never ordered with each other (they used any pooled connection), and every caller that
depends on an earlier call's effect awaits it first.

Why not redis-py's own ``Script`` objects in a pipeline: the pipeline then sends
``SCRIPT EXISTS`` before every execute, an extra round trip per batch. Here the calls are
plain ``EVALSHA``; a ``NOSCRIPT`` answer (Redis restarted, or ``SCRIPT FLUSH``) means that
call did not run, so its script is loaded and only those calls are sent again.

A call made ``durable`` is answered only once ``WAIT`` has seen it on REDIS_WAIT_REPLICAS
replicas (gameserver.replica_wait); the ``WAIT`` rides behind it in the same pipeline.

A caller that stops waiting (its deadline passed) abandons its future: a call not yet sent
is then not sent; one already sent runs, bounded by the connection's socket timeout, and its
answer is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from gameserver.replica_wait import ReplicaWait
from servicekit.redis_client import RedisClient, follow_master, master_of_slot
from servicekit.redis_health import REDIS_FAILURES
from servicekit.redis_problems import NotReplicated


def script_sha(text: str) -> str:
    """The SHA1 Redis names a script by (``EVALSHA``)."""
    return hashlib.sha1(text.encode()).hexdigest()


#: One queued call: script name, keys, args, durable, the keys' hash slot if the caller knows
#: it (None: redis-py finds it), and the future its caller awaits.
_Call = tuple[str, Sequence[str], Sequence[Any], bool, int | None, "asyncio.Future[Any]"]


class ScriptCalls:
    """Queues ``EVALSHA`` calls made in one tick and sends them as one pipeline."""

    def __init__(self, client: RedisClient, scripts: Mapping[str, str],
                 wait: ReplicaWait | None = None) -> None:
        self._client = client
        #: REDIS_WAIT_REPLICAS > 0: what durable calls wait for.
        self._wait = wait
        self._texts = dict(scripts)
        self._shas = {name: script_sha(text) for name, text in scripts.items()}
        self._pending: list[_Call] = []
        self._batches: set[asyncio.Task[None]] = set()

    def call(self, name: str, keys: Sequence[str], args: Sequence[Any],
             durable: bool = False, slot: int | None = None) -> asyncio.Future[Any]:
        """Run script ``name`` with ``keys`` and ``args`` in this tick's pipeline;
        ``durable``: answer only once replicated (when a ReplicaWait is set), else fail
        with NotReplicated; ``slot``: the keys' hash slot, on a cluster sent straight to
        its master (servicekit.redis_client.master_of_slot)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((name, keys, args, durable, slot, future))
        return future

    def _flush(self) -> None:
        if not self._pending:
            return  # sent early by close()
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        if not task.done():
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _send(self, batch: list[_Call]) -> None:
        batch = [call for call in batch if not call[-1].done()]  # its caller gave up
        if not batch:
            return
        results = await self._run_or_fail(batch)
        if results is None:
            return
        again = [call for call, result in zip(batch, results, strict=True)
                 if isinstance(result, NoScriptError)]
        # The others ran: answer them now, whatever happens to the reload below.
        self._settle(batch, results, skip=NoScriptError)
        if again:
            retried = await self._run_or_fail(again, load_first=True)
            if retried is not None:
                self._settle(again, retried)

    async def _run_or_fail(self, batch: list[_Call], load_first: bool = False
                           ) -> list[Any] | None:
        """The batch's results, or None after failing every call of it (the connection
        failed: none of them is known to have run, or not)."""
        try:
            if load_first:
                for name in {call[0] for call in batch}:
                    await self._client.script_load(self._texts[name])
            return await self._execute(batch)
        except asyncio.CancelledError:
            for *_, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return None

    @staticmethod
    def _settle(batch: list[_Call], results: list[Any],
                skip: type[Exception] | None = None) -> None:
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done() or (skip is not None and isinstance(result, skip)):
                continue  # its caller gave up waiting, or it is sent again
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        cluster = self._client if isinstance(self._client, RedisCluster) else None
        if cluster is not None:
            await cluster.initialize()  # its slot table (a no-op once loaded)
        for name, keys, args, _, slot, _ in batch:
            # Not ``pipe.evalsha``: redis-py's cluster pipeline blocks that name (a script
            # may touch keys of several slots); ours declare keys of one slot, which the
            # cluster pipeline routes by, like any keyed command, to that slot's master.
            target = None if cluster is None or slot is None else master_of_slot(cluster,
                                                                                  slot)
            if target is None:
                pipe.execute_command("EVALSHA", self._shas[name], len(keys), *keys, *args)
            else:
                pipe.execute_command("EVALSHA", self._shas[name], len(keys), *keys, *args,
                                     target_nodes=target)
        durable = [(position, call[1][0]) for position, call in enumerate(batch) if call[3]]
        if self._wait is None or not durable:
            return list(await pipe.execute(raise_on_error=False))
        plan = await self._wait.queue(pipe, self._client, len(batch), durable)
        results = plan.apply(list(await pipe.execute(raise_on_error=False)))
        if any(isinstance(result, NotReplicated) for result in results):
            with contextlib.suppress(*REDIS_FAILURES):  # the retry finds out anyway
                await follow_master(self._client)  # a deposed master has no replicas
        return results

    async def close(self) -> None:
        """Send what this tick queued, and let the batches in flight finish (their callers
        are waiting on them), before the client is closed."""
        if self._pending:
            self._flush()  # its call_soon then finds nothing to send
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)
