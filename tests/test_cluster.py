"""Many Gateways x many GameServers on one Redis: real processes on loopback.

Each test that breaks something gets a cluster of its own (2 Gateways, 3 GameServers);
the rest share one per module.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from protocol import ErrorCode, KickReason, MsgType
from servicekit.keys import Keys
from test_client.client import GameClient
from tests.support.cluster import Cluster
from tests.support.ports import free_port
from tests.support.raw import RawClient
from tests.support.redis_servers import RedisServer
from tests.support.users import new_user_id
from tests.support.waiting import wait_until, wait_until_async

KEYS = Keys()

# Clusters here use the fast test timings of tests/support/cluster.py (heartbeat 0.25 s,
# registry expiry NODE_TTL_S = 2 s, discovery 0.2 s) and a short mesh deadline.
#: Players MOVE flat out (one in flight, hundreds a second each): no per-client rate limit.
CLUSTER_ENV = {"MESH_DEADLINE_S": "0.5", "CLIENT_RATE_LIMIT": "0"}
REGISTRY_EXPIRY_S = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from tests.support.redis_servers import start_private_redis

    redis_server = start_private_redis(tmp_path_factory.mktemp("cluster-redis"))
    shared = Cluster(redis_server, tmp_path_factory.mktemp("cluster"), env=CLUSTER_ENV)
    try:
        shared.start(gameservers=3, gateways=2)
        yield shared
    finally:
        shared.stop()
        redis_server.close()


def live_gameservers_seen(cluster: Cluster, count: int) -> bool:
    return all(f"gateway_gameservers_live {count}.0" in gw.process.metrics_text()
               for gw in cluster.gateways)


async def login(cluster: Cluster, gateway: int, user_id: int, **extra: Any) -> tuple[
        RawClient, dict[str, Any]]:
    client = await RawClient.connect(cluster.gateways[gateway].address)
    return client, (await client.login(user_id, **extra)).payload


def session_keys(redis: RedisServer, session_id: int) -> list[str]:
    """Which of the session's keys (hash, responses, tombstone) exist."""
    client = redis.client()
    try:
        return [key for key in KEYS.session_keys(session_id) if client.exists(key)]
    finally:
        client.close()


async def users_on_two_nodes(cluster: Cluster, gateway_a: int, gateway_b: int) -> tuple[
        tuple[RawClient, dict[str, Any]], tuple[RawClient, dict[str, Any]]]:
    """Two logged-in users whose sessions live on two different GameServers."""
    first = await login(cluster, gateway_a, new_user_id())
    for _ in range(20):
        second = await login(cluster, gateway_b, new_user_id())
        if second[1]["node_id"] != first[1]["node_id"]:
            return first, second
        await second[0].close()
    pytest.fail("never got two users on two GameServers")


async def test_cross_node_duplicate_login(cluster: Cluster) -> None:
    wait_until(lambda: live_gameservers_seen(cluster, 3), timeout=15)
    for _ in range(20):
        user = new_user_id()
        old, old_login = await login(cluster, 0, user)
        await old.request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})
        # A state change still on its way to Redis when the new login arrives:
        await old.send_msg(MsgType.MOVE_REQ, 3, {"x": 2, "y": 2})
        new, new_login = await login(cluster, 1, user)
        kicks = [f.payload for f in await old.wait_closed()
                 if f.msg_type == MsgType.KICKOUT_NTF]
        assert kicks == [{"reason": KickReason.DUPLICATE_LOGIN}]
        assert new_login["state"]["moves"] in (1, 2)
        other = await RawClient.connect(cluster.gateways[0].address)
        stale = await other.request(MsgType.RECONNECT_REQ, 0, {
            "session_id": old_login["session_id"],
            "reconnect_key": old_login["reconnect_key"]})
        assert stale.payload["ok"] is False and stale.payload["error"] == "INVALID_SESSION"
        moved = await new.request(MsgType.MOVE_REQ, 2, {"x": 5, "y": 5})
        assert moved.payload["moves"] == new_login["state"]["moves"] + 1
        assert session_keys(cluster.redis, old_login["session_id"]) == []
        await new.close()
        await other.close()
        if new_login["node_id"] != old_login["node_id"]:
            return  # the cross-node case happened and held
    pytest.fail("20 duplicate logins through two Gateways never landed on two GameServers")


