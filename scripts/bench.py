#!/usr/bin/env python3
"""The echo benchmarks of docs/BENCHMARKS.md, each in one run on one machine.

Default mode, two targets:

(a) a minimal uvloop ``asyncio.Protocol`` echo server with the same framing: the physical
    limit of one hop on this machine (``python -m test_client.echo_server``);
(b) the full path Client -> Gateway -> GameServer (whole middleware pipeline) -> Gateway ->
    Client, on a private local redis-server.

``--cluster`` mode, two topologies started side by side, each on its own redis-server:

(1x1) one Gateway, one GameServer;
(2x3) two Gateways, three GameServers (the Gateways spread sessions over all three).

For each connection count the two targets are measured back to back, and the whole sweep
is repeated ``--rounds`` times, so a noisy neighbour hurts both sides alike; the report
gives medians over rounds and the median of the per-round ratios (b/a, or 2x3/1x1). Each
connection has exactly one request in flight (closed loop). The load generator is
``python -m test_client bench`` (default mode) or, in cluster mode, the same worker code
(``test_client.bench.run_worker``) in two processes started on a common barrier: one per
Gateway of 2x3 with half the connections each, and likewise two (both on the one Gateway)
for 1x1, so both topologies get the same load-generator CPU. Their raw latency samples are
merged, so percentiles are exact over all connections.

    .venv/bin/python scripts/bench.py                     # 3 rounds x (1, 100, 1000) x 5 s
    .venv/bin/python scripts/bench.py --rounds 5 --duration 10 --json-out results.json
    .venv/bin/python scripts/bench.py --cluster           # 5 rounds x (100, 1000) x 5 s
    .venv/bin/python scripts/bench.py --redis             # MOVE: one Redis, a Redis Cluster,
                                                          # WAIT 1 (scripts/bench_redis.py)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from gameserver.config import GameServerConfig
from gateway.config import GatewayConfig
from servicekit.fdlimit import raise_nofile_limit
from test_client.bench import BenchConfig, WorkerResult, build_report, format_cpu, run_worker
from test_client.latency import merge_samples, summarize_ms

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
#: Every service setting (from the services' own config classes, so a new one is never
#: missed): removed from the inherited environment so the services run on their defaults.
SERVICE_SETTINGS = frozenset(
    field.metadata["env"]
    for config_type in (GatewayConfig, GameServerConfig)
    for field in dataclasses.fields(config_type)
)
#: The echo benchmarks measure what the path can carry, not the per-client rate limit: one
#: connection alone sends thousands of requests a second, far over CLIENT_RATE_LIMIT's default.
ECHO_BENCH_ENV = {"CLIENT_RATE_LIMIT": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise SystemExit(f"bench: {what} did not come up within {timeout}s")


def ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
        return bool(response.status == 200)


def listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def scrape(port: int, metric: str) -> dict[str, float]:
    """``{labels: value}`` of one metric on a service's /metrics (labels '' if none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(metric) and line[len(metric):len(metric) + 1] in (" ", "{"):
            name, _, value = line.rpartition(" ")
            values[name[len(metric):]] = float(value)
    return values


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl() if sys.platform.startswith("linux") else None  # before any fork


def _die_with_parent() -> None:
    """``preexec_fn``: on Linux the child gets SIGKILL if the bench process dies."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class System:
    """One Gateway/GameServer topology on its own redis-server."""

    name: str
    redis_port: int
    log_dir: Path
    gameservers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    gameserver_metrics: dict[int, int] = field(default_factory=dict)
    gateways: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    gateway_ports: dict[int, int] = field(default_factory=dict)
    gateway_metrics: dict[int, int] = field(default_factory=dict)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.gateway_ports.values()]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every node ready, and every Gateway sees every GameServer live."""
        for node_id, port in self.gameserver_metrics.items():
            proc = self.gameservers[node_id]
            name = f"{self.name}-gameserver-{node_id}"
            wait_for(lambda p=port, c=proc, n=name: self._alive(c, n) and ready(p), name,
                     timeout)
        want = len(self.gameservers)
        for node_id, port in self.gateway_metrics.items():
            proc = self.gateways[node_id]
            name = f"{self.name}-gateway-{node_id}"
            wait_for(lambda p=port, c=proc, n=name: self._alive(c, n) and ready(p)
                     and scrape(p, "gateway_gameservers_live").get("") == want,
                     f"{name} with {want} live GameServers", timeout)

    def _alive(self, proc: subprocess.Popen[bytes], name: str) -> bool:
        if proc.poll() is None:
            return True
        log = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        tail = "\n".join(log[-10:])
        raise SystemExit(f"bench: {name} exited with {proc.returncode}:\n{tail}")


