"""The open-file limit: every client socket is a file descriptor, and the soft limit is low.

Shells, systemd units and container runtimes commonly start a process with a *soft*
``RLIMIT_NOFILE`` of 1024 while the *hard* limit is far higher (often 524288 or 1048576).
A Gateway left at 1024 accepts about a thousand clients and then fails every ``accept()``
with ``EMFILE`` — a failure that looks like a network problem. Raising the soft limit up to
the hard one needs no privilege, so every service (and the load generator) does it at start
and says in its log what it got; only the hard limit is the operator's to set
(docs/OPERATIONS.md, "File descriptors").

No library: the standard ``resource`` module is the whole interface. What is added here is
the policy (all the way to the hard limit, a finite figure when the hard limit is
"unlimited") and the one log line an operator looks for.
"""

from __future__ import annotations

import contextlib
import logging
import resource
from collections.abc import Iterator
from typing import NamedTuple

#: Soft limit used when the hard limit is ``RLIM_INFINITY`` (BSD/macOS report that; Linux
#: caps the hard limit at ``fs.nr_open``). Linux's default ``fs.nr_open``: 2**20.
UNLIMITED_CAP = 1 << 20

#: Descriptors a Gateway needs besides its client sockets: the Redis pool, the ZeroMQ
#: sockets and their TCP connections to every GameServer, the ops HTTP server and its
#: clients, the event loop's epoll and wake-up pipes, stdio. A generous round figure: being
#: off by a few dozen only moves when the warning shows, not whether connections work.
FD_RESERVE = 256


class NofileLimit(NamedTuple):
    """The soft limit found at start (``before``), the soft limit now, and the hard limit."""

    before: int
    soft: int
    hard: int


def target_soft_limit(hard: int) -> int:
    """The soft limit to ask for: the hard limit itself, or :data:`UNLIMITED_CAP`."""
    return UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard


def raise_nofile_limit() -> NofileLimit:
    """Raise this process's soft ``RLIMIT_NOFILE`` to the hard limit; never lowers it.

    If the kernel refuses (macOS rejects more than ``OPEN_MAX``), the soft limit stays as
    it was and the returned ``soft`` says so.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = target_soft_limit(hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return NofileLimit(soft, soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return NofileLimit(soft, soft, hard)
    return NofileLimit(soft, target, hard)


def _figure(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def describe_nofile_limit(limit: NofileLimit) -> str:
    """The log line: ``File descriptor limit: soft 1024 -> 1048576 (hard 1048576)``."""
    if limit.soft != limit.before:
        return (f"File descriptor limit: soft {_figure(limit.before)} -> {_figure(limit.soft)} "
                f"(hard {_figure(limit.hard)})")
    return f"File descriptor limit: soft {_figure(limit.soft)} (hard {_figure(limit.hard)})"


def connections_allowed(limit: NofileLimit) -> int:
    """How many client sockets fit under the soft limit after :data:`FD_RESERVE`."""
    if limit.soft == resource.RLIM_INFINITY:
        return UNLIMITED_CAP
    return max(0, limit.soft - FD_RESERVE)


@contextlib.contextmanager
def lowered_soft_limit(soft: int) -> Iterator[None]:
    """This process's soft limit at ``soft`` meanwhile, so that children started inside
    inherit it: how tests and benchmarks start a service the way a default shell would."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def apply_nofile_limit(
    log: logging.Logger, max_connections: int | None = None, setting: str = ""
) -> NofileLimit:
    """Raise the limit and log it (INFO); WARN if ``max_connections`` cannot fit under it.

    ``setting`` names the variable behind ``max_connections`` (``GATEWAY_MAX_CONNECTIONS``)
    so the warning tells the operator what to change.
    """
    limit = raise_nofile_limit()
    log.info("%s", describe_nofile_limit(limit))
    allowed = connections_allowed(limit)
    if max_connections is not None and max_connections > allowed:
        log.warning(
            "%s=%d exceeds what the file descriptor limit allows: about %d client "
            "connections (soft limit %s minus %d for other descriptors); beyond that, "
            "accepting fails with EMFILE. Raise the hard limit (ulimit -n, container "
            "ulimits nofile) or lower %s.",
            setting or "max_connections", max_connections, allowed, _figure(limit.soft),
            FD_RESERVE, setting or "max_connections",
        )
    return limit