async def test_same_user_same_instant_through_two_gateways(cluster: Cluster) -> None:
    redis_client = cluster.redis.client()
    for _ in range(50):
        user = new_user_id()
        clients = [await RawClient.connect(gw.address) for gw in cluster.gateways]
        answers = await asyncio.gather(
            *(c.request(MsgType.LOGIN_REQ, 1, {"user_id": user}) for c in clients))
        # Both logins succeed, one after the other (the login script is atomic); the first
        # one's socket is kicked, possibly before its own LOGIN_RES got out (the kick and
        # the answer come from different GameServers).
        if answers[0].msg_type == MsgType.KICKOUT_NTF:
            winner = 1
        elif answers[1].msg_type == MsgType.KICKOUT_NTF:
            winner = 0
        else:  # both answered: the later login's session is the user's now
            live = int(redis_client.get(KEYS.user_session(user)) or 0)
            winner = next(i for i in range(2) if answers[i].payload["session_id"] == live)
        loser = 1 - winner
        assert answers[winner].payload.get("ok") is True, answers
        frames = [answers[loser], *await clients[loser].wait_closed()]
        kicks = [f.payload for f in frames if f.msg_type == MsgType.KICKOUT_NTF]
        assert kicks == [{"reason": KickReason.DUPLICATE_LOGIN}], frames
        losing_sessions = [f.payload["session_id"] for f in frames
                           if f.msg_type == MsgType.LOGIN_RES]
        echo = await clients[winner].request(MsgType.ECHO_REQ, 2, {"u": user})
        assert echo.payload == {"u": user}
        live = int(redis_client.get(KEYS.user_session(user)) or 0)
        assert live == answers[winner].payload["session_id"]
        for session_id in losing_sessions:
            assert session_keys(cluster.redis, session_id) == []
        assert session_keys(cluster.redis, live) != []
        owned = [key for key in redis_client.scan_iter("gb:*:sess:*", count=1000)
                 if key.count(b":") == 3
                 and redis_client.hget(key, "user_id") == str(user).encode()]
        assert owned == [KEYS.session(live).encode()], "exactly one session per user"
        await clients[winner].close()
    redis_client.close()


async def test_quick_reconnect_racing_the_old_close(cluster: Cluster) -> None:
    user = new_user_id()
    old, login_payload = await login(cluster, 0, user)
    await old.request(MsgType.MOVE_REQ, 2, {"x": 3, "y": 3})
    old.writer.transport.abort()  # dropped; its CLOSED is on its way to the old owner
    new = await RawClient.connect(cluster.gateways[1].address)
    res = await new.request(MsgType.RECONNECT_REQ, 0, {
        "session_id": login_payload["session_id"],
        "reconnect_key": login_payload["reconnect_key"]})
    assert res.payload["ok"] is True
    # Whatever order the old socket's teardown and the resume happened in, the resumed
    # session is intact and attached.
    for seq in range(3, 23):
        moved = await new.request(MsgType.MOVE_REQ, seq, {"x": seq, "y": 0})
        assert moved.payload["moves"] == seq - 1
    redis_client = cluster.redis.client()
    fields = redis_client.hgetall(KEYS.session(login_payload["session_id"]))
    redis_client.close()
    assert fields[b"attached"] == b"1"
    await new.close()


async def test_whisper_across_nodes_and_gateways(cluster: Cluster) -> None:
    (alice, alice_login), (bob, bob_login) = await users_on_two_nodes(cluster, 0, 1)
    alice_id, bob_id = alice_login["user_id"], bob_login["user_id"]
    res = await alice.request(MsgType.WHISPER_REQ, 2, {"to_user_id": bob_id, "text": "hi"})
    assert res.payload == {"delivered": True}
    note = await bob.expect(MsgType.WHISPER_NTF, 0)
    assert note.payload == {"from_user_id": alice_id, "text": "hi"}
    await bob.request(MsgType.LOGOUT_REQ, 2)
    await bob.wait_closed()
    offline = await alice.request(MsgType.WHISPER_REQ, 3, {"to_user_id": bob_id, "text": "?"})
    assert offline.payload == {"delivered": False}
    await alice.close()


