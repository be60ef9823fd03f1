"""``python -m test_client`` (also ``gb-client``): talk to a Gateway, mint tokens, benchmark.

python -m test_client --user-id 42                       interactive session
python -m test_client --user-id 42 --run "echo hi; ping; logout"
python -m test_client mint-token --secret S --user-id 42
python -m test_client bench --connections 100 --duration 10 [--json]
python -m test_client bench --idle --connections 10000 --workers 4 --duration 60
python -m test_client web --port 8000                    the browser demo, http://127.0.0.1:8000/
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
from pathlib import Path

import orjson
import uvloop

from protocol.auth import mint_token
from test_client.bench import BenchConfig, default_user_id_base, format_report, run_bench
from test_client.client import GameClient
from test_client.connection import Endpoint
from test_client.errors import ClientError, RequestError
from test_client.shell import (
    push_line,
    run_interactive,
    run_script,
    stdout_line,
    to_json,
)
from test_client.tls import TlsOptions
from test_client.web import DEFAULT_ROOT, serve


def _endpoint(text: str) -> Endpoint:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls", action="store_true",
                        help="connect over TLS (to the Gateway's GATEWAY_TLS_PORT, 5443)")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="PEM CA bundle to trust instead of the system's (implies --tls)")
    parser.add_argument("--tls-server-name", metavar="NAME",
                        help="name the server certificate must carry, if not --host "
                        "(implies --tls)")


def _tls_options(args: argparse.Namespace) -> TlsOptions | None:
    if not (args.tls or args.tls_ca or args.tls_server_name):
        return None
    return TlsOptions(ca_file=args.tls_ca, server_name=args.tls_server_name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m test_client",
        description="Test client of the game-server backbone (wire protocol v1).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--host", default="localhost", help="Gateway host (default localhost)")
    parser.add_argument("--port", type=int, default=5000, help="Gateway port (default 5000)")
    parser.add_argument(
        "--gateway",
        type=_endpoint,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="another Gateway to fail over to (repeatable)",
    )
    _add_tls_arguments(parser)
    parser.add_argument("--user-id", type=_positive_int, help="user to log in as")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--token", help="login token (when the server runs AUTH_MODE=hmac)")
    auth.add_argument("--auth-secret", help="mint the login token from this shared secret")
    parser.add_argument("--run", metavar="COMMANDS", help='run "cmd; cmd; ..." and exit')
    parser.add_argument("--timeout", type=float, default=5.0, help="request timeout in seconds")
    parser.add_argument(
        "--no-reconnect", action="store_true", help="do not resume the session after a drop"
    )
    parser.add_argument("--no-compression", action="store_true", help="do not accept lz4 payloads")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    commands = parser.add_subparsers(dest="command", metavar="{mint-token,bench,web}")

    mint = commands.add_parser("mint-token", help="print an HMAC login token")
    mint.add_argument("--secret", required=True, help="the AUTH_SECRET of the GameServers")
    mint.add_argument("--user-id", type=_positive_int, required=True)
    mint.add_argument("--ttl", type=int, default=3600, help="validity in seconds (3600)")

    bench = commands.add_parser(
        "bench", help="load generator: echo with one request in flight per connection"
    )
    bench.add_argument("--host", default="localhost")
    bench.add_argument("--port", type=int, default=5000)
    _add_tls_arguments(bench)
    bench.add_argument("--connections", type=_positive_int, default=100)
    bench.add_argument(
        "--duration", type=float, default=10.0,
        help="measured seconds (10); with --idle, seconds the connections are held",
    )
    bench.add_argument("--payload-bytes", type=int, default=64, help="echo payload size (64)")
    bench.add_argument(
        "--workers", "--processes", dest="processes", type=_positive_int, default=1,
        help="worker processes, each with its own event loop (1)",
    )
    bench.add_argument(
        "--idle", action="store_true",
        help="open and log in every connection, hold it --duration seconds, then one echo each",
    )
    bench.add_argument(
        "--ping-interval", type=float, default=0.0,
        help="with --idle: PING each connection this often, in seconds (0: stay silent); "
        "keep it below the Gateway's IDLE_TIMEOUT_S",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object at the end")
    bench.add_argument("--no-login", action="store_true", help="echo without LOGIN_REQ first")
    bench.add_argument("--warmup", type=float, default=0.0, help="unmeasured seconds first")
    bench.add_argument(
        "--user-id-base", type=_positive_int, default=None, help="first user id (random-ish)"
    )
    bench.add_argument("--auth-secret", help="mint login tokens with this shared secret")
    bench.add_argument("--request-timeout", type=float, default=10.0)
    bench.add_argument("--connect-timeout", type=float, default=10.0)
    bench.add_argument("--connect-concurrency", type=_positive_int, default=200)
    bench.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    bench.add_argument(
        "--mode", choices=("echo", "move", "login"), default="echo",
        help="echo: ECHO_REQ, each answer must echo its own request (default); move: "
        "MOVE_REQ, a state change committed to Redis, each answer must count moves one "
        "higher than the last (needs the login); login: each connection is a loop of "
        "connect, LOGIN, LOGOUT, close (logins/s and the LOGIN latency)")
    bench.add_argument(
        "--transport", choices=("tcp", "ws"), default="tcp",
        help="tcp: the Gateway's client port (default); ws: its WebSocket port (--port is "
        "then GATEWAY_WS_PORT; path /, one frame per binary message); echo and move modes")
    bench.add_argument(
        "--returning", action="store_true",
        help="login mode: each loop logs the same user in again (default: a new user each "
        "time)")
    bench.add_argument(
        "--rate", type=float, default=0.0, metavar="PER_SECOND",
        help="paced load: requests a second per connection, one in flight (default 0: "
        "flat out); latency then counts from when each request was due")
    bench.add_argument(
        "--lz4", action="store_true",
        help="log in accepting LZ4: large answers come compressed (checked after "
        "decompression)")
    bench.add_argument(
        "--watch", action="append", default=[], metavar="NAME=PID", type=_name_pid,
        help="also report this process's CPU over the measured window (repeatable; the "
        "servers under test); the load generator's own and the machine's idle share are "
        "always reported (Linux)")

    web = commands.add_parser(
        "web", help="serve the browser demo (clients/web/) and the JavaScript client "
        "library (clients/js/, at /js/) over HTTP")
    web.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only)")
    web.add_argument("--port", type=int, default=8000,
                     help="port to listen on (default 8000; 0 picks a free one, printed)")
    web.add_argument("--root", type=Path, default=DEFAULT_ROOT, metavar="DIR",
                     help="directory holding web/ and js/ (default: the source tree's "
                     f"clients/, {DEFAULT_ROOT})")
    return parser


def _name_pid(text: str) -> tuple[str, int]:
    name, sep, pid = text.partition("=")
    if not sep or not name or not pid.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PID, got {text!r}")
    return name, int(pid)


def _mint(args: argparse.Namespace) -> int:
    print(mint_token(args.secret.encode(), args.user_id, args.ttl))
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.rate < 0:
        print("test_client bench: --rate must be 0 (flat out) or more", file=sys.stderr)
        return 2
    if args.transport == "ws" and (args.mode == "login" or args.idle):
        print("test_client bench: --transport ws is for the echo and move modes",
              file=sys.stderr)
        return 2
    if args.mode in ("move", "login") and args.no_login:
        print(f"test_client bench: --mode {args.mode} needs the login: drop --no-login",
              file=sys.stderr)
        return 2
    cfg = BenchConfig(
        host=args.host,
        port=args.port,
        connections=args.connections,
        duration_s=args.duration,
        payload_bytes=args.payload_bytes,
        processes=args.processes,
        login=not args.no_login,
        warmup_s=args.warmup,
        user_id_base=args.user_id_base or default_user_id_base(),
        auth_secret=args.auth_secret,
        request_timeout_s=args.request_timeout,
        connect_timeout_s=args.connect_timeout,
        connect_concurrency=args.connect_concurrency,
        idle=args.idle,
        ping_interval_s=args.ping_interval,
        tls=_tls_options(args),
        watch=tuple(args.watch),
        mode=args.mode,
        returning=args.returning,
        rate_per_connection=args.rate,
        lz4=args.lz4,
        transport=args.transport,
    )
    report = run_bench(cfg, progress=None if args.quiet else sys.stderr)
    if args.json:
        print(orjson.dumps(report).decode(), flush=True)
    else:
        print(format_report(report, cfg), flush=True)
    if report["connections"] == 0:
        print(
            f"test_client bench: no connection to {cfg.host}:{cfg.port} could be opened"
            f" ({report['first_error']})",
            file=sys.stderr,
        )
        return 1
    return 0


async def _session(args: argparse.Namespace) -> int:
    session_over = asyncio.Event()

    def on_event(name: str, detail: str) -> None:
        stdout_line(f"info {name} {detail}")
        if name == "reconnect_failed":
            session_over.set()
        elif name == "disconnected":
            # Give an automatic resumption the chance to start before calling it over.
            asyncio.get_running_loop().call_soon(
                lambda: None if client.resuming else session_over.set()
            )

    client = GameClient(
        args.host,
        args.port,
        gateways=args.gateway,
        request_timeout=args.timeout,
        auto_reconnect=not args.no_reconnect,
        accept_compression=not args.no_compression,
        on_push=lambda push: stdout_line(push_line(push)),
        on_event=on_event,
        tls=_tls_options(args),
    )
    token = args.token
    if args.auth_secret:
        token = mint_token(args.auth_secret.encode(), args.user_id, 3600)
    try:
        result = await client.login(args.user_id, token)
    except RequestError as exc:
        print(f"test_client: login refused: {exc}", file=sys.stderr)
        await client.close()
        return 1
    except (ClientError, OSError) as exc:
        print(f"test_client: {exc}", file=sys.stderr)
        await client.close()
        return 1
    stdout_line(f"ok login {to_json(result)}")
    try:
        if args.run is not None:
            return 0 if await run_script(client, args.run) else 1
        await run_interactive(client, session_over)
        return 0
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "mint-token":
        return _mint(args)
    if args.command == "web":
        return serve(args.host, args.port, args.root)
    tls = _tls_options(args)
    if tls is not None:
        try:
            tls.context()
        except (OSError, ssl.SSLError) as exc:
            print(f"test_client: cannot use --tls-ca {tls.ca_file}: {exc}", file=sys.stderr)
            return 2
    if args.command == "bench":
        return _bench(args)
    if args.user_id is None:
        parser.error("--user-id is required (or use a sub-command: mint-token, bench, web)")
    try:
        return uvloop.run(_session(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
