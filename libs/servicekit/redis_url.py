"""``REDIS_CONNECTION``: ``host:port`` as in the original sample, or a redis:// / rediss:// URL."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from servicekit.config import ConfigError


def redact(connection: str) -> str:
    """``connection`` with its password shown as ``***``, for error messages: an operator
    sees which URL was refused, a log collector never sees the password."""
    head, at, host = connection.rpartition("@")
    if at:
        scheme, sep, credentials = head.rpartition("://")
        user, colon, _ = credentials.partition(":")
        connection = f"{scheme}{sep}{user}{':***' if colon else ''}@{host}"
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", connection)


def to_redis_url(connection: str) -> str:
    """A URL redis-py accepts; raises :class:`ConfigError` naming ``REDIS_CONNECTION``
    (the password never quoted)."""
    text = connection.strip()
    shown = redact(text)
    if not text:
        raise ConfigError("REDIS_CONNECTION must not be empty")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"REDIS_CONNECTION scheme must be redis://, rediss:// or unix://, got {shown!r}"
            )
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"REDIS_CONNECTION has an invalid port: {shown!r}") from None
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigError(f"REDIS_CONNECTION has no host: {shown!r}")
        del port
        return text
    if "@" in text:
        raise ConfigError("REDIS_CONNECTION with a user or password must be a URL: "
                          "redis://[user]:password@host:port/db (rediss:// for TLS)")
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, "6379"
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"REDIS_CONNECTION must be HOST:PORT or a redis:// URL, got {shown!r}")
    return f"redis://{host}:{int(port_text)}/0"


def seed_urls(connection: str) -> list[str]:
    """The URLs of a comma-separated ``REDIS_CONNECTION`` (``REDIS_MODE=cluster``: seed
    nodes; one or more), each checked like :func:`to_redis_url`. The first one's user,
    password and scheme apply to every node of the cluster."""
    seeds = [to_redis_url(part) for part in connection.split(",") if part.strip()]
    if not seeds:
        raise ConfigError("REDIS_CONNECTION must not be empty")
    return seeds


def uses_tls(connection: str) -> bool:
    """Whether ``connection`` (or its first seed) is a ``rediss://`` URL."""
    return urlsplit(seed_urls(connection)[0]).scheme == "rediss"


def display_address(connection: str) -> str:
    """``host:port`` for log lines, without credentials (the first seed's, and how many
    more there are)."""
    seeds = seed_urls(connection)
    parts = urlsplit(seeds[0])
    more = f" (+{len(seeds) - 1} seeds)" if len(seeds) > 1 else ""
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}{more}"
