"""Free TCP ports for services started by tests.

The services need *known* ports (a GameServer restarted by a test must come back on the same
ones, and the Gateway must be told where to find it), so the OS's "port 0" cannot be passed
through to them. Asking the OS for an ephemeral port and closing the socket again leaves a
small race with other processes; remembering every port handed out in this run removes the
race between our own services, which is the one that actually bites (two fixtures picking
the same port within a millisecond).
"""

from __future__ import annotations

import socket
import threading

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now and that this run has not used yet."""
    with _lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free TCP port that was not already handed out")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports (see :func:`free_port`)."""
    return [free_port(host) for _ in range(count)]


def port_is_listening(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
