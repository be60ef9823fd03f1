#!/usr/bin/env python3
"""The echo benchmark of docs/BENCHMARKS.md, in one run on one machine.

(a) a minimal uvloop ``asyncio.Protocol`` echo server with the same framing: the physical
    limit of one hop on this machine (``python -m test_client.echo_server``);
(b) the full path Client -> Gateway -> GameServer (whole middleware pipeline) -> Gateway ->
    Client, on a private local redis-server.

For each connection count the two targets are measured back to back, and the whole sweep
is repeated ``--rounds`` times, so a noisy neighbour hurts both sides alike; the report
gives medians over rounds and the median of the per-round ratios b/a. Each connection has
exactly one request in flight (closed loop). The load generator is
``python -m test_client bench``.

    .venv/bin/python scripts/bench.py                     # 3 rounds x (1, 100, 1000) x 5 s
    .venv/bin/python scripts/bench.py --rounds 5 --duration 10 --json-out results.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


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


@contextlib.contextmanager
def processes(workdir: Path, log_level: str) -> Iterator[dict[str, int]]:
    """redis-server, GameServer, Gateway and the echo server; yields their ports."""
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("bench: needs redis-server on PATH (apt-get install redis-server)")
    ports = {name: free_port() for name in (
        "redis", "gs_p2p", "gs_mesh", "gs_metrics", "gw_client", "gw_p2p", "gw_metrics", "echo")}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "GAMESERVER_", "REDIS_"))}
    env["LOG_LEVEL"] = log_level
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, args: Sequence[str]) -> None:
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        started.append(subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=ROOT))

    try:
        start("redis", [redis_bin, "--port", str(ports["redis"]), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--dir", str(workdir)])
        redis = f"127.0.0.1:{ports['redis']}"
        wait_for(lambda: listening(ports["redis"]), "redis-server")
        start("gameserver", [PY, "-m", "gameserver", "--redis-connection", redis,
                             "--node-id", "1", "--p2p-port", str(ports["gs_p2p"]),
                             "--mesh-port", str(ports["gs_mesh"]),
                             "--metrics-port", str(ports["gs_metrics"]),
                             "--advertise-host", "127.0.0.1", "--bind-host", "127.0.0.1"])
        start("gateway", [PY, "-m", "gateway", "--redis-connection", redis, "--node-id", "1",
                          "--client-host", "127.0.0.1", "--client-port", str(ports["gw_client"]),
                          "--p2p-port", str(ports["gw_p2p"]),
                          "--metrics-port", str(ports["gw_metrics"])])
        start("echo", [PY, "-m", "test_client.echo_server", "--host", "127.0.0.1",
                       "--port", str(ports["echo"])])
        wait_for(lambda: ready(ports["gs_metrics"]), "GameServer")
        wait_for(lambda: ready(ports["gw_metrics"]), "Gateway")
        wait_for(lambda: listening(ports["echo"]), "echo server")
        yield ports
    finally:
        for proc in reversed(started):
            proc.terminate()
        for proc in reversed(started):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_load(port: int, connections: int, duration: float, warmup: float, payload: int,
             user_base: int, loadgen_processes: int) -> dict[str, Any]:
    args = [PY, "-m", "test_client", "bench", "--host", "127.0.0.1", "--port", str(port),
            "--connections", str(connections), "--duration", str(duration),
            "--warmup", str(warmup), "--payload-bytes", str(payload), "--json", "--quiet",
            "--processes", str(min(loadgen_processes, connections)),
            "--user-id-base", str(user_base)]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT,
                         timeout=duration + warmup + 120)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        raise SystemExit(f"bench: load generator failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", default="1,100,1000")
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument("--loadgen-processes", type=int, default=1)
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.connections.split(",")]
    runs: list[dict[str, Any]] = []
    user_base = 10_000_000
    with tempfile.TemporaryDirectory(prefix="gb-bench-") as tmp, \
            processes(Path(tmp), args.log_level) as ports:
        targets = {"a_echo": ports["echo"], "b_full": ports["gw_client"]}
        for round_no in range(1, args.rounds + 1):
            for conns in counts:
                for target, port in targets.items():
                    user_base += 10_000
                    result = run_load(port, conns, args.duration, args.warmup,
                                      args.payload_bytes, user_base, args.loadgen_processes)
                    result.update(round=round_no, target=target)
                    runs.append(result)
                    print(f"round {round_no} {target:6} conns={conns:5} "
                          f"{result['msgs_per_s']:10.0f} msgs/s  p50={result['p50_ms']:.3f}ms "
                          f"p99={result['p99_ms']:.3f}ms max={result['max_ms']:.1f}ms "
                          f"errors={result['errors']}", file=sys.stderr, flush=True)
    summary = summarize(runs, counts)
    report = {"machine": machine(), "settings": vars(args) | {"json_out": None},
              "summary": summary, "runs": runs}
    print(markdown(summary, args))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str))
    return 0


def summarize(runs: list[dict[str, Any]], counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    for conns in counts:
        row: dict[str, Any] = {"connections": conns}
        for target in ("a_echo", "b_full"):
            mine = [r for r in runs if r["connections"] == conns and r["target"] == target]
            for key in ("msgs_per_s", "p50_ms", "p99_ms", "max_ms"):
                row[f"{target}_{key}"] = statistics.median(r[key] for r in mine)
            row[f"{target}_errors"] = sum(r["errors"] for r in mine)
        ratios = []
        for round_no in sorted({r["round"] for r in runs}):
            a = next(r for r in runs if r["round"] == round_no and r["connections"] == conns
                     and r["target"] == "a_echo")
            b = next(r for r in runs if r["round"] == round_no and r["connections"] == conns
                     and r["target"] == "b_full")
            ratios.append(b["msgs_per_s"] / a["msgs_per_s"] if a["msgs_per_s"] else 0.0)
        row["ratio_b_over_a"] = statistics.median(ratios)
        row["ratio_min"], row["ratio_max"] = min(ratios), max(ratios)
        rows.append(row)
    return rows


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}


def markdown(summary: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.rounds} interleaved rounds, {args.duration:g} s each (+{args.warmup:g} s warm-up), "
        f"{args.payload_bytes}-byte payloads, one request in flight per connection; medians.",
        "",
        "| conns | (a) echo msgs/s | p50 / p99 / max ms | (b) full path msgs/s | "
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


if __name__ == "__main__":
    sys.exit(main())
