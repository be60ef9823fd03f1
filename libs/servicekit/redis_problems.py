"""What a failed Redis call says about the cause, in words an operator can act on.

"Redis is NOT reachable (Error while reading from …)" sends an operator to check the
network when the real cause is a wrong password, an ACL rule missing, or a CA file that did
not sign Redis' certificate; those are the failures of a new TLS or ACL set-up, and each
needs a different fix. redis-py reports them as different exception classes, or (TLS) as the
``ssl`` error it wrapped, or (a command refused inside a Lua script) only in the message, so
the sorting lives here, in one place, for the log line and for ``/readyz`` alike.

The details quoted come from redis-py and the server, which never echo the password; the
address is ``servicekit.redis_url.display_address``, which has no credentials either.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import redis.exceptions

UNREACHABLE = "unreachable"
CREDENTIALS = "credentials"
PERMISSION = "permission"
CERTIFICATE = "certificate"
HANDSHAKE = "handshake"
REPLICAS = "replicas"

#: kind -> (state for /readyz, "Redis at HOST:PORT <state> for N.Ns"; the log line's text)
_WORDING: dict[str, tuple[str, str]] = {
    UNREACHABLE: ("unreachable", "Redis is NOT reachable at {address} ({detail})"),
    CREDENTIALS: (
        "refuses our credentials",
        "Redis at {address} refused our credentials (ACL user or password wrong): {detail}"),
    PERMISSION: (
        "denies a command to our ACL user",
        "Redis at {address} denied a command to our ACL user (NOPERM; grant the rules in "
        "docs/OPERATIONS.md §1.8): {detail}"),
    CERTIFICATE: (
        "fails TLS certificate verification",
        "Redis at {address}: TLS certificate verification failed (check REDIS_TLS_CA_FILE, "
        "and that the certificate names the host of REDIS_CONNECTION): {detail}"),
    HANDSHAKE: (
        "fails the TLS handshake",
        "Redis at {address}: TLS handshake failed or the connection was reset (if Redis "
        "requires client certificates, set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE; check "
        "that Redis speaks TLS on this port): {detail}"),
    REPLICAS: (
        "does not replicate our writes in time",
        "Redis at {address} did not confirm our writes on REDIS_WAIT_REPLICAS replicas in "
        "time (a replica down or lagging; INFO replication on the master shows which): "
        "{detail}"),
}

#: Server replies that mean "not these credentials" (redis-py maps most of them to
#: AuthenticationError already; the prefixes catch the rest).
_CREDENTIAL_PREFIXES = ("WRONGPASS", "NOAUTH", "invalid username-password pair")
#: A command or key refused by the ACL: redis-py's NoPermissionError, or, for a command a
#: Lua script ran, a plain script error with this wording (Redis 7).
_PERMISSION_MARKS = ("NOPERM", "no permissions to", "The user executing the script can't")


class NotReplicated(redis.exceptions.RedisError):
    """The write ran on the master but ``WAIT`` counted fewer replicas than
    ``REDIS_WAIT_REPLICAS`` within its timeout: the write is not acknowledged (a failover now
    could lose it), so the caller treats it as failed and retries it (idempotently)."""


@dataclass(frozen=True, slots=True)
class RedisProblem:
    """One failed call, sorted: ``kind`` is one of the constants above."""

    kind: str
    detail: str

    @property
    def state(self) -> str:
        """How ``/readyz`` words it: ``Redis at HOST:PORT <state> for N.Ns``."""
        return _WORDING[self.kind][0]

    def line(self, address: str) -> str:
        """The log line, without what the caller does about it."""
        detail = self.detail.rstrip(". ") or self.detail  # the caller's "; …" follows
        return _WORDING[self.kind][1].format(address=address, detail=detail)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (redis-py raises its ConnectionError *during* the handling
    of the ``ssl`` or socket error, so that one is the ``__context__``)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def diagnose(exc: BaseException, tls: bool = False) -> RedisProblem:
    """Sort a failure. ``tls``: the connection is ``rediss://``; there a reset means the
    server dropped us during or right after the handshake (a client certificate it
    requires, most often: under TLS 1.3 the client learns of that only on its first read)."""
    chain = _chain(exc)
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return RedisProblem(CERTIFICATE, cause.verify_message or str(cause))
    text = str(exc) or type(exc).__name__
    if isinstance(exc, NotReplicated):
        return RedisProblem(REPLICAS, text)
    if isinstance(exc, redis.exceptions.AuthenticationError) or text.startswith(
            _CREDENTIAL_PREFIXES):
        return RedisProblem(CREDENTIALS, text)
    if isinstance(exc, redis.exceptions.NoPermissionError) or any(
            mark in text for mark in _PERMISSION_MARKS):
        return RedisProblem(PERMISSION, text)
    for cause in chain:
        if isinstance(cause, ssl.SSLError) or (tls and isinstance(cause, ConnectionResetError)):
            return RedisProblem(HANDSHAKE, text)
    return RedisProblem(UNREACHABLE, text)


def explain(address: str, exc: BaseException, tls: bool = False) -> str:
    """One line for a one-shot caller (the admin CLI): the cause in words."""
    return diagnose(exc, tls).line(address)
