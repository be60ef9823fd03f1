"""Fixtures shared by all tests: Redis servers, running backbones, hypothesis profiles.

Fixture overview (details in each docstring and in tests/support/):

* ``redis_server`` (session) - one Redis for the whole run.
* ``redis_factory`` (function) - private ``redis-server`` processes a test can stop/restart.
* ``secure_redis_factory`` (function) - private ``redis-server`` processes with TLS (a
  throwaway CA) and/or ACL users.
* ``system`` (module) - one GameServer + one Gateway on the session Redis, shared by the
  tests of a module (they must use distinct user ids). A module may set ``SYSTEM_ENV =
  {...}`` to give its shared system extra environment (e.g. ``{"IDLE_TIMEOUT_S": "1"}``).
* ``system_factory`` (function) - clusters of a test's own, on a private Redis by default.
* ``process_group`` (function) - for tests that start raw service processes themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.cluster import Cluster
from tests.support.processes import ProcessGroup, live_services, stop_all_processes
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.redis_sentinel import LocalRedisSentinel
from tests.support.redis_servers import (
    LocalRedisServer,
    RedisServer,
    RedisUnavailable,
    SecureRedisServer,
    TlsFiles,
    redis_binary,
    start_private_redis,
    start_shared_redis,
)

# --- hypothesis ----------------------------------------------------------------------------
# No deadline: a CI machine running services in parallel makes single examples slow now and
# then, and a timing failure there says nothing about the protocol. CI derandomizes so a red
# build can be reproduced; locally, examples vary from run to run to find more.
settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=200, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


# --- live fuzz -------------------------------------------------------------------------------

DEFAULT_FUZZ_SECONDS = 20.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gamebackbone live fuzz (tests/test_fuzz_live.py)")
    group.addoption("--fuzz-seconds", type=float, default=None,
                    help="how long the live fuzz runs (env GB_FUZZ_SECONDS; default "
                    f"{DEFAULT_FUZZ_SECONDS:g})")
    group.addoption("--fuzz-seed", type=int, default=None,
                    help="seed of the live fuzz, to replay a failure (env GB_FUZZ_SEED; "
                    "default random, printed)")


def fuzz_seconds(config: pytest.Config) -> float:
    """--fuzz-seconds, else GB_FUZZ_SECONDS, else the CI default."""
    value = config.getoption("--fuzz-seconds")
    if value is None:
        value = float(os.environ.get("GB_FUZZ_SECONDS") or DEFAULT_FUZZ_SECONDS)
    return float(value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A longer live fuzz gets a pytest timeout that grows with it (start-up and checks
    take well under a minute on top of the fuzzing itself)."""
    seconds = fuzz_seconds(config)
    for item in items:
        if item.get_closest_marker("live_fuzz") is not None:
            item.add_marker(pytest.mark.timeout(max(120.0, seconds + 90.0)))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "live_fuzz: runs for --fuzz-seconds; its pytest timeout grows with it")


@pytest.fixture
def fuzz_duration(request: pytest.FixtureRequest) -> float:
    """Seconds the live fuzz runs (see :func:`fuzz_seconds`)."""
    return fuzz_seconds(request.config)


@pytest.fixture
def fuzz_seed(request: pytest.FixtureRequest) -> int:
    """--fuzz-seed, else GB_FUZZ_SEED, else a fresh random seed (the test prints it) — but a
    fixed one under CI, as hypothesis is derandomized there: a red build must be the code's
    doing, and the same seed replays it. Developers' runs keep exploring new seeds."""
    value = request.config.getoption("--fuzz-seed")
    if value is None:
        env = os.environ.get("GB_FUZZ_SEED")
        if env:
            value = int(env)
        elif os.environ.get("CI"):
            value = CI_FUZZ_SEED
        else:
            value = int.from_bytes(os.urandom(4), "big")
    return int(value)


#: The live fuzz's seed under CI (it found the replaced-session race once, now fixed).
CI_FUZZ_SEED = 277313519


