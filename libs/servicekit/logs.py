"""Logging set-up: the seed's ``[LEVEL] message`` text lines, or one JSON object per line.

Per-packet lines are DEBUG everywhere: formatting a record costs ~10 us, a whole message's
budget at the throughput we target, so INFO must stay quiet on hot paths.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = "WARN" if record.levelno == logging.WARNING else record.levelname
        line = f"{stamp}.{int(record.msecs):03d}Z [{level}] {self.service}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created))}"
            f".{int(record.msecs):03d}Z",
            "level": "WARN" if record.levelno == logging.WARNING else record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(service: str, level: str, fmt: str) -> None:
    """Configure the root logger once, on stderr."""
    name = level.upper()
    aliases = {"TRACE": logging.DEBUG, "WARN": logging.WARNING}
    numeric: int = aliases.get(name) or logging.getLevelNamesMapping().get(name, logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
