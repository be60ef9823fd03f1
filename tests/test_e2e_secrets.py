"""No secret leaks: a stack with every secret set, at DEBUG, driven through logins, refusals,
admin calls and a wrong password; then everything it wrote is searched for each secret.

The secrets: the Redis ACL password (in ``REDIS_CONNECTION``), ``AUTH_SECRET``,
``ADMIN_TOKEN`` and the CURVE secret key; also the credentials a client holds (a login
token, a reconnect key), which a DEBUG log of payloads would expose. "Everything it wrote":
each service's stdout/stderr, ``/metrics``, ``/healthz`` and ``/readyz`` of every service,
``--help`` of both services and of the admin CLI, the admin CLI's output and the messages
of rejected configurations.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from protocol import MsgType
from protocol.auth import mint_token
from tests.support.cluster import Cluster
from tests.support.processes import REPO_ROOT, service_environment
from tests.support.raw import RawClient
from tests.support.users import new_user_id
from tests.support.waiting import wait_until
from tests.test_e2e_redis_tls_acl import (
    ACL_USER,
    documented_acl,
    service_output,
    tls_env,
)


def run(args: list[str], env: dict[str, str | None]) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            timeout=60, env=service_environment(env), cwd=REPO_ROOT,
                            check=False)
    # Only what the program wrote (and its exit code): the command line holds the secrets.
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


def http_everything(cluster: Cluster) -> list[str]:
    texts = []
    for process in cluster.processes():
        if process.running:
            for path in ("/metrics", "/healthz", "/readyz"):
                status, body = process.http(path)
                texts.append(f"{process.name} {path} {status}\n{body}")
    return texts


def admin_http_kick(cluster: Cluster, user_id: int, token: str) -> str:
    import http.client

    node = cluster.gameservers[0].process
    assert node.metrics_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", node.metrics_port, timeout=5)
    try:
        conn.request("POST", f"/admin/kick?user_id={user_id}",
                     headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return f"{response.status} {response.read().decode()}"
    finally:
        conn.close()


async def test_no_secret_appears_in_anything_the_stack_writes(  # type: ignore[no-untyped-def]
        secure_redis_factory, system_factory, tmp_path: Path) -> None:
    redis_password = "RedisPw" + secrets.token_hex(12)
    wrong_password = "WrongPw" + secrets.token_hex(12)
    auth_secret = "AuthSecret" + secrets.token_hex(12)
    admin_token = "AdminToken" + secrets.token_hex(12)
    curve_secret = (await asyncio.to_thread(
        run, ["-m", "gameserver", "keygen"], {})).splitlines()[1]
    key_file = tmp_path / "cluster.key"
    key_file.write_text(curve_secret + "\n")

    server = secure_redis_factory(tls=True, acl=True)
    with server.client() as admin:
        admin.execute_command(*documented_acl(redis_password))
    redis_user = server.as_user(ACL_USER, redis_password)
    env: dict[str, str | None] = {
        **tls_env(server.tls), "LOG_LEVEL": "DEBUG", "AUTH_MODE": "hmac",
        "AUTH_SECRET": auth_secret, "ADMIN_TOKEN": admin_token,
        "CLUSTER_CURVE_SECRET_FILE": str(key_file), "CLIENT_RATE_LIMIT": "0",
    }
    cluster: Cluster = system_factory(env=env, redis=redis_user, gameservers=2)
    written: list[str] = []
    client_credentials: list[str] = []

    # Logins: a good token, a forged one, a token for another user; a resume; a session.
    user = new_user_id()
    token = mint_token(auth_secret.encode(), user, ttl_s=300)
    client_credentials.append(token)
    client = await RawClient.connect(cluster.gateway_address)
    login = await client.login(user, token=token)
    client_credentials.append(login.payload["reconnect_key"])
    moved = await client.request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 2})
    assert moved.payload["moves"] == 1
    for bad in (mint_token(b"not-the-secret", user), mint_token(auth_secret.encode(), user + 1)):
        other = await RawClient.connect(cluster.gateway_address)
        refused = await other.request(MsgType.LOGIN_REQ, 1, {"user_id": user, "token": bad})
        assert refused.payload["ok"] is False and refused.payload["error"] == "AUTH_FAILED"
        await other.close()
    await client.close()
    resumer = await RawClient.connect(cluster.gateway_address)
    resumed = await resumer.request(MsgType.RECONNECT_REQ, 1, {
        "session_id": login.payload["session_id"],
        "reconnect_key": login.payload["reconnect_key"]})
    assert resumed.payload["ok"] is True, resumed
    client_credentials.append(resumed.payload["reconnect_key"])

    # Admin over HTTP: a wrong token, then the right one; the CLI without and with the key.
    assert admin_http_kick(cluster, user, "wrong-" + admin_token[::-1]).startswith("401")
    assert admin_http_kick(cluster, user, admin_token).startswith("200")
    cli_env = {**env, "REDIS_CONNECTION": redis_user.url}
    victim = new_user_id()
    victim_client = await RawClient.connect(cluster.gateway_address)
    await victim_client.login(victim, token=mint_token(auth_secret.encode(), victim))
    written.append(run(["-m", "gameserver", "admin", "kick", "--user-id", str(victim)],
                       {**cli_env, "CLUSTER_CURVE_SECRET_FILE": None}))
    kicked = run(["-m", "gameserver", "admin", "kick", "--user-id", str(victim)], cli_env)
    assert kicked.startswith("exit 0") and f"kicked user {victim}" in kicked, kicked
    written.append(kicked)
    await victim_client.close()
    await resumer.close()

    # A GameServer with a wrong password: it must say so without quoting either password.
    wrong = cluster.add_gameserver(
        env={"REDIS_CONNECTION": None}, wait_ready=False,
        flags=["--redis-connection", server.url_for(ACL_USER, wrong_password)])
    wait_until(lambda: "refused our credentials" in wrong.process.log_text(), timeout=20,
               message="the wrong password is reported")

    # Rejected configurations and --help, with every secret in the environment.
    bad_url = f"redis://{ACL_USER}:{redis_password}@127.0.0.1:notaport/0"
    for service in ("gateway", "gameserver"):
        written.append(run(["-m", service, "--help"], cli_env))
        written.append(run(["-m", service, "--redis-connection", bad_url], cli_env))
        written.append(run(["-m", service, "--redis-connection", redis_user.url,
                            "--redis-tls-cert-file", str(key_file)], cli_env))
    written.append(run(["-m", "gameserver", "admin", "kick", "--help"], cli_env))
    written.append(run(["-m", "gameserver", "admin", "kick", "--user-id", "1",
                        "--redis-connection", bad_url], cli_env))

    written += http_everything(cluster)
    logs = [service_output(process) for process in cluster.processes()]
    written += logs
    everything = "\n".join(written)
    # The stack really ran at DEBUG and really saw the refusals it is searched after.
    assert "[DEBUG]" in everything
    assert "Login failed" in everything or "AUTH_FAILED" in everything
    assert "refused our credentials" in everything
    leaks: dict[str, Any] = {}
    for name, value in (("Redis password", redis_password), ("wrong password", wrong_password),
                        ("AUTH_SECRET", auth_secret), ("ADMIN_TOKEN", admin_token),
                        ("CURVE secret key", curve_secret)):
        found = [line for line in everything.splitlines() if value in line]
        if found:
            leaks[name] = found[:3]
    for credential in client_credentials:
        found = [line for line in everything.splitlines() if credential in line]
        if found:
            leaks[f"client credential {credential[:8]}..."] = found[:3]
    assert not leaks, leaks