async def admin_kick(cluster: Cluster, user: int) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gameserver", "admin", "kick", "--user-id", str(user),
        "--redis-connection", cluster.redis.url, "--redis-mode", cluster.redis.mode,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_admin_kick_wherever_the_user_is(cluster: Cluster) -> None:
    user = new_user_id()
    client, login_payload = await login(cluster, 1, user)
    code, output = await admin_kick(cluster, user)
    assert code == 0, output
    assert f"kicked user {user}" in output
    frames = await client.wait_closed()
    assert [f.payload for f in frames] == [{"reason": KickReason.ADMIN_KICK}]
    other = await RawClient.connect(cluster.gateways[0].address)
    res = await other.request(MsgType.RECONNECT_REQ, 0, {
        "session_id": login_payload["session_id"],
        "reconnect_key": login_payload["reconnect_key"]})
    assert res.payload["ok"] is False  # the session was ended
    await other.close()
    code, output = await admin_kick(cluster, user)
    assert code == 1 and "not online" in output

    # A session in its reconnect grace (client dropped) is ended too: no resume after it.
    dropped, dropped_login = await login(cluster, 0, new_user_id())
    await dropped.close()
    code, output = await admin_kick(cluster, dropped_login["user_id"])
    assert code == 0, output
    other = await RawClient.connect(cluster.gateways[1].address)
    res = await other.request(MsgType.RECONNECT_REQ, 0, {
        "session_id": dropped_login["session_id"],
        "reconnect_key": dropped_login["reconnect_key"]})
    assert res.payload["ok"] is False
    await other.close()


async def test_fourth_gameserver_gets_new_sessions_without_restarts(
    system_factory,  # type: ignore[no-untyped-def]
) -> None:
    cluster: Cluster = system_factory(gameservers=3, gateways=2, env=CLUSTER_ENV)
    pids = [p.pid for p in cluster.processes()]
    clients = []
    for i in range(6):
        clients.append((await login(cluster, i % 2, new_user_id()))[0])
    fourth = cluster.add_gameserver()
    wait_until(lambda: live_gameservers_seen(cluster, 4), timeout=15,
               message="the Gateways did not see the 4th GameServer")
    landed = []
    for i in range(4):
        client, payload = await login(cluster, i % 2, new_user_id())
        landed.append(payload["node_id"])
        clients.append(client)
    assert fourth.node_id in landed
    assert [p.pid for p in cluster.processes()][:len(pids)] == pids  # nobody restarted
    for client in clients:
        await client.close()


