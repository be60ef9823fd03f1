"""Real Redis servers for tests: a Docker container when an engine answers, else a local binary.

Sessions live in Redis, so half of what the backbone promises (resume after a restart,
failover, expiry) can only be tested against a real server. Two kinds:

* :class:`ContainerRedisServer` - testcontainers' RedisContainer, for machines with Docker.
* :class:`LocalRedisServer` - the ``redis-server`` binary on a free loopback port, which is
  what CI uses (``.ci/run`` installs it). Only this kind can be stopped and started again on
  the same port with the same data directory, which the "Redis restarted mid-run" tests need.

Both expose ``host``, ``port``, ``url``, ``connection`` (``host:port``), ``client()``,
``ping()`` and ``flush()``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.support.ports import free_port
from tests.support.processes import die_with_parent, stop_child, track_child, untrack_child

#: Image used when Redis runs in Docker (override with GB_TEST_REDIS_IMAGE).
DEFAULT_IMAGE = "redis:7-alpine"


class RedisUnavailable(RuntimeError):
    """Neither a Docker engine nor a ``redis-server`` binary could provide a Redis."""


class RedisServer:
    """What every test Redis offers. Subclasses set ``host`` and ``port``."""

    host: str
    port: int
    #: The services' REDIS_MODE for it (tests.support.redis_cluster has ``cluster``).
    mode = "standalone"

    @property
    def url(self) -> str:
        """``redis://host:port/0``: what ``--redis-connection`` gets."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def connection(self) -> str:
        """``host:port``, the seed's REDIS_CONNECTION form."""
        return f"{self.host}:{self.port}"

    def client_kwargs(self) -> dict[str, Any]:
        """What :meth:`client` and :meth:`ping` add to reach this server: TLS files and
        credentials for servers that want them (see :class:`SecureRedisServer`)."""
        return {}

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new synchronous redis-py client (``decode_responses`` etc. via ``kwargs``)."""
        kwargs.setdefault("socket_connect_timeout", 2.0)
        kwargs.setdefault("socket_timeout", 5.0)
        return redis.Redis(host=self.host, port=self.port, db=0,
                           **{**self.client_kwargs(), **kwargs})

    def ping(self, timeout: float = 0.5) -> bool:
        """Whether the server answers PING right now."""
        try:
            with redis.Redis(
                host=self.host, port=self.port, socket_connect_timeout=timeout,
                socket_timeout=timeout, **self.client_kwargs(),
            ) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def flush(self) -> None:
        """FLUSHALL: forget every key (sessions, node registry) of earlier tests."""
        with self.client() as client:
            client.flushall()

    def close(self) -> None:
        """Stop the server for good (fixture teardown)."""


def docker_engine_answers(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping within ``timeout`` (never raises)."""
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=max(1, int(timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no socket, refused, timeout: all mean "no"
        return False


def redis_binary() -> str | None:
    """Path of ``redis-server`` (override with GB_TEST_REDIS_SERVER), or ``None``."""
    explicit = os.environ.get("GB_TEST_REDIS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("redis-server")


class ContainerRedisServer(RedisServer):
    """Redis in a Docker container started through testcontainers."""

    def __init__(self, image: str | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                from testcontainers.community.redis import RedisContainer
            except ImportError:  # older testcontainers
                from testcontainers.redis import RedisContainer
        self._container: Any = RedisContainer(
            image or os.environ.get("GB_TEST_REDIS_IMAGE", DEFAULT_IMAGE)
        )
        self._container.start()
        self.host = str(self._container.get_container_host_ip())
        if self.host == "localhost":
            self.host = "127.0.0.1"  # services and clients should not depend on resolving it
        self.port = int(self._container.get_exposed_port(6379))

    def __repr__(self) -> str:
        return f"<ContainerRedisServer {self.connection}>"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._container.stop()


class LocalRedisServer(RedisServer):
    """A ``redis-server`` child process on ``127.0.0.1:<port>`` with its own data directory.

    ``persistent=True`` turns on the append-only file with ``appendfsync always``: every
    acknowledged write is on disk before the reply, so the data survives :meth:`stop` *and*
    :meth:`kill`, and a test of "Redis restarted mid-run" is deterministic. With
    ``persistent=False`` nothing is written to disk and a restart starts empty.

    :meth:`stop` / :meth:`kill` / :meth:`start` keep the port and the data directory.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        persistent: bool = False,
        host: str = "127.0.0.1",
        binary: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        found = binary or redis_binary()
        if found is None:
            raise RedisUnavailable("no redis-server binary on PATH")
        self.binary = found
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.data_dir = data_dir
        self.persistent = persistent
        self.extra_args = list(extra_args or [])
        self.log_path = data_dir / "redis.log"
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self.running and self._proc else "stopped"
        return f"<LocalRedisServer {self.connection} {state} dir={self.data_dir}>"

    @property
    def command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--protected-mode", "no",
            *persistence,
            *self.extra_args,
        ]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 15.0) -> LocalRedisServer:
        """Start (or start again) on the same port and data directory; wait for PING."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        track_child(self._proc)
        deadline = time.monotonic() + timeout
        while not self.ping(timeout=0.2):
            if self._proc.poll() is not None:
                raise RedisUnavailable(
                    f"redis-server on port {self.port} exited with code {self._proc.returncode}"
                    f"\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self.kill()
                raise RedisUnavailable(
                    f"redis-server on port {self.port} did not answer PING within {timeout:g} s"
                    f"\n{self.log_tail()}"
                )
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Redis flushes the append-only file and exits) and wait; SIGKILL if stuck."""
        proc = self._proc
        if proc is None:
            return
        def terminate() -> None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()

        stop_child(proc, timeout, terminate)

    def kill(self) -> None:
        """SIGKILL: a crash. With ``persistent=True`` acknowledged writes still survive."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait(timeout=10)
        untrack_child(proc)

    def restart(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        if kill:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    def close(self) -> None:
        self.stop(timeout=5.0)


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA (``trustme``) and the PEM files a TLS ``redis-server`` and its clients
    need. The server certificate names ``localhost`` and ``127.0.0.1``, so clients keep
    host-name checking on, as the services do."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def create(cls, directory: Path) -> TlsFiles:
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        files = cls(directory / "redis-ca.pem", directory / "redis-server.crt",
                    directory / "redis-server.key", directory / "redis-client.crt",
                    directory / "redis-client.key")
        ca.cert_pem.write_to_path(str(files.ca_file))
        server = ca.issue_cert("localhost", "127.0.0.1")
        server.cert_chain_pems[0].write_to_path(str(files.server_cert))
        server.private_key_pem.write_to_path(str(files.server_key))
        client = ca.issue_cert("gamebackbone-client")
        client.cert_chain_pems[0].write_to_path(str(files.client_cert))
        client.private_key_pem.write_to_path(str(files.client_key))
        return files

    @staticmethod
    def unrelated_ca(path: Path) -> Path:
        """A CA file of another, fresh CA: a well-formed but wrong REDIS_TLS_CA_FILE."""
        import trustme

        trustme.CA().cert_pem.write_to_path(str(path))
        return path


class SecureRedisServer(LocalRedisServer):
    """``redis-server`` the way a managed Redis is often set up: TLS only (``--port 0``, the
    TLS port is :attr:`port`), client certificates optionally required (``--tls-auth-clients
    yes``), and with ``acl=True`` the ``default`` user switched off.

    The test harness itself (:meth:`client`, :meth:`ping`, :meth:`flush`) connects as an
    all-powerful ``gb-test-admin`` user, over TLS with the client certificate, so it works
    whatever the services under test are given; :meth:`as_user` is what they are given.
    """

    ADMIN_USER = "gb-test-admin"

    def __init__(self, data_dir: Path, *, tls: TlsFiles | None = None,
                 require_client_cert: bool = False, acl: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.admin_password = secrets.token_hex(12) if acl else None

    @property
    def scheme(self) -> str:
        return "rediss" if self.tls is not None else "redis"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/0"

    def url_for(self, user: str, password: str) -> str:
        """The URL of this server for an ACL user: ``redis[s]://user:password@host:port/0``."""
        return f"{self.scheme}://{user}:{password}@{self.host}:{self.port}/0"

    @property
    def command(self) -> list[str]:
        command = super().command
        if self.tls is not None:
            command[command.index("--port") + 1] = "0"
            command += [
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.server_cert),
                "--tls-key-file", str(self.tls.server_key),
                "--tls-ca-cert-file", str(self.tls.ca_file),
                "--tls-auth-clients", "yes" if self.require_client_cert else "no",
            ]
        if self.admin_password is not None:
            # redis-server takes a directive's arguments as separate argv words.
            command += ["--user", "default", "off",
                        "--user", self.ADMIN_USER, "on", f">{self.admin_password}", "~*", "&*",
                        "+@all"]
        return command

    def tls_kwargs(self) -> dict[str, Any]:
        """redis-py's arguments for TLS with the client certificate (none without TLS)."""
        if self.tls is None:
            return {}
        return {"ssl": True, "ssl_ca_certs": str(self.tls.ca_file),
                "ssl_certfile": str(self.tls.client_cert),
                "ssl_keyfile": str(self.tls.client_key)}

    def client_kwargs(self) -> dict[str, Any]:
        kwargs = self.tls_kwargs()
        if self.admin_password is not None:
            kwargs.update(username=self.ADMIN_USER, password=self.admin_password)
        return kwargs

    def as_user(self, user: str, password: str) -> RedisUser:
        """This server as ``user`` sees it: give it to a Cluster (``system_factory(redis=…)``)
        and its services connect with ``redis[s]://user:password@host:port/0``."""
        return RedisUser(self, user, password)


class RedisUser(RedisServer):
    """A :class:`SecureRedisServer` under an ACL user's name: ``url`` carries the user and
    password; :meth:`client` connects as that user (to check what the user may do)."""

    def __init__(self, server: SecureRedisServer, user: str, password: str) -> None:
        self.server = server
        self.host = server.host
        self.port = server.port
        self.user = user
        self.password = password

    def __repr__(self) -> str:
        return f"<RedisUser {self.user} on {self.server!r}>"

    @property
    def url(self) -> str:
        return self.server.url_for(self.user, self.password)

    def client_kwargs(self) -> dict[str, Any]:
        return {**self.server.tls_kwargs(), "username": self.user, "password": self.password}

    def flush(self) -> None:
        self.server.flush()


def start_shared_redis(data_dir: Path) -> RedisServer:
    """The session's Redis: Docker if an engine answers (and the image starts), else local.

    ``GB_TEST_REDIS=local`` skips the Docker attempt (faster on a machine with both),
    ``GB_TEST_REDIS=docker`` refuses the fallback. Raises :class:`RedisUnavailable` with both
    reasons when neither works.
    """
    mode = os.environ.get("GB_TEST_REDIS", "auto").strip().lower()
    reasons: list[str] = []
    if mode in ("auto", "docker"):
        if docker_engine_answers():
            try:
                return ContainerRedisServer()
            except Exception as exc:  # e.g. the image cannot be pulled offline
                reasons.append(f"Docker answered but the Redis container did not start: {exc}")
        else:
            reasons.append("no Docker engine answered a ping (testcontainers)")
        if mode == "docker":
            raise RedisUnavailable("; ".join(reasons))
    else:
        reasons.append("GB_TEST_REDIS=local: Docker not tried")
    return start_local_or_explain(data_dir, reasons, persistent=False)


def start_private_redis(data_dir: Path, *, persistent: bool = False) -> RedisServer:
    """A Redis only one test (or one cluster) uses: a local binary, else a container."""
    if redis_binary() is not None:
        return LocalRedisServer(data_dir, persistent=persistent).start()
    if docker_engine_answers():
        return ContainerRedisServer()
    raise RedisUnavailable(
        "no redis-server binary on PATH (install it: apt-get install redis-server) and no "
        "Docker engine answered (testcontainers)"
    )


def start_local_or_explain(
    data_dir: Path, reasons: list[str], *, persistent: bool = False
) -> LocalRedisServer:
    if redis_binary() is None:
        reasons.append("no redis-server binary on PATH (apt-get install redis-server)")
        raise RedisUnavailable("; ".join(reasons))
    return LocalRedisServer(data_dir, persistent=persistent).start()