class Services:
    """The child processes of one run, each in its own process group; ``stop()`` ends all.

    Services get the caller's environment minus every service setting (so they run on
    their defaults), plus ``LOG_LEVEL`` and whatever ``env`` adds.
    """

    def __init__(self, workdir: Path, log_level: str,
                 env: Mapping[str, str] | None = None) -> None:
        redis_bin = shutil.which("redis-server")
        if redis_bin is None:
            raise SystemExit("bench: needs redis-server on PATH (apt-get install redis-server)")
        self.redis_bin = redis_bin
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("GATEWAY_", "GAMESERVER_", "REDIS_"))
                    and k not in SERVICE_SETTINGS}
        self.env["LOG_LEVEL"] = log_level
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env.update(env or {})
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=log, env=self.env, cwd=ROOT,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        self.started.append(proc)
        return proc

    def redis(self, name: str = "redis") -> int:
        port = free_port()
        self.start(name, [self.redis_bin, "--port", str(port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", str(self.workdir)])
        wait_for(lambda: listening(port), name)
        return port

    def gameserver(self, name: str, redis_port: int, node_id: int,
                   p2p_port: int = 0, mesh_port: int = 0,
                   metrics_port: int = 0, extra: Sequence[str] = (), connection: str = ""
                   ) -> tuple[subprocess.Popen[bytes], int]:
        """``connection``: REDIS_CONNECTION, if not ``127.0.0.1:<redis_port>``."""
        metrics_port = metrics_port or free_port()
        proc = self.start(name, [
            PY, "-m", "gameserver",
            "--redis-connection", connection or f"127.0.0.1:{redis_port}",
            "--node-id", str(node_id), "--p2p-port", str(p2p_port or free_port()),
            "--mesh-port", str(mesh_port or free_port()),
            "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1",
            "--advertise-host", "127.0.0.1", "--bind-host", "127.0.0.1", *extra])
        return proc, metrics_port

    def gateway(self, name: str, redis_port: int, node_id: int, client_port: int = 0,
                p2p_port: int = 0, metrics_port: int = 0, extra: Sequence[str] = (),
                connection: str = "", ws_port: int = 0
                ) -> tuple[subprocess.Popen[bytes], int, int]:
        """``ws_port``: GATEWAY_WS_PORT (0: no WebSocket listener, the default here)."""
        client_port = client_port or free_port()
        metrics_port = metrics_port or free_port()
        proc = self.start(name, [
            PY, "-m", "gateway",
            "--redis-connection", connection or f"127.0.0.1:{redis_port}",
            "--node-id", str(node_id), "--client-host", "127.0.0.1",
            "--client-port", str(client_port), "--p2p-port", str(p2p_port or free_port()),
            "--ws-port", str(ws_port), "--wss-port", "0",
            "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1", *extra])
        return proc, client_port, metrics_port

    def system(self, name: str, gameservers: int, gateways: int) -> System:
        """redis-server, then the GameServers (ids 1..n), then the Gateways (ids 1..m)."""
        system = System(name, self.redis(f"{name}-redis"), self.workdir)
        for node_id in range(1, gameservers + 1):
            proc, metrics_port = self.gameserver(f"{name}-gameserver-{node_id}",
                                                 system.redis_port, node_id)
            system.gameservers[node_id] = proc
            system.gameserver_metrics[node_id] = metrics_port
        for node_id in range(1, gateways + 1):
            proc, client_port, metrics_port = self.gateway(f"{name}-gateway-{node_id}",
                                                           system.redis_port, node_id)
            system.gateways[node_id] = proc
            system.gateway_ports[node_id] = client_port
            system.gateway_metrics[node_id] = metrics_port
        return system

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every process group (last started first), SIGKILL what is left."""
        for proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in reversed(self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group may outlive its leader
            proc.wait()


@contextlib.contextmanager
def running(workdir: Path, log_level: str,
            env: Mapping[str, str] | None = None) -> Iterator[Services]:
    services = Services(workdir, log_level, env)
    try:
        yield services
    finally:
        services.stop()


def throwaway_certificate(workdir: Path) -> list[str]:
    """A CA and a certificate for localhost (trustme, a dev dependency); returns the
    Gateway's TLS flags. The CA file is ``workdir/ca.pem`` (what the load generator trusts)."""
    import trustme  # only --tls needs it

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(workdir / "tls.crt"))
    cert.private_key_pem.write_to_path(str(workdir / "tls.key"))
    return ["--tls-cert-file", str(workdir / "tls.crt"),
            "--tls-key-file", str(workdir / "tls.key")]


def throwaway_curve_key(workdir: Path) -> list[str]:
    """A cluster CURVE key made by ``python -m gameserver keygen``; returns the flags."""
    key = subprocess.run([PY, "-m", "gameserver", "keygen"], capture_output=True, text=True,
                         check=True).stdout
    path = workdir / "cluster.key"
    path.write_text(key)
    return ["--curve-secret-file", str(path)]


@contextlib.contextmanager
def processes(workdir: Path, log_level: str, tls: bool = False,
              curve: bool = False, reuse_port: bool = False) -> Iterator[dict[str, int]]:
    """redis-server, GameServer, Gateway (also on TLS with ``tls``) and the echo server;
    with ``curve`` a second redis-server, GameServer and Gateway whose internal traffic
    uses CURVE (``curve_client``); with ``reuse_port`` two more Gateway processes in front
    of the same GameServer, sharing one client port with SO_REUSEPORT (``gw_pair``).
    Yields their ports (and ``pid_<name>``: process ids)."""
    ports = {name: free_port() for name in (
        "gs_p2p", "gs_mesh", "gs_metrics", "gw_client", "gw_p2p", "gw_metrics", "gw_tls",
        "echo", "gw_pair", "gw_ws")}
    tls_flags = ([*throwaway_certificate(workdir), "--tls-port", str(ports["gw_tls"])]
                 if tls else [])
    with running(workdir, log_level, ECHO_BENCH_ENV) as services:
        ports["redis"] = services.redis()
        ports["pid_redis"] = services.started[-1].pid
        gameserver, _ = services.gameserver("gameserver", ports["redis"], 1, ports["gs_p2p"],
                                            ports["gs_mesh"], ports["gs_metrics"])
        gateway, _, _ = services.gateway("gateway", ports["redis"], 1, ports["gw_client"],
                                         ports["gw_p2p"], ports["gw_metrics"], tls_flags,
                                         ws_port=ports["gw_ws"])
        echo = services.start("echo", [PY, "-m", "test_client.echo_server", "--host",
                                       "127.0.0.1", "--port", str(ports["echo"])])
        ports.update(pid_gateway=gateway.pid, pid_gameserver=gameserver.pid, pid_echo=echo.pid)
        wait_for(lambda: ready(ports["gs_metrics"]), "GameServer")
        wait_for(lambda: ready(ports["gw_metrics"]), "Gateway")
        wait_for(lambda: listening(ports["echo"]), "echo server")
        if reuse_port:
            for index in (1, 2):
                pair, _, metrics_port = services.gateway(
                    f"gateway-pair-{index}", ports["redis"], 1 + index, ports["gw_pair"],
                    extra=["--reuse-port", "true"])
                ports[f"pid_pair_gateway_{index}"] = pair.pid
                wait_for(lambda port=metrics_port: ready(port), f"Gateway pair {index}")
        if curve:
            curve_flags = throwaway_curve_key(workdir)
            redis_port = services.redis("curve-redis")
            curve_gs, gs_metrics = services.gameserver("curve-gameserver", redis_port, 1,
                                                       extra=curve_flags)
            curve_gw, ports["curve_client"], gw_metrics = services.gateway(
                "curve-gateway", redis_port, 1, extra=curve_flags)
            ports.update(pid_curve_gateway=curve_gw.pid, pid_curve_gameserver=curve_gs.pid)
            wait_for(lambda: ready(gs_metrics), "CURVE GameServer")
            wait_for(lambda: ready(gw_metrics), "CURVE Gateway")
        yield ports


def run_load(port: int, connections: int, duration: float, warmup: float, payload: int,
             user_base: int, loadgen_processes: int,
             extra: Sequence[str] = (), watch: Mapping[str, int] | None = None
             ) -> dict[str, Any]:
    """One load-generator run; ``watch``: the processes whose CPU it reports (name -> pid)."""
    args = [PY, "-m", "test_client", "bench", "--host", "127.0.0.1", "--port", str(port),
            "--connections", str(connections), "--duration", str(duration),
            "--warmup", str(warmup), "--payload-bytes", str(payload), "--json", "--quiet",
            "--processes", str(min(loadgen_processes, connections)),
            "--user-id-base", str(user_base), *extra]
    for name, pid in (watch or {}).items():
        args += ["--watch", f"{name}={pid}"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT,
                         timeout=duration + warmup + 120)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        raise SystemExit(f"bench: load generator failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- cluster mode: one load-generator process per target, common start, merged samples ---

def _split_worker(cfg: BenchConfig, start: threading.Barrier,
                  results: multiprocessing.connection.Connection) -> None:
    raise_nofile_limit()
    counters = [0, 0, 0, 0]  # run_worker's progress slots: nobody reads them here

    def wait_for_start() -> None:
        start.wait(timeout=600)

    try:
        result = uvloop.run(run_worker(cfg, 0, cfg.connections, counters, 0, wait_for_start))
    except threading.BrokenBarrierError:
        result = WorkerResult(first_error="aborted before the start")
    except Exception as exc:
        result = WorkerResult(first_error=f"worker failed: {type(exc).__name__}: {exc}")
    results.send(result)
    results.close()


def run_split_load(ports: Sequence[int], connections: int, duration: float, warmup: float,
                   payload: int, user_base: int) -> dict[str, Any]:
    """``connections`` spread over one load-generator process per entry of ``ports``.

    All processes connect, meet at a barrier and start together, so their measured windows
    coincide; msgs/s is the sum, latency percentiles come from all raw samples merged.
    """
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(len(ports) + 1)
    workers: list[tuple[Any, multiprocessing.connection.Connection, BenchConfig]] = []
    base = user_base
    for index, port in enumerate(ports):
        count = connections // len(ports) + (1 if index < connections % len(ports) else 0)
        cfg = BenchConfig(host="127.0.0.1", port=port, connections=count,
                          duration_s=duration, warmup_s=warmup, payload_bytes=payload,
                          user_id_base=base)
        base += count
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_split_worker, args=(cfg, start, sender), daemon=True,
                           name=f"bench-split-{index}")
        proc.start()
        sender.close()
        workers.append((proc, receiver, cfg))
    results: list[WorkerResult] = []
    try:
        try:
            start.wait(timeout=120)
        except threading.BrokenBarrierError:
            start.abort()
        for proc, receiver, _ in workers:
            if receiver.poll(duration + warmup + 60):
                results.append(receiver.recv())
            else:
                results.append(WorkerResult(first_error=f"worker exited ({proc.exitcode})"))
    finally:
        for proc, _, _ in workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    total = BenchConfig(connections=connections, payload_bytes=payload)
    report = build_report(total, len(workers), results)
    report["per_loadgen"] = [
        {"port": cfg.port, "connections": r.connections,
         "msgs_per_s": round(r.messages / r.elapsed_s, 1) if r.elapsed_s else 0.0,
         **summarize_ms(merge_samples([r.latencies]))}
        for (_, _, cfg), r in zip(workers, results, strict=True)]
    return report


def _log_run(round_no: int, target: str, conns: int, result: dict[str, Any]) -> None:
    cpu = f"  cpu: {format_cpu(result['cpu'])}" if "cpu" in result else ""
    print(f"round {round_no} {target:6} conns={conns:5} "
          f"{result['msgs_per_s']:10.0f} msgs/s  p50={result['p50_ms']:.3f}ms "
          f"p99={result['p99_ms']:.3f}ms max={result['max_ms']:.1f}ms "
          f"errors={result['errors']}{cpu}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    import bench_curves  # the sibling script; it imports this one

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", action="store_true",
                        help="compare 1 Gateway x 1 GameServer with 2 x 3 instead of (a)/(b)")
    parser.add_argument("--redis", action="store_true",
                        help="MOVE on one Redis, a 3-master Redis Cluster and with "
                        "REDIS_WAIT_REPLICAS=1 instead (scripts/bench_redis.py)")
    parser.add_argument("--curves", action="store_true",
                        help="the scaling curves instead (scripts/bench_curves.py): (a) and "
                        "(b) against connections (flat out), payload size (with LZ4) and a "
                        "paced game-like load")
    bench_curves.add_arguments(parser)
    parser.add_argument("--rounds", type=int, default=None, help="3 (cluster mode: 5)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", default=None,
                        help="comma-separated counts: 1,100,1000 (cluster mode: 100,1000)")
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument("--loadgen-processes", type=int, default=1,
                        help="default mode only (cluster mode: one per Gateway of 2x3)")
    parser.add_argument("--tls", action="store_true",
                        help="also (c): the full path through the Gateway's TLS port (a "
                        "throwaway certificate), reported against (b)")
    parser.add_argument("--mode", choices=("echo", "move", "login", "idle"), default="echo",
                        help="what (b), (c) and (d) do: ECHO_REQ (default); MOVE_REQ, a state "
                        "change committed to Redis, every answer checked to count moves "
                        "exactly once; or login: connect, LOGIN, LOGOUT, close in a loop per "
                        "connection (msgs/s is then logins/s); (a) is always the raw echo. "
                        "idle: the memory of 10,000 idle logged-in connections instead "
                        "(scripts/bench_idle.py; --rounds, --connections and --json-out pass "
                        "through)")
    parser.add_argument("--returning", action="store_true",
                        help="--mode login: each loop logs the same user in again")
    parser.add_argument("--curve", action="store_true",
                        help="also (d): the full path of a second GameServer and Gateway whose "
                        "internal traffic uses CURVE, reported against (b)")
    parser.add_argument("--transport", choices=("tcp", "ws"), default="tcp",
                        help="ws: also (f), the full path with the clients on the Gateway's "
                        "WebSocket port, reported against (b) over TCP")
    parser.add_argument("--reuse-port", action="store_true",
                        help="also (e): the full path through two Gateway processes sharing "
                        "one client port (GATEWAY_REUSE_PORT) in front of the same "
                        "GameServer, reported against (b)'s one Gateway process")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 5 if args.cluster or args.redis else 2 if args.curves else 3
    if args.curves:
        return bench_curves.run(args)
    if args.mode == "idle":
        import bench_idle  # the sibling script

        return bench_idle.main([
            "--rounds", str(args.rounds), "--log-level", args.log_level,
            *(("--connections", args.connections) if args.connections else ()),
            *(("--json-out", str(args.json_out)) if args.json_out else ())])
    if args.connections is None:
        args.connections = "100,1000" if args.cluster or args.redis else "1,100,1000"
    counts = [int(c) for c in args.connections.split(",")]
    if args.cluster:
        return cluster_main(args, counts)
    if args.redis:
        import bench_redis  # the sibling script

        return bench_redis.run(args, counts)
    runs: list[dict[str, Any]] = []
    user_base = 10_000_000
    with tempfile.TemporaryDirectory(prefix="gb-bench-") as tmp, \
            processes(Path(tmp), args.log_level, args.tls, args.curve,
                      args.reuse_port) as ports:
        targets = {"a_echo": ports["echo"], "b_full": ports["gw_client"]}
        if args.tls:
            targets["c_tls"] = ports["gw_tls"]
        if args.curve:
            targets["d_curve"] = ports["curve_client"]
        if args.reuse_port:
            targets["e_2gw"] = ports["gw_pair"]
        if args.transport == "ws":
            targets["f_ws"] = ports["gw_ws"]
        tls_client = ["--tls-ca", str(Path(tmp) / "ca.pem"), "--tls-server-name", "localhost"]
        #: Whose CPU each target's runs report, besides the load generator's.
        watched = {
            "a_echo": {"echo": ports["pid_echo"]},
            "b_full": {"gateway": ports["pid_gateway"], "gameserver": ports["pid_gameserver"],
                       "redis": ports["pid_redis"]},
            "c_tls": {"gateway": ports["pid_gateway"], "gameserver": ports["pid_gameserver"]},
            "d_curve": {"gateway": ports.get("pid_curve_gateway", 0),
                        "gameserver": ports.get("pid_curve_gameserver", 0)},
            "f_ws": {"gateway": ports["pid_gateway"], "gameserver": ports["pid_gameserver"],
                     "redis": ports["pid_redis"]},
            "e_2gw": {"gateway_1": ports.get("pid_pair_gateway_1", 0),
                      "gateway_2": ports.get("pid_pair_gateway_2", 0),
                      "gameserver": ports["pid_gameserver"], "redis": ports["pid_redis"]},
        }
        for round_no in range(1, args.rounds + 1):
            for conns in counts:
                for target, port in targets.items():
                    user_base += 10_000
                    extra = [*(tls_client if target == "c_tls" else ()),
                             *(("--transport", "ws") if target == "f_ws" else ()),
                             *(("--mode", args.mode) if target != "a_echo" else ()),
                             *(("--returning",) if args.returning and target != "a_echo"
                               else ())]
                    result = run_load(port, conns, args.duration, args.warmup,
                                      args.payload_bytes, user_base, args.loadgen_processes,
                                      extra, watched[target])
                    result.update(round=round_no, target=target)
                    runs.append(result)
                    _log_run(round_no, target, conns, result)
    summary = summarize(runs, counts)
    report = {"machine": machine(), "settings": vars(args) | {"json_out": None},
              "summary": summary, "runs": runs}
    print(markdown(summary, args))
    if args.tls:
        report["tls_summary"] = tls_summary = summarize(runs, counts, ("b_full", "c_tls"))
        print(versus_markdown(tls_summary, "c_tls", "TLS"))
    if args.curve:
        report["curve_summary"] = curve_summary = summarize(runs, counts, ("b_full", "d_curve"))
        print(versus_markdown(curve_summary, "d_curve", "CURVE"))
    if args.reuse_port:
        report["reuse_port_summary"] = pair_summary = summarize(runs, counts,
                                                                ("b_full", "e_2gw"))
        print(versus_markdown(pair_summary, "e_2gw", "2 Gateway processes (SO_REUSEPORT)"))
    if args.transport == "ws":
        report["ws_summary"] = ws_summary = summarize(runs, counts, ("b_full", "f_ws"))
        print(versus_markdown(ws_summary, "f_ws", "WebSocket"))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str))
    return 0


