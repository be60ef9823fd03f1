"""Redis over TLS and as an ACL user, with real processes and a real ``redis-server``
(docs/OPERATIONS.md §1.8): a TLS-only Redis with a throwaway CA, mutual TLS, a user holding
exactly the documented minimal ACL, and what an operator sees when the CA, the client
certificate or the password is wrong: one line naming the cause, ``/readyz`` 503, no
traceback, a process that keeps running (and, for the password, recovers without restart)."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import redis

from protocol import KickReason, MsgType
from tests.support.cluster import Cluster
from tests.support.processes import REPO_ROOT, ServiceProcess, service_environment
from tests.support.raw import RawClient
from tests.support.redis_servers import SecureRedisServer, TlsFiles
from tests.support.users import new_user_id
from tests.support.waiting import wait_until

ACL_USER = "gamebackbone"
#: Failed registry writes/reads a process must have retried before its log is judged:
#: enough attempts (several seconds of backoff at the test cluster's 0.25 s heartbeat and
#: 0.2 s discovery) that a line logged per attempt could not hide.
RETRIES = 15


def documented_acl(password: str) -> list[str]:
    """The minimal ``ACL SETUSER`` line of docs/OPERATIONS.md §1.8, as its words, with
    ``password``: the test runs the documentation, so the two cannot drift apart."""
    text = (REPO_ROOT / "docs" / "OPERATIONS.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith(f"ACL SETUSER {ACL_USER} ")]
    assert len(lines) == 1, f"expected one minimal ACL line in docs/OPERATIONS.md: {lines}"
    words = lines[0].split()
    assert ">PASSWORD" in words, lines[0]
    return [f">{password}" if word == ">PASSWORD" else word for word in words]


def create_acl_user(server: SecureRedisServer) -> str:
    """The documented user, created by the harness's admin; returns its password."""
    password = secrets.token_hex(16)
    with server.client() as admin:
        assert admin.execute_command(*documented_acl(password)) in (b"OK", "OK", True)
    return password


def tls_env(files: TlsFiles, *, client_cert: bool = False) -> dict[str, str | None]:
    env: dict[str, str | None] = {"REDIS_TLS_CA_FILE": str(files.ca_file)}
    if client_cert:
        env.update(REDIS_TLS_CERT_FILE=str(files.client_cert),
                   REDIS_TLS_KEY_FILE=str(files.client_key))
    return env


async def full_session(cluster: Cluster) -> None:
    """LOGIN, MOVE, LOGOUT, LOGIN again: the state written through Redis comes back."""
    user = new_user_id()
    first = await RawClient.connect(cluster.gateway_address)
    await first.login(user)
    moved = await first.request(MsgType.MOVE_REQ, 2, {"x": 3, "y": 4})
    assert moved.payload == {"x": 3.0, "y": 4.0, "moves": 1}, moved
    bye = await first.request(MsgType.LOGOUT_REQ, 3)
    assert (bye.msg_type, bye.payload) == (MsgType.LOGOUT_RES, {"ok": True})
    await first.wait_closed()
    again = await RawClient.connect(cluster.gateway_address)
    login = await again.login(user)
    assert login.payload["state"] == {"x": 3.0, "y": 4.0, "moves": 1}, login
    await again.close()


def service_output(process: ServiceProcess) -> str:
    """What the service itself wrote: its log without the harness's own "===== … start"
    marker lines (those quote the command line, flags and all)."""
    return "\n".join(line for line in process.log_text().splitlines()
                     if not line.startswith("===== "))


def lines_with(process: ServiceProcess, text: str) -> list[str]:
    return [line for line in service_output(process).splitlines() if text in line]


def wait_for_retries(process: ServiceProcess, metric: str) -> None:
    wait_until(lambda: process.metric(metric) >= RETRIES, timeout=20, ignore=(OSError,),
               message=lambda: f"{process.name}: {metric} below {RETRIES}\n"
                               f"{process.log_tail(20)}")


def assert_one_clear_line(process: ServiceProcess, cause: str, metric: str) -> str:
    """After several retries: exactly one line naming ``cause``, /readyz 503, no traceback,
    still running. Returns /readyz's body."""
    wait_for_retries(process, metric)
    found = lines_with(process, cause)
    assert len(found) == 1, f"{process.name}: {found}\n{process.log_tail(30)}"
    assert "[ERROR]" in found[0], found[0]
    status, body = process.http("/readyz")
    assert status == 503, (status, body)
    output = service_output(process)
    assert "Traceback" not in output, output[-3000:]
    assert process.running
    return body


HEARTBEAT_ERRORS = 'gameserver_redis_errors_total{operation="heartbeat"}'
DISCOVERY_ERRORS = 'gateway_redis_errors_total{operation="discovery"}'


