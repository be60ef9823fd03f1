"""Settings from CLI flags, environment variables and defaults, in that order of precedence.

A service declares its settings as a frozen dataclass whose fields carry
``setting(env=..., help=...)`` metadata; :func:`load_config` builds ``--help`` from it and
turns any bad value into one line naming the variable, then exit code 2, because a
traceback on a typo in a Kubernetes manifest wastes an operator's evening.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from servicekit.keys import DEFAULT_PREFIX, Keys, check_prefix

if TYPE_CHECKING:
    from servicekit.redis_tls import RedisTls


class ConfigError(Exception):
    """A setting has a value the service cannot run with."""


def setting(
    default: Any,
    *,
    env: str,
    help: str,
    min: float | None = None,
    max: float | None = None,
    choices: Sequence[str] | None = None,
) -> Any:
    """A dataclass field that is also an environment variable and a ``--flag``."""
    return dataclasses.field(
        default=default,
        metadata={"env": env, "help": help, "min": min, "max": max, "choices": choices},
    )


def _flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _convert(field: dataclasses.Field[Any], raw: str) -> Any:
    meta = field.metadata
    env = meta["env"]
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    value: Any
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{env} must be true or false, got {raw!r}")
    if kind == "int":
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{env} must be an integer, got {raw!r}") from None
    elif kind == "float":
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{env} must be a number, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{env} must be a finite number, got {raw!r}")
    else:
        value = raw
    if meta["min"] is not None and value < meta["min"]:
        raise ConfigError(f"{env} must be at least {meta['min']}, got {raw!r}")
    if meta["max"] is not None and value > meta["max"]:
        raise ConfigError(f"{env} must be at most {meta['max']}, got {raw!r}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{env} must be one of {', '.join(meta['choices'])}, got {raw!r}")
    return value


def build_parser(config_type: type[Any], prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Every flag can also be set by the environment variable named after it; "
        "a flag wins over the variable, the variable over the default.",
    )
    for field in dataclasses.fields(config_type):
        meta = field.metadata
        default = field.default
        shown = "(empty)" if default == "" else default
        parser.add_argument(
            _flag_name(field.name),
            dest=field.name,
            default=None,
            metavar=meta["env"],
            help=f"{meta['help']} [env {meta['env']}, default {shown}]",
        )
    return parser


def load_config[T](
    config_type: type[T],
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None = None,
    prog: str = "service",
    description: str = "",
) -> T:
    """Parse ``argv`` and ``environ`` into ``config_type``; raises :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    parser = build_parser(config_type, prog, description)
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(config_type):  # type: ignore[arg-type]
        raw = getattr(args, field.name)
        if raw is None:
            raw = environ.get(field.metadata["env"])
        if raw is None:
            continue
        values[field.name] = _convert(field, raw)
    config = config_type(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def load_or_exit[T](
    config_type: type[T], argv: Sequence[str] | None, prog: str, description: str
) -> T:
    """:func:`load_config`, printing one clear line and exiting 2 on a bad setting."""
    try:
        return load_config(config_type, argv, prog=prog, description=description)
    except ConfigError as exc:
        print(f"{prog}: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def describe(config: Any) -> str:
    """``NAME=value`` pairs for the start-up log line, secrets masked."""
    parts = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        env = field.metadata["env"]
        if env.endswith("_FILE"):
            pass  # a path: shown, so an operator can check which file is read
        elif "SECRET" in env or "PASSWORD" in env or "TOKEN" in env:
            value = "***" if value else ""
        elif isinstance(value, str) and "://" in value:
            from servicekit.redis_url import redact  # it imports this module

            value = redact(value)
        parts.append(f"{env}={value}")
    return " ".join(parts)


DEFAULT_REDIS = "redis-dev.k8s.home:6379"
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR")
REDIS_MODES = ("standalone", "cluster", "sentinel")


@dataclass(frozen=True)
class CommonConfig:
    """Settings every service has, under the same variable names."""

    redis_connection: str = setting(
        DEFAULT_REDIS, env="REDIS_CONNECTION",
        help="Redis (sessions and node registry): HOST:PORT or "
        "redis://[user:password@]host:port/db (rediss:// for TLS)",
    )
    redis_tls_ca_file: str = setting(
        "", env="REDIS_TLS_CA_FILE",
        help="PEM file of the CA(s) that signed Redis' certificate, for rediss:// (empty: "
        "the system's trusted CAs); the certificate must also name the host of "
        "REDIS_CONNECTION")
    redis_tls_cert_file: str = setting(
        "", env="REDIS_TLS_CERT_FILE",
        help="PEM client certificate (chain) for Redis with mutual TLS (tls-auth-clients "
        "yes), rediss:// only; needs REDIS_TLS_KEY_FILE")
    redis_tls_key_file: str = setting(
        "", env="REDIS_TLS_KEY_FILE",
        help="PEM private key (unencrypted) of REDIS_TLS_CERT_FILE")
    redis_mode: str = setting(
        "standalone", env="REDIS_MODE",
        help="standalone: one Redis (or a primary with replicas) at REDIS_CONNECTION; "
        "cluster: Redis Cluster, REDIS_CONNECTION = comma-separated seed nodes; sentinel: "
        "the master REDIS_SENTINEL_MASTER, REDIS_CONNECTION = comma-separated sentinels",
        choices=REDIS_MODES)
    redis_sentinel_master: str = setting(
        "mymaster", env="REDIS_SENTINEL_MASTER",
        help="REDIS_MODE=sentinel: the name the sentinels monitor the master under")
    redis_key_prefix: str = setting(
        DEFAULT_PREFIX, env="REDIS_KEY_PREFIX",
        help="prefix of every Redis key (sessions, players, node registry): deployments with "
        "different prefixes share one Redis without seeing each other; no braces or spaces")
    log_level: str = setting("INFO", env="LOG_LEVEL", help="TRACE|DEBUG|INFO|WARN|ERROR",
                             choices=LOG_LEVELS)
    log_format: str = setting("text", env="LOG_FORMAT", help="text|json",
                              choices=("text", "json"))
    max_frame_bytes: int = setting(
        65536, env="MAX_FRAME_BYTES",
        help="largest frame length field; also bounds decompressed payloads and responses "
        "(same value on every service)", min=1024, max=16 * 1024 * 1024)
    curve_secret_file: str = setting(
        "", env="CLUSTER_CURVE_SECRET_FILE",
        help="file holding the cluster's Z85 CURVE secret key (python -m gameserver keygen); "
        "set, every internal ZeroMQ socket is encrypted and only holders of the key are "
        "admitted; more keys on further lines are also accepted (key rotation)")

    def validate(self) -> None:
        from servicekit.curve import load_keys
        from servicekit.redis_url import seed_urls, to_redis_url

        if self.redis_mode != "standalone":
            for seed in seed_urls(self.redis_connection):
                if seed.startswith("unix:"):
                    raise ConfigError(f"REDIS_CONNECTION: with REDIS_MODE={self.redis_mode} "
                                      "every server is reached over TCP, not unix://")
                self.redis_tls.check(seed)
        else:
            if "," in self.redis_connection:
                raise ConfigError("REDIS_CONNECTION lists several servers: that needs "
                                  "REDIS_MODE=cluster (seed nodes) or sentinel (sentinels)")
            to_redis_url(self.redis_connection)
            self.redis_tls.check(self.redis_connection)
        try:
            check_prefix(self.redis_key_prefix)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        load_keys(self.curve_secret_file)

    @property
    def keys(self) -> Keys:
        """Every Redis key name, under REDIS_KEY_PREFIX."""
        return Keys(self.redis_key_prefix)

    @property
    def redis_tls(self) -> RedisTls:
        """The REDIS_TLS_* files, as servicekit.redis_client wants them."""
        from servicekit.redis_tls import RedisTls

        return RedisTls(self.redis_tls_ca_file, self.redis_tls_cert_file,
                        self.redis_tls_key_file)