CLUSTER_TARGETS = ("c_1x1", "c_2x3")


def cluster_main(args: argparse.Namespace, counts: list[int]) -> int:
    runs: list[dict[str, Any]] = []
    user_base = 10_000_000
    with tempfile.TemporaryDirectory(prefix="gb-bench-") as tmp, \
            running(Path(tmp), args.log_level, ECHO_BENCH_ENV) as services:
        systems = {"c_1x1": services.system("1x1", gameservers=1, gateways=1),
                   "c_2x3": services.system("2x3", gameservers=3, gateways=2)}
        for system in systems.values():
            system.wait_ready()
        # 1x1: both load-generator processes on its one Gateway; 2x3: one per Gateway.
        ports = {"c_1x1": list(systems["c_1x1"].gateway_ports.values()) * 2,
                 "c_2x3": list(systems["c_2x3"].gateway_ports.values())}
        for round_no in range(1, args.rounds + 1):
            for conns in counts:
                # Alternate which topology goes first, so neither always runs on a machine
                # still busy with the other's teardown.
                order = CLUSTER_TARGETS if round_no % 2 else CLUSTER_TARGETS[::-1]
                for target in order:
                    user_base += 10_000
                    result = run_split_load(ports[target], conns, args.duration,
                                            args.warmup, args.payload_bytes, user_base)
                    result.update(round=round_no, target=target)
                    runs.append(result)
                    _log_run(round_no, target, conns, result)
        sessions = {
            node_id: int(sum(scrape(port, "gameserver_sessions_created_total").values()))
            for node_id, port in systems["c_2x3"].gameserver_metrics.items()}
        for name, system in systems.items():
            for kind, procs in (("GameServer", system.gameservers),
                                ("Gateway", system.gateways)):
                for node_id, proc in procs.items():
                    if proc.poll() is not None:
                        raise SystemExit(f"bench: {name} {kind} {node_id} died "
                                         f"(exit {proc.returncode}); logs in {tmp}")
    summary = summarize(runs, counts, CLUSTER_TARGETS)
    report = {"machine": machine(), "settings": vars(args) | {"json_out": None},
              "sessions_per_gameserver_2x3": sessions, "summary": summary, "runs": runs}
    print(cluster_markdown(summary, runs, sessions, args))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str))
    return 0