async def test_auto_node_ids_for_identical_replicas(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(gameservers=0, gateways=0, start=False)
    nodes = [cluster.add_gameserver(node_id=None, flags=("--node-id", "auto"),
                                    wait_ready=False) for _ in range(3)]
    for node in nodes:
        node.wait_ready()
    redis_client = cluster.redis.client()
    ids = sorted(int(m) for m in redis_client.smembers(KEYS.nodes))
    redis_client.close()
    assert ids == [1, 2, 3]
    gateway = cluster.add_gateway()
    client = await RawClient.connect(gateway.address)
    payload = (await client.login(new_user_id())).payload
    assert payload["node_id"] in (1, 2, 3)
    await client.close()


class Player:
    """A client library user looping MOVEs, recording what was acknowledged."""

    def __init__(self, cluster: Cluster, first_gateway: int) -> None:
        addresses = [gw.address for gw in cluster.gateways]
        primary = addresses[first_gateway]
        self.client = GameClient(*primary, gateways=[a for a in addresses if a != primary],
                                 request_timeout=10, reconnect_timeout=30)
        self.acked = 0
        self.last_moves = 0
        self.errors: list[BaseException] = []
        #: (sent at, answered at) of every acknowledged MOVE.
        self.answers: list[tuple[float, float]] = []
        self.node_id = 0

    async def start(self) -> None:
        await self.client.connect()
        login_payload = await self.client.login(new_user_id())
        self.node_id = login_payload["node_id"]

    async def play(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                result = await self.client.move(self.acked, 1)
            except Exception as exc:
                self.errors.append(exc)
                return
            self.acked += 1
            self.last_moves = result["moves"]
            self.answers.append((sent, time.monotonic()))
            assert self.last_moves == self.acked, "a MOVE was lost or applied twice"

    def sent_after(self, moment: float) -> list[float]:
        """Answer times of the requests sent after ``moment``."""
        return [answered for sent, answered in self.answers if sent > moment]


class Load:
    """Players looping MOVEs on a cluster, and the GameServer a test is about to break."""

    def __init__(self, players: list[Player], tasks: list[asyncio.Task[None]],
                 stop: asyncio.Event, victim: Any) -> None:
        self.players = players
        self.tasks = tasks
        self.stop = stop
        self.victim = victim
        self.affected = [p for p in players if p.node_id == victim.node_id]

    @classmethod
    async def start(cls, cluster: Cluster, count: int) -> Load:
        players = [Player(cluster, i % len(cluster.gateways)) for i in range(count)]
        await asyncio.gather(*(p.start() for p in players))
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.play(stop)) for p in players]
        await wait_until_async(lambda: all(p.acked >= 3 for p in players), timeout=15)
        victim = next(n for n in cluster.gameservers
                      if any(p.node_id == n.node_id for p in players))
        return cls(players, tasks, stop, victim)

    async def everyone_advances(self, moves: int, timeout: float) -> None:
        marks = {id(p): p.acked for p in self.players}
        await wait_until_async(
            lambda: all(p.acked >= marks[id(p)] + moves for p in self.players),
            timeout=timeout, message="not every client kept being served")

    async def finish(self) -> None:
        """Stop, then check nothing was lost or applied twice, from the server's view."""
        self.stop.set()
        await asyncio.gather(*self.tasks)
        assert [p.errors for p in self.players if p.errors] == []
        for player in self.players:
            assert player.last_moves == player.acked
            state = await player.client.move(0, 0)
            assert state["moves"] == player.acked + 1  # nothing lost, nothing twice
            await player.client.close()


async def drain(node: Any) -> None:
    """SIGTERM, then wait (without blocking the event loop: the clients keep playing)."""
    node.process.send_signal(signal.SIGTERM)
    await wait_until_async(lambda: not node.process.running, timeout=30,
                           message="the drained GameServer did not exit")
    assert node.process.wait_exit(5) == 0


