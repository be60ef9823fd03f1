"""Log lines of one event-loop tick go out in one write (servicekit.logs), in order, and a
WARNING or a line logged outside the loop is written at once."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest

from servicekit.logs import TextFormatter, TickBufferedHandler


class CountingStream(io.StringIO):
    """A real text stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, CountingStream]]:
    stream = CountingStream()
    handler = TickBufferedHandler(stream)
    handler.setFormatter(TextFormatter("test"))
    logger = logging.getLogger("test.tick_buffered")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        handler.close()


def messages(stream: CountingStream) -> list[str]:
    return [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()]


async def test_lines_of_one_tick_go_out_in_one_write(
        logged: tuple[logging.Logger, CountingStream]) -> None:
    log, stream = logged
    for i in range(5):
        log.info("line %d", i)
    assert stream.writes == [], "written before the tick ended"
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(stream.writes) == 1
    assert messages(stream) == [f"line {i}" for i in range(5)]


async def test_a_warning_is_written_at_once_after_the_lines_before_it(
        logged: tuple[logging.Logger, CountingStream]) -> None:
    log, stream = logged
    log.info("before")
    log.warning("trouble")
    assert messages(stream) == ["before", "trouble"]
    assert "[WARN] test: trouble" in stream.getvalue()
    log.info("after")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert messages(stream) == ["before", "trouble", "after"]


def test_outside_a_loop_each_line_is_written_at_once(
        logged: tuple[logging.Logger, CountingStream]) -> None:
    log, stream = logged
    log.info("starting")
    assert messages(stream) == ["starting"]


async def test_a_line_from_another_thread_is_written_at_once_after_the_buffered_ones(
        logged: tuple[logging.Logger, CountingStream]) -> None:
    log, stream = logged
    log.info("on the loop")
    await asyncio.to_thread(log.info, "from a thread")
    # No loop runs in that thread: its line went out at once, the loop's buffered one first.
    assert messages(stream) == ["on the loop", "from a thread"]