def versus_markdown(summary: list[dict[str, Any]], target: str, name: str) -> str:
    """A variant of the full path (TLS clients: (c); CURVE inside: (d)) against (b)."""
    letter = target[0]
    lines = ["", f"| conns | (b) full path msgs/s | p99 ms | ({letter}) {name} msgs/s | "
             f"p99 ms | {letter}/b (min-max) |", "|---:|---:|---:|---:|---:|---|"]
    for row in summary:
        lines.append(
            f"| {row['connections']} | {row['b_full_msgs_per_s']:,.0f} | "
            f"{row['b_full_p99_ms']:.2f} | {row[f'{target}_msgs_per_s']:,.0f} | "
            f"{row[f'{target}_p99_ms']:.2f} | {row['ratio_b_over_a']:.2f} "
            f"({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) |")
    errors = sum(row[f"{target}_errors"] for row in summary)
    lines += ["", f"Errors over the {name} runs: {errors}."]
    return "\n".join(lines)


def summarize(runs: list[dict[str, Any]], counts: list[int],
              targets: tuple[str, str] = ("a_echo", "b_full")) -> list[dict[str, Any]]:
    base, other = targets
    rows = []
    for conns in counts:
        row: dict[str, Any] = {"connections": conns}
        for target in targets:
            mine = [r for r in runs if r["connections"] == conns and r["target"] == target]
            for key in ("msgs_per_s", "p50_ms", "p99_ms", "max_ms"):
                row[f"{target}_{key}"] = statistics.median(r[key] for r in mine)
            row[f"{target}_errors"] = sum(r["errors"] for r in mine)
        ratios, p99_ratios = [], []
        for round_no in sorted({r["round"] for r in runs}):
            a = pick(runs, round_no, conns, base)
            b = pick(runs, round_no, conns, other)
            ratios.append(b["msgs_per_s"] / a["msgs_per_s"] if a["msgs_per_s"] else 0.0)
            p99_ratios.append(b["p99_ms"] / a["p99_ms"] if a["p99_ms"] else 0.0)
        row["ratios"] = ratios
        row["ratio_b_over_a"] = statistics.median(ratios)
        row["ratio_min"], row["ratio_max"] = min(ratios), max(ratios)
        if targets != ("a_echo", "b_full"):
            row["p99_ratios"] = p99_ratios
            row["p99_ratio"] = statistics.median(p99_ratios)
        rows.append(row)
    return rows


