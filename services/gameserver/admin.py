"""``python -m gameserver admin kick --user-id N``: kick a user wherever they are;
``python -m gameserver admin migrate-keys``: move player state to the key layout of
servicekit.keys after an upgrade.

Finds the user's session and its owner in Redis, then asks that GameServer over its mesh
port (the same ``kick_user`` call GameServers make to each other). The owner kicks the
socket with ``KICKOUT_NTF ADMIN_KICK`` through whatever Gateway it is on and ends the
session. Exit codes: 0 kicked, 1 not online (or already gone), 2 could not ask.

On a cluster with CURVE (CLUSTER_CURVE_SECRET_FILE) the CLI needs the same key file: it
reads the owner's published CURVE key from the registry first, and without a key it
accepts it stops with exit 2 before sending anything (the GameServer would refuse it
anyway: its ZAP handler admits only the cluster key).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import cast
from urllib.parse import unquote, urlsplit

import orjson
import redis
import zmq
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from servicekit import zmqsockets
from servicekit.config import DEFAULT_REDIS, REDIS_MODES, ConfigError
from servicekit.curve import ClusterKeys, CurveMismatch, load_keys, server_key
from servicekit.keys import DEFAULT_PREFIX, Keys, check_prefix
from servicekit.redis_problems import explain
from servicekit.redis_tls import CA_ENV, CERT_ENV, KEY_ENV, NO_TLS, RedisTls
from servicekit.redis_url import display_address, seed_urls, to_redis_url, uses_tls


def _redis_options(command: argparse.ArgumentParser) -> None:
    """How to reach the deployment's Redis, as its services are told."""
    command.add_argument("--redis-connection",
                         default=os.environ.get("REDIS_CONNECTION", DEFAULT_REDIS),
                         help="Redis of the cluster [env REDIS_CONNECTION]")
    command.add_argument("--redis-mode", choices=REDIS_MODES,
                         default=os.environ.get("REDIS_MODE", "standalone"),
                         help="the cluster's REDIS_MODE [env REDIS_MODE]")
    for env, what in ((CA_ENV, "CA file that signed Redis' certificate"),
                      (CERT_ENV, "client certificate for Redis with mutual TLS"),
                      (KEY_ENV, "its private key")):
        command.add_argument("--" + env.lower().replace("_", "-"), metavar="FILE",
                             default=os.environ.get(env, ""),
                             help=f"PEM {what}, for rediss:// [env {env}]")
    command.add_argument("--redis-sentinel-master",
                         default=os.environ.get("REDIS_SENTINEL_MASTER", "mymaster"),
                         help="with --redis-mode sentinel: the master's name "
                         "[env REDIS_SENTINEL_MASTER]")
    command.add_argument("--redis-key-prefix",
                         default=os.environ.get("REDIS_KEY_PREFIX", DEFAULT_PREFIX),
                         help="the cluster's REDIS_KEY_PREFIX [env REDIS_KEY_PREFIX]")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="gameserver admin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    kick = commands.add_parser("kick", help="kick a user (KICKOUT_NTF ADMIN_KICK)")
    kick.add_argument("--user-id", type=int, required=True)
    _redis_options(kick)
    kick.add_argument("--curve-secret-file", metavar="FILE",
                      default=os.environ.get("CLUSTER_CURVE_SECRET_FILE", ""),
                      help="the cluster's CURVE key file, on a cluster that uses CURVE "
                      "[env CLUSTER_CURVE_SECRET_FILE]")
    kick.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (3)")
    migrate = commands.add_parser(
        "migrate-keys", help="move player state from the key layout of versions before "
        "Redis Cluster support (once, before the new version starts; single Redis only)")
    _redis_options(migrate)
    migrate.add_argument("--dry-run", action="store_true", help="count, change nothing")
    args = parser.parse_args(argv)
    try:
        if args.redis_mode != "standalone" and args.command == "migrate-keys":
            raise ConfigError("migrate-keys moves keys of the layout before Redis Cluster "
                              "support, so it runs on a single Redis only")
        url = (seed_urls(args.redis_connection)[0] if args.redis_mode != "standalone"
               else to_redis_url(args.redis_connection))
        tls = RedisTls(args.redis_tls_ca_file, args.redis_tls_cert_file, args.redis_tls_key_file)
        tls.check(url)
        keys = Keys(check_prefix(args.redis_key_prefix))
        curve = load_keys(args.curve_secret_file) if args.command == "kick" else None
    except (ConfigError, ValueError) as exc:
        print(f"gameserver admin: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate-keys":
        return migrate_keys(url, keys, args.dry_run, tls)
    if args.redis_mode != "standalone":
        url = args.redis_connection
    return kick_user(url, args.user_id, args.timeout, curve, tls, keys, args.redis_mode,
                     args.redis_sentinel_master)


def migrate_keys(redis_url: str, keys: Keys, dry_run: bool = False,
                 tls: RedisTls = NO_TLS) -> int:
    """Move each ``<prefix>player:<uid>`` (the layout before hash tags) to
    ``keys.player(uid)`` with ``RENAMENX``: a player who already has state under the new
    name keeps it, and the old key is left for the operator to look at. Sessions and the
    registry are not moved: sessions end (clients log in again), the registry is rewritten
    by the GameServers' heartbeats. Exit 0 done, 2 Redis failed."""
    client = redis.Redis.from_url(redis_url, **tls.client_kwargs(redis_url))
    old_prefix = f"{keys.prefix}player:"
    moved = kept = 0
    try:
        for raw in client.scan_iter(match=f"{old_prefix}*", count=1000):
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            user_id = name[len(old_prefix):]
            if not user_id.isdigit():
                continue
            if dry_run or client.renamenx(name, keys.player(int(user_id))):
                moved += 1
            else:
                kept += 1
    except redis.RedisError as exc:
        return _redis_failed(redis_url, exc)
    finally:
        client.close()
    verb = "would move" if dry_run else "moved"
    print(f"{verb} {moved} players' state to the new key layout; {kept} left where they "
          "were (state under the new name already)")
    return 0


def kick_user(redis_url: str, user_id: int, timeout_s: float,
              curve: ClusterKeys | None = None, tls: RedisTls = NO_TLS,
              keys: Keys | None = None, mode: str = "standalone",
              sentinel_master: str = "mymaster") -> int:
    """``redis_url``: the URL; with ``mode`` cluster or sentinel, the comma-separated seeds
    or sentinels."""
    keys = keys or Keys()
    client = _sync_client(redis_url, mode, timeout_s, tls, sentinel_master)
    redis_url = seed_urls(redis_url)[0]  # (for messages)
    try:
        session_id = cast(str | None, client.get(keys.user_session(user_id)))
        if session_id is None:
            print(f"user {user_id} is not online")
            return 1
        node_id = cast(str | None, client.hget(keys.session(int(session_id)), "node_id"))
        node = cast(dict[str, str], client.hgetall(keys.node(int(node_id)))) if node_id else {}
    except redis.RedisError as exc:
        return _redis_failed(redis_url, exc)
    finally:
        client.close()
    if not node:
        print(f"user {user_id}'s GameServer (node {node_id}) is not registered; "
              "the session ends with its lease")
        return 1
    endpoint = f"tcp://{node['host']}:{node['mesh_port']}"
    try:
        key = server_key(curve, node.get("curve_key", ""))
    except CurveMismatch as exc:
        print(f"gameserver admin: cannot call node {node_id} at {endpoint}: {exc}; nobody "
              "was kicked", file=sys.stderr)
        return 2
    reply = _call(endpoint, "kick_user", {"user_id": user_id, "reason": "ADMIN_KICK"},
                  timeout_s, curve, key)
    if reply is None:
        print(f"gameserver admin: node {node_id} at {endpoint} did not answer "
              f"within {timeout_s}s", file=sys.stderr)
        return 2
    if reply.get("kicked"):
        print(f"kicked user {user_id} (session {session_id} on node {node_id})")
        return 0
    print(f"user {user_id} was not online on node {node_id}")
    return 1


def _redis_failed(redis_url: str, exc: redis.RedisError) -> int:
    """Say what went wrong with Redis, as the services would; exit code 2."""
    print(f"gameserver admin: {explain(display_address(redis_url), exc, uses_tls(redis_url))}",
          file=sys.stderr)
    return 2


def _sync_client(connection: str, mode: str, timeout_s: float, tls: RedisTls,
                 sentinel_master: str = "mymaster") -> redis.Redis | RedisCluster:
    """The CLI's own synchronous client, reaching Redis as the services do
    (servicekit.redis_client is asyncio)."""
    if mode == "standalone":
        return redis.Redis.from_url(connection, socket_timeout=timeout_s,
                                    socket_connect_timeout=timeout_s, decode_responses=True,
                                    **tls.client_kwargs(connection))
    seeds = [urlsplit(url) for url in seed_urls(connection)]
    first = seeds[0]
    if mode == "sentinel":
        tls_kwargs = tls.client_kwargs(first.geturl())
        ssl = {"ssl": True, **tls_kwargs} if tls_kwargs else {}
        sentinel = Sentinel([(str(s.hostname), s.port or 26379)  # type: ignore[no-untyped-call]
                             for s in seeds],
                            sentinel_kwargs={"socket_timeout": timeout_s, **ssl})
        master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            sentinel_master, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            decode_responses=True, username=unquote(first.username) if first.username else None,
            password=unquote(first.password) if first.password else None,
            db=int(first.path.strip("/") or 0), **ssl)
        return master
    return RedisCluster(
        startup_nodes=[ClusterNode(str(s.hostname), s.port or 6379)  # type: ignore[no-untyped-call]
                       for s in seeds],
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
        ssl=first.scheme == "rediss", socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s, decode_responses=True,
        **tls.client_kwargs(first.geturl()))


def _call(endpoint: str, method: str, body: dict[str, object], timeout_s: float,
          curve: ClusterKeys | None, key: bytes | None) -> dict[str, object] | None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = zmqsockets.dealer(context, curve)
    try:
        zmqsockets.dial(sock, endpoint, server_key=key)
        sock.send_multipart([b"\x00" * 7 + b"\x01", method.encode(), orjson.dumps(body)])
        if not sock.poll(int(timeout_s * 1000)):
            return None
        _, status, payload = sock.recv_multipart()
        reply: dict[str, object] = orjson.loads(payload)
        if status != b"ok":
            print(f"gameserver admin: {reply.get('code')}: {reply.get('message')}",
                  file=sys.stderr)
            return None
        return reply
    finally:
        sock.close(0)
