"""``REDIS_TLS_CA_FILE``, ``REDIS_TLS_CERT_FILE``, ``REDIS_TLS_KEY_FILE``: how we check a
``rediss://`` Redis and, for mutual TLS, prove who we are to it.

The one home of the TLS keyword arguments given to redis-py, so the services' pool
(servicekit.redis_client) and the synchronous admin CLI cannot drift apart: both verify the
server's certificate *and* its host name (a CA file alone does not stop a certificate issued
to another host of the same CA), and both refuse to start on files they could not use,
with one line naming the variable and the path, never the content.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from servicekit.config import ConfigError
from servicekit.redis_url import to_redis_url

CA_ENV = "REDIS_TLS_CA_FILE"
CERT_ENV = "REDIS_TLS_CERT_FILE"
KEY_ENV = "REDIS_TLS_KEY_FILE"


def _no_password() -> bytes:
    """An encrypted private key must fail to load, not make OpenSSL prompt on a terminal
    that a container does not have (it would hang the start)."""
    return b""


@dataclass(frozen=True, slots=True)
class RedisTls:
    """The PEM files for ``rediss://`` (empty = not set). Without a CA file the system's
    trusted CAs verify the server, as for any public TLS endpoint."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def _set(self) -> list[tuple[str, str]]:
        named = ((CA_ENV, self.ca_file), (CERT_ENV, self.cert_file), (KEY_ENV, self.key_file))
        return [(env, path) for env, path in named if path]

    def check(self, connection: str) -> None:
        """Raise :class:`ConfigError` when these files cannot work with ``connection``
        (``REDIS_CONNECTION``): half a client certificate, files for a plaintext URL, or a
        file that is missing, unreadable or not what its variable says."""
        given = self._set()
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(f"{CERT_ENV} and {KEY_ENV} go together (mutual TLS): set both "
                              "or neither")
        if not given:
            return
        scheme = urlsplit(to_redis_url(connection)).scheme
        if scheme != "rediss":
            names = ", ".join(env for env, _ in given)
            raise ConfigError(f"{names} set, but REDIS_CONNECTION is a {scheme}:// address; "
                              "the TLS files are only used with rediss:// URLs")
        for env, path in given:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(f"{env} {path}: {exc.strerror}") from None
        context = ssl.create_default_context()
        if self.ca_file:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except ssl.SSLError as exc:
                raise ConfigError(f"{CA_ENV} {self.ca_file}: not a PEM CA certificate "
                                  f"({exc.reason or exc})") from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=_no_password)
            except ssl.SSLError as exc:
                raise ConfigError(
                    f"{CERT_ENV} {self.cert_file} and {KEY_ENV} {self.key_file} cannot be "
                    f"loaded as a PEM certificate and its unencrypted private key "
                    f"({exc.reason or exc})") from None

    def client_kwargs(self, url: str) -> dict[str, Any]:
        """redis-py's keyword arguments for ``url`` (a connection pool's or a client's):
        none for redis:// and unix:// (redis-py's plain connections take no ``ssl_*``)."""
        if urlsplit(url).scheme != "rediss":
            return {}
        kwargs: dict[str, Any] = {
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "ssl_ca_certs": self.ca_file or None,
        }
        if self.cert_file:
            kwargs["ssl_certfile"] = self.cert_file
            kwargs["ssl_keyfile"] = self.key_file
        return kwargs


#: No TLS files: plaintext URLs, or rediss:// verified against the system's CAs.
NO_TLS = RedisTls()