def pick(runs: list[dict[str, Any]], round_no: int, conns: int, target: str) -> dict[str, Any]:
    return next(r for r in runs if r["round"] == round_no and r["connections"] == conns
                and r["target"] == target)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}


def markdown(summary: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.rounds} interleaved rounds, {args.duration:g} s each (+{args.warmup:g} s warm-up), "
        f"{args.payload_bytes}-byte payloads, one request in flight per connection; medians.",
        "",
        f"| conns | (a) echo msgs/s | p50 / p99 / max ms | (b) full path "
        f"{ {'move': 'MOVE', 'login': 'LOGIN'}.get(args.mode, 'echo')}s/s | "
        "p50 / p99 / max ms | b/a (min-max) |",
        "|---:|---:|---|---:|---|---|",
    ]
    for row in summary:
        lines.append(
            f"| {row['connections']} | {row['a_echo_msgs_per_s']:,.0f} | "
            f"{row['a_echo_p50_ms']:.2f} / {row['a_echo_p99_ms']:.2f} / "
            f"{row['a_echo_max_ms']:.1f} | {row['b_full_msgs_per_s']:,.0f} | "
            f"{row['b_full_p50_ms']:.2f} / {row['b_full_p99_ms']:.2f} / "
            f"{row['b_full_max_ms']:.1f} | {row['ratio_b_over_a']:.2f} "
            f"({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) |")
    errors = sum(row["a_echo_errors"] + row["b_full_errors"] for row in summary)
    lines.append("")
    lines.append(f"Errors over all runs: {errors}.")
    return "\n".join(lines)


