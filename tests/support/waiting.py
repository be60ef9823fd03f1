"""Waiting for a condition instead of sleeping.

A fixed ``sleep(0.5)`` is either too short on a loaded CI machine (flaky) or too long
everywhere else (slow). These helpers poll a predicate until it returns something truthy and
fail with a message that says what was awaited and what was last seen.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Message = str | Callable[[], str]


class WaitTimeout(AssertionError):
    """The condition did not become true in time (an assertion failure, not an error)."""


def _describe(message: Message, timeout: float, last: object, error: BaseException | None) -> str:
    text = message() if callable(message) else message
    parts = [f"condition not met within {timeout:g} s"]
    if text:
        parts.append(text)
    if error is not None:
        parts.append(f"last error: {error!r}")
    else:
        parts.append(f"last value: {last!r}")
    return "; ".join(parts)


def wait_until[T](
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: Message = "",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    ``ignore`` lists exception types that count as "not yet" (say ``ConnectionRefusedError``
    while a server starts); any other exception propagates at once. The predicate is always
    tried at least once more after the deadline would be crossed, so a slow predicate cannot
    make the wait fail without having been evaluated.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            last = predicate()
            error = None
            if last:
                return last
        except ignore as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise WaitTimeout(_describe(message, timeout, last, error))
        time.sleep(interval)


async def wait_until_async[T](
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: Message = "",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """:func:`wait_until` for async tests: ``predicate`` may be a plain or an async callable.

    Sleeps with ``asyncio.sleep`` so the event loop (and the client under test) keeps running.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            last = result
            error = None
            if result:
                return result
        except ignore as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise WaitTimeout(_describe(message, timeout, last, error))
        await asyncio.sleep(interval)