async def test_kill_9_failover_under_load_is_exactly_once(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(gameservers=3, gateways=2, env=CLUSTER_ENV)
    load = await Load.start(cluster, 30)
    # A request may be in flight when the process dies; count from requests sent after.
    killed_at = time.monotonic()
    load.victim.kill()
    await wait_until_async(
        lambda: all(p.sent_after(killed_at) for p in load.affected),
        timeout=2 * REGISTRY_EXPIRY_S + 5,
        message="clients of the killed GameServer were not served again in time")
    gap = max(p.sent_after(killed_at)[0] for p in load.affected) - killed_at
    assert gap < 2 * REGISTRY_EXPIRY_S, f"failover took {gap:.2f}s"
    await load.everyone_advances(3, timeout=10)
    await load.finish()


async def test_sigterm_drain_under_load_has_no_client_visible_errors(
    system_factory,  # type: ignore[no-untyped-def]
) -> None:
    cluster: Cluster = system_factory(gameservers=3, gateways=2, env=CLUSTER_ENV)
    load = await Load.start(cluster, 30)
    victim = load.victim
    await drain(victim)
    await load.everyone_advances(3, timeout=15)
    for player in load.players:
        assert player.client.reconnect_count == 0, "a client noticed the drain"
        assert player.client.kicked_reason is None
    assert load.affected, "nobody was on the drained GameServer"
    assert "Session handed over" in victim.process.log_text()
    await load.finish()


async def test_paused_gameserver_cannot_touch_sessions_that_moved(
    system_factory,  # type: ignore[no-untyped-def]
) -> None:
    cluster: Cluster = system_factory(gameservers=3, gateways=2, env=CLUSTER_ENV)
    load = await Load.start(cluster, 12)
    victim = load.victim
    victim.process.send_signal(signal.SIGSTOP)
    try:
        paused_at = time.monotonic()
        # Past the registry expiry: the Gateways declare it dead, its clients move on.
        await wait_until_async(
            lambda: all(p.sent_after(paused_at + REGISTRY_EXPIRY_S) for p in load.affected),
            timeout=20)
    finally:
        victim.process.send_signal(signal.SIGCONT)
    moved_ids = {p.client.session_id for p in load.affected}
    # It wakes up with stale sessions (and maybe half-handled frames); clients go on.
    await load.everyone_advances(5, timeout=15)
    # Once it answers again it learns that its old sockets are gone: nothing stays
    # attached in its memory (it would renew leases and claim whispers forever).
    await wait_until_async(
        lambda: "gameserver_sessions_active 0.0" in victim.process.metrics_text(), timeout=15,
        message="the resumed GameServer still holds sessions whose clients left")
    redis_client = cluster.redis.client()
    for player in load.players:
        fields = redis_client.hgetall(KEYS.session(player.client.session_id))
        assert fields, "a moved session was deleted"
        if player.client.session_id in moved_ids:
            assert int(fields[b"node_id"]) != victim.node_id
    redis_client.close()
    await load.finish()


async def test_whisper_to_an_unreachable_owner_is_a_typed_error(
    system_factory,  # type: ignore[no-untyped-def]
) -> None:
    cluster: Cluster = system_factory(gameservers=2, gateways=1, env=CLUSTER_ENV)
    (alice, _), (bob, bob_login) = await users_on_two_nodes(cluster, 0, 0)
    bob_id = bob_login["user_id"]
    bobs_node = next(n for n in cluster.gameservers if n.node_id == bob_login["node_id"])
    bobs_node.process.send_signal(signal.SIGSTOP)
    try:
        res = await alice.request(MsgType.WHISPER_REQ, 2, {"to_user_id": bob_id, "text": "?"})
    finally:
        bobs_node.process.send_signal(signal.SIGCONT)
    assert res.msg_type == MsgType.ERROR_RES
    assert res.payload["code"] == ErrorCode.SERVER_UNAVAILABLE
    assert "did not answer" in res.payload["message"]
    await alice.close()
    await bob.close()


async def test_login_goes_ahead_when_the_old_owner_does_not_answer(
    system_factory,  # type: ignore[no-untyped-def]
) -> None:
    """Forced takeover: a failed kick never blocks a login."""
    cluster: Cluster = system_factory(gameservers=2, gateways=2, env=CLUSTER_ENV)
    for _ in range(20):
        user = new_user_id()
        old, old_login = await login(cluster, 0, user)
        owner = next(n for n in cluster.gameservers if n.node_id == old_login["node_id"])
        owner.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            # Through the same Gateway, which just sent a session to the paused node and so
            # balances this one to the other (a paused node is only declared dead later).
            new, new_login = await login(cluster, 0, user)
            elapsed = time.monotonic() - started
            if new_login["node_id"] == owner.node_id:
                raise AssertionError("a paused GameServer answered a login")
            kicks = [f.payload for f in await old.wait_closed()]
        finally:
            owner.process.send_signal(signal.SIGCONT)
        assert kicks == [{"reason": KickReason.DUPLICATE_LOGIN}]
        assert elapsed < 3.0, f"the login waited {elapsed:.2f}s for the unreachable owner"
        moved = await new.request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})
        assert moved.payload["moves"] == new_login["state"]["moves"] + 1
        await new.close()
        return
    pytest.fail("unreachable")


