"""Start-up failures reported the way the seed does: one clear line, then an exit code."""

from __future__ import annotations

import errno
import logging


def bind_failed(log: logging.Logger, exc: OSError, port: int, variable: str) -> int:
    """Log why a port could not be listened on, naming its setting; returns exit code 1."""
    if exc.errno == errno.EADDRINUSE:
        log.error("Address already in use: port %d (%s)", port, variable)
    else:
        log.error("Cannot listen on port %d (%s): %s", port, variable, exc)
    return 1