async def admin_kick(user: int, env: Mapping[str, str | None], *flags: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gameserver", "admin", "kick", "--user-id", str(user), *flags,
        env=service_environment(env), cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def kicked_by_admin(cluster: Cluster, env: Mapping[str, str | None],
                          *flags: str) -> None:
    """A logged-in user kicked with the admin CLI: exit 0 and KICKOUT_NTF ADMIN_KICK."""
    user = new_user_id()
    client = await RawClient.connect(cluster.gateway_address)
    await client.login(user)
    code, output = await admin_kick(user, env, *flags)
    assert code == 0 and f"kicked user {user}" in output, output
    frames = await client.wait_closed()
    assert [f.payload for f in frames] == [{"reason": KickReason.ADMIN_KICK}]


# ------------------------------------------------------------------------------ TLS


async def test_a_whole_session_through_a_tls_only_redis(  # type: ignore[no-untyped-def]
    secure_redis_factory, system_factory
) -> None:
    server: SecureRedisServer = secure_redis_factory(tls=True)
    assert server.tls is not None and server.url.startswith("rediss://")
    cluster: Cluster = system_factory(redis=server, env=tls_env(server.tls))
    await full_session(cluster)
    started = lines_with(cluster.gameserver.process, "GameServer starting")
    assert f"REDIS_TLS_CA_FILE={server.tls.ca_file}" in started[0]


async def test_the_admin_cli_over_tls(secure_redis_factory, system_factory) -> None:  # type: ignore[no-untyped-def]
    server: SecureRedisServer = secure_redis_factory(tls=True)
    assert server.tls is not None
    cluster: Cluster = system_factory(redis=server, env=tls_env(server.tls))
    await kicked_by_admin(cluster, {"REDIS_CONNECTION": server.url, **tls_env(server.tls)})
    # Without the CA, the system's CAs refuse the throwaway one: one clear line, exit 2.
    code, output = await admin_kick(new_user_id(), {"REDIS_CONNECTION": server.url})
    assert code == 2, output
    assert "TLS certificate verification failed" in output and "Traceback" not in output


async def test_mutual_tls_with_and_without_a_client_certificate(  # type: ignore[no-untyped-def]
    secure_redis_factory, system_factory
) -> None:
    server: SecureRedisServer = secure_redis_factory(tls=True, require_client_cert=True)
    assert server.tls is not None
    cluster: Cluster = system_factory(redis=server,
                                      env=tls_env(server.tls, client_cert=True))
    await full_session(cluster)
    await kicked_by_admin(
        cluster, {"REDIS_CONNECTION": server.url},
        "--redis-tls-ca-file", str(server.tls.ca_file),
        "--redis-tls-cert-file", str(server.tls.client_cert),
        "--redis-tls-key-file", str(server.tls.client_key))

    # The same GameServer without the client certificate: refused by Redis, said once.
    lacking = cluster.add_gameserver(env={"REDIS_TLS_CERT_FILE": None,
                                          "REDIS_TLS_KEY_FILE": None}, wait_ready=False)
    body = assert_one_clear_line(lacking.process, "TLS handshake failed", HEARTBEAT_ERRORS)
    assert "fails the TLS handshake" in body, body
    assert "REDIS_TLS_CERT_FILE" in lines_with(lacking.process, "TLS handshake failed")[0]
    assert cluster.gameserver.process.readyz_status() == 200  # the others never noticed


async def test_a_wrong_ca_is_one_clear_line_and_not_ready(  # type: ignore[no-untyped-def]
    secure_redis_factory, system_factory, tmp_path: Path
) -> None:
    server: SecureRedisServer = secure_redis_factory(tls=True)
    wrong_ca = TlsFiles.unrelated_ca(tmp_path / "other-ca.pem")
    cluster: Cluster = system_factory(redis=server, start=False,
                                      env={"REDIS_TLS_CA_FILE": str(wrong_ca)})
    gameserver = cluster.add_gameserver(wait_ready=False)
    gateway = cluster.add_gateway(wait_ready=False)
    cause = "TLS certificate verification failed (check REDIS_TLS_CA_FILE"
    body = assert_one_clear_line(gameserver.process, cause, HEARTBEAT_ERRORS)
    assert "fails TLS certificate verification" in body, body
    assert_one_clear_line(gateway.process, cause, DISCOVERY_ERRORS)


# ------------------------------------------------------------------------------ ACL users


async def test_a_user_with_the_documented_minimal_acl_runs_everything(  # type: ignore[no-untyped-def]
    secure_redis_factory, system_factory
) -> None:
    server: SecureRedisServer = secure_redis_factory(tls=False, acl=True)
    password = create_acl_user(server)
    user = server.as_user(ACL_USER, password)
    assert user.url == f"redis://{ACL_USER}:{password}@127.0.0.1:{server.port}/0"
    with user.client() as limited:  # the ACL really is narrow
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.set("not-ours", 1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.keys("*")
    cluster: Cluster = system_factory(redis=user)
    await full_session(cluster)
    await kicked_by_admin(cluster, {"REDIS_CONNECTION": user.url})
    for process in (cluster.gameserver.process, cluster.gateway.process):
        assert password not in service_output(process)
        assert f"REDIS_CONNECTION=redis://{ACL_USER}:***@" in service_output(process)


async def test_a_wrong_password_is_one_clear_line_never_the_password(  # type: ignore[no-untyped-def]
    secure_redis_factory, system_factory
) -> None:
    server: SecureRedisServer = secure_redis_factory(tls=False, acl=True)
    create_acl_user(server)
    wrong = secrets.token_hex(16)
    cluster: Cluster = system_factory(redis=server.as_user(ACL_USER, wrong), start=False,
                                      env={"LOG_LEVEL": "DEBUG"})
    gameserver = cluster.add_gameserver(wait_ready=False)
    gateway = cluster.add_gateway(wait_ready=False)
    cause = "refused our credentials (ACL user or password wrong)"
    body = assert_one_clear_line(gameserver.process, cause, HEARTBEAT_ERRORS)
    assert "refuses our credentials" in body, body
    assert_one_clear_line(gateway.process, cause, DISCOVERY_ERRORS)

    # Fixed on the Redis side (the password added to the user): both recover, no restart.
    with server.client() as admin:
        admin.execute_command("ACL", "SETUSER", ACL_USER, f">{wrong}")
    gameserver.wait_ready(20)
    gateway.wait_ready(20)
    for process in (gameserver.process, gateway.process):
        assert len(lines_with(process, "Redis is reachable again")) == 1
        exposed = [service_output(process)]
        exposed += [process.http(path)[1] for path in ("/metrics", "/healthz", "/readyz")]
        assert not [text for text in exposed if wrong in text]
    await full_session(cluster)

