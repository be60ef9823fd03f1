"""Exceptions of the test client, typed so tests can assert on *why* a call failed.

Connection problems subclass :class:`ConnectionError` (an :class:`OSError`) and timeouts
subclass :class:`TimeoutError`, so code that only cares about the builtin categories keeps
working, while tests can match the precise class or the server's error ``code``.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base class of everything the test client raises on purpose."""


class RequestError(ClientError):
    """The server refused a request: ``ERROR_RES`` or a response with ``"ok": false``."""

    def __init__(self, code: str, message: str = "", msg_type: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.msg_type = msg_type


class RequestTimeout(ClientError, TimeoutError):
    """No response within the request timeout (measured per transmission, see GameClient)."""


class NotConnected(ClientError, ConnectionError):
    """There is no connection to send on, or none could be opened."""


class ConnectionLost(ClientError, ConnectionError):
    """The connection ended before the answer arrived and will not be resumed.

    ``reason`` is the ``KICKOUT_NTF`` reason when the server kicked us, else ``None``.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class ReconnectFailed(ConnectionLost):
    """Automatic or explicit session resumption gave up (all attempts used or refused)."""
