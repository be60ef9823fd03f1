"""CURVE on the internal ZeroMQ ports: real processes, real sockets, real keys.

A cluster of 2 GameServers and 1 Gateway shares one key file made by
``python -m gameserver keygen``. Around it: the admin CLI without the key, with a wrong
key and with the right one; raw pyzmq peers (plaintext, and CURVE with a key of their own)
hammering the P2P and mesh ports while real clients play; a Gateway without the key; a
key rotation's overlap (two keys accepted); a key file that is not one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
import zmq

from protocol import KickReason, MsgType
from servicekit.curve import parse_keys
from servicekit.keys import Keys
from tests.support.bystander import Bystander
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.users import new_user_id
from tests.support.waiting import wait_until, wait_until_async

CURVE_ENV = {"MESH_DEADLINE_S": "0.5", "CLIENT_RATE_LIMIT": "0"}


def keygen() -> str:
    result = subprocess.run([sys.executable, "-m", "gameserver", "keygen"],
                            capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def write_key_file(directory: Path, name: str, *keys: str) -> Path:
    path = directory / name
    path.write_text("".join(key if key.endswith("\n") else key + "\n" for key in keys))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("curve-keys")


@pytest.fixture(scope="module")
def cluster_key(key_dir: Path) -> Path:
    return write_key_file(key_dir, "cluster.key", keygen())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, cluster_key: Path) -> Iterator[Cluster]:
    from tests.support.redis_servers import start_private_redis

    redis_server = start_private_redis(tmp_path_factory.mktemp("curve-redis"))
    env = {**CURVE_ENV, "CLUSTER_CURVE_SECRET_FILE": str(cluster_key)}
    shared = Cluster(redis_server, tmp_path_factory.mktemp("curve"), env=env)
    try:
        shared.start(gameservers=2, gateways=1)
        yield shared
    finally:
        shared.stop()
        redis_server.close()


def published_key(cluster: Cluster, node_id: int) -> str:
    client = redis_sync.Redis.from_url(cluster.redis.url, decode_responses=True)
    try:
        return str(client.hget(Keys().node(node_id), "curve_key"))
    finally:
        client.close()


def admin_kick(cluster: Cluster, user_id: int, key_file: str | None) -> tuple[int, str]:
    env = {name: value for name, value in os.environ.items()
           if name != "CLUSTER_CURVE_SECRET_FILE"}
    if key_file is not None:
        env["CLUSTER_CURVE_SECRET_FILE"] = key_file
    result = subprocess.run(
        [sys.executable, "-m", "gameserver", "admin", "kick", "--user-id", str(user_id),
         "--redis-connection", cluster.redis.url, "--timeout", "2"],
        capture_output=True, text=True, timeout=30, env=env, check=False)
    return result.returncode, result.stdout + result.stderr


async def still_served(client: RawClient, seq: int) -> None:
    """An ECHO answered (``seq`` counts from 1 after the LOGIN's sequence id)."""
    seq += 1
    res = await client.request(MsgType.ECHO_REQ, seq, {"n": seq}, timeout=5)
    assert (res.msg_type, res.payload) == (MsgType.ECHO_RES, {"n": seq})


# ------------------------------------------------------------------------------ the key


def test_keygen_prints_one_new_key_and_nothing_else() -> None:
    first, second = keygen(), keygen()
    assert first.endswith("\n") and first.count("\n") == 1 and len(first.strip()) == 40
    assert first != second
    keys = parse_keys(first, "test")
    assert keys.public == zmq.curve_public(first.strip().encode())


def test_a_file_that_holds_no_key_stops_the_start_without_quoting_it(
        key_dir: Path) -> None:
    secret_looking = "this-is-not-a-key-but-could-be-a-password"
    bad = write_key_file(key_dir, "bad.key", secret_looking)
    for service in ("gateway", "gameserver"):
        result = subprocess.run(
            [sys.executable, "-m", service, "--curve-secret-file", str(bad),
             "--redis-connection", "127.0.0.1:1"],
            capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 2, result.stderr
        assert f"CLUSTER_CURVE_SECRET_FILE {bad} line 1: not a Z85 CURVE secret key" \
            in result.stderr
        assert secret_looking not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr


# ------------------------------------------------------------------- a CURVE cluster


async def test_sessions_and_the_mesh_work_over_curve(cluster: Cluster,
                                                     cluster_key: Path) -> None:
    keys = parse_keys(await asyncio.to_thread(cluster_key.read_text), "test")
    for node in cluster.gameservers:
        assert published_key(cluster, node.node_id) == keys.public.decode()
        assert "Internal ZeroMQ traffic: CURVE with the cluster key in" \
            in node.process.log_text()
    # Two users on two GameServers: login and ECHO go over P2P, WHISPER over the mesh.
    address = cluster.gateway.address
    alice = await RawClient.connect(address)
    alice_login = (await alice.login(new_user_id())).payload
    for _ in range(20):
        bob = await RawClient.connect(address)
        bob_login = (await bob.login(new_user_id())).payload
        if bob_login["node_id"] != alice_login["node_id"]:
            break
        await bob.close()
    else:
        pytest.fail("never got two users on two GameServers")
    await still_served(alice, 1)
    res = await alice.request(MsgType.WHISPER_REQ, 3,
                              {"to_user_id": bob_login["user_id"], "text": "sealed"})
    assert res.payload == {"delivered": True}
    note = await bob.expect(MsgType.WHISPER_NTF, 0)
    assert note.payload["text"] == "sealed"
    await alice.close()
    await bob.close()


async def test_the_admin_cli_needs_the_cluster_key(cluster: Cluster, cluster_key: Path,
                                                   key_dir: Path) -> None:
    user = new_user_id()
    client = await RawClient.connect(cluster.gateway.address)
    await client.login(user)

    code, output = await asyncio.to_thread(admin_kick, cluster, user, None)
    assert code == 2, output
    assert "requires CURVE and CLUSTER_CURVE_SECRET_FILE is not set here" in output
    assert "nobody was kicked" in output
    await still_served(client, 1)

    wrong = write_key_file(key_dir, "wrong.key", keygen())
    code, output = await asyncio.to_thread(admin_kick, cluster, user, str(wrong))
    assert code == 2, output
    assert "not one this process accepts" in output
    await still_served(client, 2)

    code, output = await asyncio.to_thread(admin_kick, cluster, user, str(cluster_key))
    assert code == 0, output
    frames = await client.wait_closed()
    assert [f.payload for f in frames] == [{"reason": KickReason.ADMIN_KICK}]


def refusals(cluster: Cluster, node: int, port: str, reason: str) -> float:
    return cluster.gameservers[node].process.metric(
        f'gameserver_internal_refusals_total{{port="{port}",reason="{reason}"}}')


class Intruder:
    """Raw pyzmq peers that try what a stranger on the network could: kick a player over
    the mesh, forge data-plane records over P2P, with no CURVE or with a key of their own."""

    def __init__(self, cluster: Cluster, victim: int) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.victim = victim
        node = cluster.gameservers[0]
        self.mesh = f"tcp://127.0.0.1:{node.mesh_port}"
        self.p2p = f"tcp://127.0.0.1:{node.p2p_port}"
        self.server_key = published_key(cluster, node.node_id).encode()

    def attempt(self, with_key: bool) -> None:
        kick = [b"\x00" * 7 + b"\x01", b"kick_user",
                b'{"user_id": %d, "reason": "ADMIN_KICK"}' % self.victim]
        forged = [b"a forged data-plane batch"]
        for endpoint, frames in ((self.mesh, kick), (self.p2p, forged)):
            sock = self.context.socket(zmq.DEALER)
            sock.linger = 0
            try:
                if with_key:
                    public, secret = zmq.curve_keypair()
                    sock.curve_publickey, sock.curve_secretkey = public, secret
                    sock.curve_serverkey = self.server_key
                sock.connect(endpoint)
                sock.send_multipart(frames, zmq.NOBLOCK)
                answered = sock.poll(50)
            finally:
                sock.close(0)
            assert not answered, f"an intruder got an answer from {endpoint}"

    def close(self) -> None:
        self.context.term()


async def test_raw_zeromq_peers_without_the_key_are_refused_while_clients_play(
        cluster: Cluster) -> None:
    log_start = cluster.gameservers[0].process.log_offset()
    before = {(port, reason): refusals(cluster, 0, port, reason)
              for port in ("p2p", "mesh") for reason in ("not_curve", "unknown_key")}
    players = [await Bystander.start(cluster.gateway.address, interval=0.02,
                                     max_round_trip=2.0) for _ in range(4)]
    victim = await RawClient.connect(cluster.gateway.address)
    victim_id = new_user_id()
    await victim.login(victim_id)
    intruder = Intruder(cluster, victim_id)
    try:
        deadline = time.monotonic() + 3.0
        attempts = 0
        while time.monotonic() < deadline:
            await asyncio.to_thread(intruder.attempt, attempts % 2 == 1)
            attempts += 1
        assert attempts >= 10

        def counted() -> bool:
            return all(refusals(cluster, 0, port, reason) >= before[(port, reason)]
                       + attempts // 4 for port, reason in before)

        await wait_until_async(counted, timeout=10,
                               message="every kind of refusal counted on both ports")
    finally:
        intruder.close()
        for player in players:
            await player.stop()
    for player in players:
        assert player.problems == [], player.problems
        assert len(player.round_trips) > 20
    await still_served(victim, 1)  # never kicked
    log = cluster.gameservers[0].process.log_text(log_start)
    for port in ("p2p", "mesh"):
        assert log.count(f"Refused a ZeroMQ peer at 127.0.0.1 on the {port} port: it does "
                         "not hold the cluster CURVE key") == 1, log
        assert log.count(f"Refused a ZeroMQ peer on the {port} port: it does not use "
                         "CURVE") <= 1, log
    await victim.close()


async def test_a_gateway_without_the_key_does_not_dial_and_is_not_ready(
        cluster: Cluster) -> None:
    gateway = cluster.add_gateway(env={"CLUSTER_CURVE_SECRET_FILE": None}, wait_ready=False)
    try:
        def said_why() -> bool:
            return "requires CURVE and CLUSTER_CURVE_SECRET_FILE is not set here" \
                in gateway.process.log_text()

        wait_until(said_why, timeout=15, message="the Gateway says why it does not dial")
        assert "Internal ZeroMQ traffic is NOT authenticated or encrypted" \
            in gateway.process.log_text()
        assert gateway.process.readyz_status() == 503
        assert gateway.process.running
    finally:
        gateway.process.terminate()
        cluster.gateways.remove(gateway)


# ----------------------------------------------------------------------- rotation


async def test_rotation_overlap_accepts_both_keys(system_factory: Any, key_dir: Path
                                                  ) -> None:
    """Mid-rotation: the GameServers still use the old key and accept the new one; the
    Gateway already uses the new key and accepts the old one. Both directions work."""
    old, new = keygen(), keygen()
    servers_file = write_key_file(key_dir, "servers.key", old, new)
    gateway_file = write_key_file(key_dir, "gateway.key", new, old)
    cluster: Cluster = system_factory(env=CURVE_ENV, start=False)
    cluster.add_gameserver(env={"CLUSTER_CURVE_SECRET_FILE": str(servers_file)})
    cluster.add_gameserver(env={"CLUSTER_CURVE_SECRET_FILE": str(gateway_file)})
    cluster.add_gateway(env={"CLUSTER_CURVE_SECRET_FILE": str(gateway_file)})
    sessions: dict[int, RawClient] = {}
    for _ in range(30):
        client = await RawClient.connect(cluster.gateway.address)
        node = (await client.login(new_user_id())).payload["node_id"]
        if node in sessions:
            await client.close()
        else:
            sessions[node] = client
        if len(sessions) == 2:
            break
    assert len(sessions) == 2, "both GameServers take sessions"
    for seq, client in enumerate(sessions.values(), start=1):
        await still_served(client, seq)
        await client.close()
    for node in cluster.gameservers:
        assert "Not dialling" not in node.process.log_text()


async def test_a_gameserver_restarted_with_the_next_key_is_served_again(
        system_factory: Any, key_dir: Path) -> None:
    """Rotation step 2 on one node: it comes back presenting the new key at the same
    address; the Gateway dials it with the newly published key."""
    old, new = keygen(), keygen()
    step1 = write_key_file(key_dir, "step1.key", old, new)
    step2 = write_key_file(key_dir, "step2.key", new, old)
    cluster: Cluster = system_factory(
        env={**CURVE_ENV, "CLUSTER_CURVE_SECRET_FILE": str(step1)})
    node = cluster.gameserver
    before = published_key(cluster, node.node_id)
    node.process.env["CLUSTER_CURVE_SECRET_FILE"] = str(step2)
    await asyncio.to_thread(node.restart)
    assert published_key(cluster, node.node_id) not in ("", before)
    await asyncio.to_thread(cluster.gateway.wait_ready, 15)
    client = await RawClient.connect(cluster.gateway.address)
    await client.login(new_user_id())
    await still_served(client, 1)
    await client.close()


async def test_a_changed_published_key_makes_the_gateway_dial_again(
        caplog: pytest.LogCaptureFixture) -> None:
    """The entry outlived a restart (kill -9, restarted within NODE_TTL_S): same address,
    new key. Checked on the Gateway's links themselves, with a real ZeroMQ socket."""
    from gateway.links import GameServerLinks

    first, second = keygen().strip(), keygen().strip()
    keys = parse_keys(f"{first}\n{second}", "test")
    publics = [zmq.curve_public(k.encode()).decode() for k in (first, second)]
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    links = GameServerLinks(context, b"gw-test", lambda *_: None, lambda *_: None, 3.0,
                            lambda _: None, keys)
    try:
        with caplog.at_level(logging.INFO, "gateway.links"):
            links.update({1: ("127.0.0.1", 9, {"curve_key": publics[0]})})
            assert links.upstreams[b"gs-1"].server_key == publics[0].encode()
            links.update({1: ("127.0.0.1", 9, {"curve_key": publics[1]})})
            assert b"gs-1" not in links.upstreams  # hung up; redialled after the pause
            assert "GameServer node 1 at tcp://127.0.0.1:9 changed its CURVE key" \
                in caplog.text
            await wait_until_async(
                lambda: (links.update({1: ("127.0.0.1", 9, {"curve_key": publics[1]})})
                         or b"gs-1" in links.upstreams), timeout=5)
            assert links.upstreams[b"gs-1"].server_key == publics[1].encode()
    finally:
        links.close()
        context.term()