# --- failure reports -------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log tail of every running service to a failed test's report.

    Most integration failures are explained by a line the Gateway or GameServer logged, and
    the log files under tmp_path are gone from CI once the run ends.
    """
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for process in live_services():
            report.sections.append(
                (f"{process.name} log ({process.log_path})", process.log_tail(60))
            )
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Kill anything a crashed fixture left running, before pytest reports and exits."""
    stop_all_processes()


# --- Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis for the run: testcontainers if a Docker engine answers, else ``redis-server``.

    Yields a :class:`~tests.support.redis_servers.RedisServer`: ``.host``, ``.port``,
    ``.url`` (``redis://host:port/0``), ``.connection`` (``host:port``), ``.client()``,
    ``.ping()``, ``.flush()``. Skips (does not fail) when neither way works, naming both.
    """
    try:
        server = start_shared_redis(tmp_path_factory.mktemp("redis-shared"))
    except RedisUnavailable as exc:
        pytest.skip(
            "no Redis for tests: needs a Docker engine (testcontainers) or a redis-server "
            f"binary on PATH ({exc})"
        )
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """One real Redis Cluster for the run (3 masters, ``redis-server`` + ``redis-cli
    --cluster create``), for the suites that run with ``REDIS_MODE=cluster``; each suite
    keeps to its own ``REDIS_KEY_PREFIX``. Skips when ``redis-server`` or ``redis-cli`` is
    missing, like :func:`redis_server`."""
    yield from _started_or_skipped(
        lambda: LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")).start(),
        "Redis Cluster")


@pytest.fixture(scope="module")
def replicated_redis_cluster(tmp_path_factory: pytest.TempPathFactory
                             ) -> Iterator[LocalRedisCluster]:
    """A Redis Cluster of 3 masters with a replica each, for one module: its failover test
    kills a master (its replica takes over), so no other module shares it."""
    yield from _started_or_skipped(
        lambda: LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster-replicated"),
                                  replicas=1).start(),
        "replicated Redis Cluster")


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisSentinel]:
    """A real master + replica + 3 sentinels for one module (its failover test promotes
    the replica, so no other module shares it). Skips without ``redis-server``."""
    yield from _started_or_skipped(
        lambda: LocalRedisSentinel(tmp_path_factory.mktemp("redis-sentinel")).start(),
        "Redis Sentinel")


def _started_or_skipped[T: (LocalRedisCluster, LocalRedisSentinel)](
        start: Callable[[], T], what: str) -> Iterator[T]:
    """A fixture's body for a set of Redis processes: skip the tests that want it (naming
    why) when it cannot start here, close it after them."""
    try:
        servers = start()
    except RedisUnavailable as exc:
        pytest.skip(f"no {what} for tests: {exc}")
    try:
        yield servers
    finally:
        servers.close()


RedisFactory = Callable[..., LocalRedisServer]


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """Start private local ``redis-server`` processes: ``redis_factory(persistent=True,
    port=None, start=True) -> LocalRedisServer``.

    Each has its own data dir under ``tmp_path``. ``persistent=True`` (the default) keeps
    every acknowledged write on disk (AOF, fsync always), so ``server.stop()`` /
    ``server.kill()`` then ``server.start()`` comes back on the same port with the same data.
    Skips when there is no ``redis-server`` binary (Docker cannot restart on the same port).
    """
    if redis_binary() is None:
        pytest.skip("redis_factory needs a redis-server binary on PATH (apt-get install "
                    "redis-server); Docker containers cannot be restarted on the same port")
    servers: list[LocalRedisServer] = []
    counter = 0

    def make(
        *, persistent: bool = True, port: int | None = None, start: bool = True
    ) -> LocalRedisServer:
        nonlocal counter
        counter += 1
        server = LocalRedisServer(tmp_path / f"redis-{counter}", port=port, persistent=persistent)
        servers.append(server)
        if start:
            server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


SecureRedisFactory = Callable[..., SecureRedisServer]


@pytest.fixture
def secure_redis_factory(tmp_path: Path) -> Iterator[SecureRedisFactory]:
    """Start private ``redis-server`` processes set up like a managed Redis:
    ``secure_redis_factory(tls=True, require_client_cert=False, acl=False) ->
    SecureRedisServer``.

    ``tls=True``: TLS only (no plaintext port), with a certificate for 127.0.0.1/localhost
    from a throwaway CA shared by the test's servers (``server.tls``: the PEM files, client
    certificate included). ``acl=True``: the ``default`` user is off; the harness connects
    as an admin user, and the test creates the users the services get
    (``server.as_user(name, password)``). Skips without a ``redis-server`` binary, and when
    it was built without TLS.
    """
    if redis_binary() is None:
        pytest.skip("secure_redis_factory needs a redis-server binary on PATH (apt-get "
                    "install redis-server)")
    servers: list[SecureRedisServer] = []
    files: list[TlsFiles] = []

    def make(*, tls: bool = True, require_client_cert: bool = False,
             acl: bool = False) -> SecureRedisServer:
        if tls and not files:
            files.append(TlsFiles.create(tmp_path / "redis-tls"))
        server = SecureRedisServer(tmp_path / f"redis-secure-{len(servers) + 1}",
                                   tls=files[0] if tls else None,
                                   require_client_cert=require_client_cert, acl=acl)
        servers.append(server)
        try:
            server.start()
        except RedisUnavailable as exc:
            if tls and "tls" in str(exc).lower():
                pytest.skip(f"this redis-server cannot do TLS: {exc}")
            raise
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


# --- running backbones -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def system(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """One GameServer then one Gateway, ready, shared by every test of the module.

    Redis is flushed first, so nothing registered or stored by an earlier module is seen.
    Tests sharing it must use user ids no other test of the module uses. Extra environment
    for the whole module: a module-level ``SYSTEM_ENV = {"NAME": "value"}``.
    """
    module_name = request.module.__name__.rsplit(".", 1)[-1]
    env: Mapping[str, str | None] = getattr(request.module, "SYSTEM_ENV", {})
    redis_server.flush()
    cluster = Cluster(redis_server, tmp_path_factory.mktemp(f"system-{module_name}"), env=env)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


SystemFactory = Callable[..., Cluster]


@pytest.fixture
def system_factory(tmp_path: Path) -> Iterator[SystemFactory]:
    """Clusters of a test's own: ``system_factory(env=None, gameservers=1, gateways=1,
    redis=None, start=True) -> Cluster``.

    ``redis=None`` gives the cluster a private, empty Redis (a local ``redis-server`` started
    for it, else a container), so it never sees the module's shared ``system``. Pass a
    server from ``redis_factory`` to restart Redis under a running cluster, or ``start=False``
    to add nodes one by one with ``add_gameserver()`` / ``add_gateway()``. Everything is
    stopped at teardown, whatever the test did.
    """
    clusters: list[Cluster] = []
    private: list[RedisServer] = []

    def make(
        *,
        env: Mapping[str, str | None] | None = None,
        gameservers: int = 1,
        gateways: int = 1,
        redis: RedisServer | None = None,
        start: bool = True,
    ) -> Cluster:
        index = len(clusters) + 1
        if redis is None:
            try:
                redis = start_private_redis(tmp_path / f"redis-system-{index}")
            except RedisUnavailable as exc:
                pytest.skip(f"no private Redis for this test's cluster: {exc}")
            private.append(redis)
        cluster = Cluster(redis, tmp_path / f"system-{index}", env=dict(env or {}))
        clusters.append(cluster)
        if start:
            cluster.start(gameservers=gameservers, gateways=gateways)
        return cluster

    try:
        yield make
    finally:
        for cluster in reversed(clusters):
            cluster.stop()
        for server in private:
            server.close()


@pytest.fixture
def process_group(tmp_path: Path) -> Iterator[ProcessGroup]:
    """A :class:`ProcessGroup` logging under ``tmp_path``, stopped at teardown."""
    group = ProcessGroup(tmp_path / "services")
    try:
        yield group
    finally:
        group.stop_all()