def cluster_markdown(summary: list[dict[str, Any]], runs: list[dict[str, Any]],
                     sessions: Mapping[int, int], args: argparse.Namespace) -> str:
    lines = [
        f"{args.rounds} interleaved rounds, {args.duration:g} s each (+{args.warmup:g} s warm-up), "
        f"{args.payload_bytes}-byte payloads, one request in flight per connection, two "
        "load-generator processes per run; medians.",
        "",
        "| conns | 1x1 msgs/s | p50 / p99 / max ms | 2x3 msgs/s | p50 / p99 / max ms | "
        "2x3/1x1 msgs/s (min-max) | 2x3/1x1 p99 |",
        "|---:|---:|---|---:|---|---|---:|",
    ]
    for row in summary:
        lines.append(
            f"| {row['connections']} | {row['c_1x1_msgs_per_s']:,.0f} | "
            f"{row['c_1x1_p50_ms']:.2f} / {row['c_1x1_p99_ms']:.2f} / "
            f"{row['c_1x1_max_ms']:.1f} | {row['c_2x3_msgs_per_s']:,.0f} | "
            f"{row['c_2x3_p50_ms']:.2f} / {row['c_2x3_p99_ms']:.2f} / "
            f"{row['c_2x3_max_ms']:.1f} | {row['ratio_b_over_a']:.2f} "
            f"({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) | {row['p99_ratio']:.2f} |")
    lines += ["", "Per round, 2x3/1x1 msgs/s:", "",
              "| conns | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |",
              "|---:|" + "---:|" * args.rounds]
    for row in summary:
        lines.append(f"| {row['connections']} | "
                     + " | ".join(f"{r:.2f}" for r in row["ratios"]) + " |")
    errors = sum(row["c_1x1_errors"] + row["c_2x3_errors"] for row in summary)
    connect_errors = sum(r["connect_errors"] for r in runs)
    split = ", ".join(f"node {n}: {c}" for n, c in sorted(sessions.items()))
    lines += ["", f"Errors over all {len(runs)} runs: {errors} (connect errors: "
              f"{connect_errors}). Sessions created per 2x3 GameServer: {split}."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
