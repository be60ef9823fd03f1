"""``REDIS_CONNECTION``: ``host:port`` as in the original sample, or a redis:// / rediss:// URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from servicekit.config import ConfigError


def to_redis_url(connection: str) -> str:
    """A URL redis-py accepts; raises :class:`ConfigError` naming ``REDIS_CONNECTION``."""
    text = connection.strip()
    if not text:
        raise ConfigError("REDIS_CONNECTION must not be empty")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"REDIS_CONNECTION scheme must be redis://, rediss:// or unix://, got {text!r}"
            )
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"REDIS_CONNECTION has an invalid port: {text!r}") from None
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigError(f"REDIS_CONNECTION has no host: {text!r}")
        del port
        return text
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, "6379"
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"REDIS_CONNECTION must be HOST:PORT or a redis:// URL, got {text!r}")
    return f"redis://{host}:{int(port_text)}/0"


def display_address(connection: str) -> str:
    """``host:port`` for log lines, without credentials."""
    url = to_redis_url(connection)
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"
