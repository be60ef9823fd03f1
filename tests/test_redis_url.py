"""REDIS_CONNECTION: the seed's ``host:port`` form and redis:// URLs, anything else refused."""

from __future__ import annotations

import pytest

from servicekit.config import ConfigError
from servicekit.redis_url import display_address, redact, to_redis_url, uses_tls


@pytest.mark.parametrize("connection, url", [
    ("redis-dev.k8s.home:6379", "redis://redis-dev.k8s.home:6379/0"),
    ("127.0.0.1:6380", "redis://127.0.0.1:6380/0"),
    ("localhost", "redis://localhost:6379/0"),
    ("  localhost:7000  ", "redis://localhost:7000/0"),
    ("h:00080", "redis://h:80/0"),
    ("h:1", "redis://h:1/0"),
    ("h:65535", "redis://h:65535/0"),
    ("[::1]:6379", "redis://[::1]:6379/0"),
])
def test_host_port_becomes_a_url(connection: str, url: str) -> None:
    assert to_redis_url(connection) == url


@pytest.mark.parametrize("url", [
    "redis://localhost:6379/0",
    "redis://localhost",
    "redis://:secret@redis.example:6379/2",
    "redis://user:secret@redis.example:6379/2",
    "rediss://redis.example:6380/0",
    "unix:///var/run/redis.sock",
    "redis://[::1]:6379/0",
])
def test_urls_pass_through(url: str) -> None:
    assert to_redis_url(url) == url


@pytest.mark.parametrize("connection", [
    "",
    "   ",
    "host:",
    ":6379",
    "host:abc",
    "host:0",
    "host:65536",
    "host:-1",
    "host:6379:extra",
    "http://host:6379",
    "tcp://host:6379",
    "redis://",
    "redis://:6379",
    "redis://host:notaport",
    "redis://host:99999",
])
def test_bad_connections_are_config_errors_naming_the_variable(connection: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_CONNECTION"):
        to_redis_url(connection)


@pytest.mark.parametrize("connection, shown", [
    ("redis-dev.k8s.home:6379", "redis-dev.k8s.home:6379"),
    ("localhost", "localhost:6379"),
    ("redis://:secret@redis.example:7000/2", "redis.example:7000"),
    ("redis://user:secret@redis.example/0", "redis.example:6379"),
    ("rediss://redis.example:6380", "redis.example:6380"),
    ("unix:///var/run/redis.sock", "/var/run/redis.sock"),
])
def test_display_address_hides_credentials(connection: str, shown: str) -> None:
    assert display_address(connection) == shown
    assert "secret" not in display_address(connection)


def test_display_address_refuses_bad_input() -> None:
    with pytest.raises(ConfigError):
        display_address("nope:nope")


@pytest.mark.parametrize("connection, shown", [
    ("redis://user:s3cret@h:1/0", "redis://user:***@h:1/0"),
    ("rediss://:s3cret@h:1/0", "rediss://:***@h:1/0"),
    ("redis://user:s3@cr:et@h:1/0", "redis://user:***@h:1/0"),
    ("redis://user@h:1/0", "redis://user@h:1/0"),
    ("unix:///r.sock?password=s3cret&db=1", "unix:///r.sock?password=***&db=1"),
    ("h:6379", "h:6379"),
])
def test_redact_hides_only_the_password(connection: str, shown: str) -> None:
    assert redact(connection) == shown


@pytest.mark.parametrize("connection", [
    "redis://user:s3cret@h:99999/0",
    "ftp://user:s3cret@h:1/0",
    "redis://user:s3cret@:1/0",
    "user:s3cret@h:6379",
    ":s3cret@h:notaport",
])
def test_errors_never_quote_the_password(connection: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_CONNECTION") as info:
        to_redis_url(connection)
    assert "s3cret" not in str(info.value)


def test_uses_tls() -> None:
    assert uses_tls("rediss://h:1/0") and uses_tls("rediss://u:p@h/0")
    assert not uses_tls("redis://h:1/0") and not uses_tls("h:6379")
