"""Logging set-up: the seed's ``[LEVEL] message`` text lines, or one JSON object per line.

Per-packet lines are DEBUG everywhere: formatting a record costs ~10 us, a whole message's
budget at the throughput we target, so INFO must stay quiet on hot paths. Per-connection and
per-session lines (connected, session created, logged out) are INFO, as in the seed, and at
thousands of logins a second they were a fifth of each service's CPU; so a record is made as
cheaply as the standard library allows (no caller lookup, no thread, process or task names:
no format uses them), the time stamp is formatted once per second, and the lines of one
event-loop tick go out in one write (:class:`TickBufferedHandler`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TextIO

import orjson


class _SecondStamp:
    """``2026-12-06T22:39:29`` for a time stamp, formatted once per second."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return self._text


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._stamp = _SecondStamp()

    def format(self, record: logging.LogRecord) -> str:
        stamp = self._stamp(record.created)
        level = "WARN" if record.levelno == logging.WARNING else record.levelname
        line = f"{stamp}.{int(record.msecs):03d}Z [{level}] {self.service}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._stamp = _SecondStamp()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": f"{self._stamp(record.created)}.{int(record.msecs):03d}Z",
            "level": "WARN" if record.levelno == logging.WARNING else record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class TickBufferedHandler(logging.StreamHandler[TextIO]):
    """Writes the lines logged during one event-loop tick with one ``write`` at its end.

    A line logged outside a running loop (start-up, shutdown, another thread), and any
    WARNING or worse, is written at once, after whatever the tick had buffered, so the order
    of lines never changes and an error is on disk before the code goes on. What a
    ``kill -9`` can lose is the INFO and DEBUG lines of the tick it interrupts.

    Why not ``logging.handlers.MemoryHandler`` or ``QueueHandler``: the first flushes by
    count or level, not per tick, so quiet periods would hold lines back; the second moves
    the write to a thread, which costs a wake-up per line instead of saving one.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._buffer: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._buffer.append(line)
        if record.levelno >= logging.WARNING:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: start-up, shutdown, another thread
            self.flush()
            return
        if len(self._buffer) == 1:
            loop.call_soon(self._flush_locked)

    def _flush_locked(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self.flush()

    def flush(self) -> None:
        """Write what is buffered (the caller holds the handler's lock, as ``Handler``
        does around ``emit`` and ``flush``)."""
        if not self._buffer:
            return
        text = "\n".join(self._buffer) + "\n"
        self._buffer.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or broken stderr must not take the service down
            self.handleError(logging.makeLogRecord({"msg": text}))


def _lean_records() -> None:
    """Records without what no formatter here prints: the caller's file and line (a walk
    up the stack per record), and thread, process and asyncio task names (see "Optimization"
    in the logging HOWTO)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    setattr(logging, "logAsyncioTasks", False)  # noqa: B010  # 3.12, not in typeshed yet


def setup_logging(service: str, level: str, fmt: str) -> None:
    """Configure the root logger once, on stderr."""
    name = level.upper()
    aliases = {"TRACE": logging.DEBUG, "WARN": logging.WARNING}
    numeric: int = aliases.get(name) or logging.getLevelNamesMapping().get(name, logging.INFO)
    _lean_records()
    handler = TickBufferedHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
