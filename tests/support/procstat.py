"""What a service process holds, read from Linux /proc: resident memory and open files.

Leak tests compare a process with itself before and after a load, so they need numbers the
kernel keeps, not the process's own metrics. psutil would give the same numbers but is not a
dependency of the project, and these are a few lines of /proc parsing (Linux only, like the
CI machine; the tests using them skip elsewhere).
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import pytest


def require_proc() -> None:
    """Skip the calling test where there is no Linux /proc."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs Linux /proc to read a process's RSS and open descriptors")


def _status_bytes(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of ``pid`` in bytes."""
    return _status_bytes(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size since the process started (VmHWM) in bytes: what a burst
    cost even if it was freed again before anyone looked."""
    return _status_bytes(pid, "VmHWM")


def open_fds(pid: int) -> dict[int, str]:
    """Open descriptors of ``pid``: fd -> link target (``socket:[inode]``, a path...)."""
    fds: dict[int, str] = {}
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            fds[int(name)] = os.readlink(f"{base}/{name}")
        except FileNotFoundError:  # closed while we looked
            continue
    return fds


def _tcp_ports(pid: int) -> dict[int, tuple[int, int]]:
    """Socket inode -> (local, remote) TCP port, for the sockets of ``pid``'s namespace."""
    ports: dict[int, tuple[int, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    local = int(fields[1].rsplit(":", 1)[1], 16)
                    remote = int(fields[2].rsplit(":", 1)[1], 16)
                    ports[int(fields[9])] = (local, remote)
        except FileNotFoundError:
            continue
    return ports


def fd_kinds(pid: int, redis_port: int, ops_port: int | None = None) -> Counter[str]:
    """Open descriptors of ``pid`` by kind: ``redis`` (TCP connections to ``redis_port``),
    ``ops-client`` (accepted connections on ``ops_port``, the /metrics port), ``socket``,
    ``anon_inode:[eventpoll]`` and the like, ``pipe:``, or ``file``.

    Connections to Redis come from a bounded pool that opens them on demand and keeps them,
    and a test's own /metrics requests leave a server-side socket open for a moment, so a
    leak check counts both apart from everything else.
    """
    ports = _tcp_ports(pid)
    kinds: Counter[str] = Counter()
    for target in open_fds(pid).values():
        if target.startswith("socket:["):
            local, remote = ports.get(int(target[len("socket:["):-1]), (0, 0))
            if remote == redis_port:
                kinds["redis"] += 1
            elif ops_port is not None and local == ops_port and remote != 0:
                kinds["ops-client"] += 1
            else:
                kinds["socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe:"] += 1
        elif target.startswith("anon_inode:"):
            kinds[target] += 1
        else:
            kinds["file"] += 1
    return kinds