async def test_admin_kick_over_http_needs_the_token(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory(gameservers=2, gateways=1,
                                      env={**CLUSTER_ENV, "ADMIN_TOKEN": "t0ken"})
    user = new_user_id()
    client, login_payload = await login(cluster, 0, user)
    other = next(n for n in cluster.gameservers if n.node_id != login_payload["node_id"])

    async def post(token: str | None) -> tuple[int, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", other.metrics_port)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(f"POST /admin/kick?user_id={user} HTTP/1.0\r\n{auth}\r\n".encode())
        data = await reader.read()
        writer.close()
        head, _, body = data.decode().partition("\r\n\r\n")
        return int(head.split()[1]), body

    assert (await post(None))[0] == 401
    assert (await post("wrong"))[0] == 401
    status, body = await post("t0ken")  # asked on a node that does not own the user
    assert (status, body.strip()) == (200, '{"kicked": true}')
    frames = await client.wait_closed()
    assert [f.payload for f in frames] == [{"reason": KickReason.ADMIN_KICK}]
    assert (await post("t0ken"))[0] == 404


async def test_gateway_replicas_may_share_a_node_id(system_factory) -> None:  # type: ignore[no-untyped-def]
    """A Kubernetes Deployment gives every Gateway replica the same settings."""
    cluster: Cluster = system_factory(gameservers=1, gateways=0, env=CLUSTER_ENV)
    twins = [cluster.add_gateway(node_id=7), cluster.add_gateway(node_id=7)]
    clients = []
    for twin in twins:
        client = await RawClient.connect(twin.address)
        await client.login(new_user_id())
        clients.append(client)
    for seq in range(2, 12):
        for client in clients:
            res = await client.request(MsgType.ECHO_REQ, seq, {"n": seq})
            assert res.payload == {"n": seq}
    for client in clients:
        await client.close()


async def test_gateway_processes_share_one_port_with_reuse_port(system_factory) -> None:  # type: ignore[no-untyped-def]
    """GATEWAY_REUSE_PORT: one node's cores serve one port, each Gateway process one core."""
    cluster: Cluster = system_factory(gameservers=1, gateways=0, env=CLUSTER_ENV)
    port = free_port()
    flags = ["--client-port", str(port), "--reuse-port", "true"]
    first, second = (cluster.add_gateway(node_id=7, flags=flags),
                     cluster.add_gateway(node_id=7, flags=flags))
    address = (first.host, port)
    clients = [await RawClient.connect(address) for _ in range(40)]
    for client in clients:
        await client.login(new_user_id())
        assert (await client.request(MsgType.ECHO_REQ, 2, {"n": 2})).payload == {"n": 2}
    # The kernel spread the connections over both processes (all 40 on one: 2**-39).
    held = [node.process.metric('gateway_connected_clients{transport="tcp"}')
            for node in (first, second)]
    assert sum(held) == 40 and min(held) > 0, held
    for client in clients:
        await client.close()
    # One process stops: the port goes on serving new clients through the other.
    assert first.terminate() == 0
    later = await RawClient.connect(address)
    await later.login(new_user_id())
    assert (await later.request(MsgType.ECHO_REQ, 2, {"n": 3})).payload == {"n": 3}
    await later.close()


async def test_drain_right_after_a_peer_died_still_hands_everything_over(
    system_factory,  # type: ignore[no-untyped-def]
) -> None:
    """The dead peer is still in the registry for a while: sessions that cannot reach it
    go to another peer instead of being kicked."""
    cluster: Cluster = system_factory(gameservers=3, gateways=2, env=CLUSTER_ENV)
    load = await Load.start(cluster, 30)
    victim = load.victim
    dead = next(n for n in cluster.gameservers if n is not victim)
    dead.kill()
    await drain(victim)
    await load.everyone_advances(3, timeout=20)
    assert load.affected, "nobody was on the drained GameServer"
    for player in load.affected:
        assert player.client.reconnect_count == 0, "a drained client had to reconnect"
    await load.finish()
