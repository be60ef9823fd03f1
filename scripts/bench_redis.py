#!/usr/bin/env python3
"""MOVE (exactly-once, committed to Redis) on three Redis set-ups, in one run on one machine.

Three topologies of one Gateway and one GameServer, started side by side, each on its own
Redis:

(s) **standalone**: one ``redis-server``, as by default;
(c) **cluster**: a 3-master Redis Cluster (``redis-cli --cluster create``), the services in
    ``REDIS_MODE=cluster`` (each tick's commit is one call per hash slot, one pipeline per
    master);
(w) **wait**: one ``redis-server`` with one replica, the GameServer with
    ``REDIS_WAIT_REPLICAS=1`` (each tick's commit waits for ``WAIT 1``).

For each connection count the three are measured back to back, in an order that rotates per
round, and the sweep is repeated ``--rounds`` times; the report gives medians and the median
of the per-round ratios against (s). Every MOVE answer is checked to count moves exactly
once (the load generator's ``--mode move``). No persistence anywhere (the set-ups differ
only in what is measured).

    .venv/bin/python scripts/bench.py --redis            # 5 rounds x (100, 1000) x 5 s
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import (  # the sibling script
    ECHO_BENCH_ENV,
    Services,
    _log_run,
    free_port,
    listening,
    machine,
    ready,
    run_load,
    running,
    summarize,
    wait_for,
)

TARGETS = ("r_standalone", "r_cluster", "r_wait")
NAMES = {"r_standalone": "(s) standalone", "r_cluster": "(c) 3-master cluster",
         "r_wait": "(w) WAIT 1 replica"}


def redis_node(services: Services, name: str, extra: Sequence[str] = ()) -> int:
    port = free_port()
    directory = services.workdir / name
    directory.mkdir()
    services.start(name, [services.redis_bin, "--port", str(port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", str(directory),
                          "--repl-diskless-sync-delay", "0", *extra])
    wait_for(lambda: listening(port), name)
    return port


def redis_cluster(services: Services, masters: int = 3) -> str:
    """``masters`` cluster nodes joined with ``redis-cli --cluster create``; the seeds."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise SystemExit("bench: --redis needs redis-cli on PATH (apt-get install redis-tools)")
    ports = [redis_node(services, f"cluster-node-{n}", [
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-port", str(free_port())]) for n in range(masters)]
    seeds = [f"127.0.0.1:{port}" for port in ports]
    subprocess.run([cli, "--cluster", "create", *seeds, "--cluster-yes"], check=True,
                   capture_output=True, timeout=60)

    def all_ok() -> bool:
        for port in ports:
            out = subprocess.run([cli, "-p", str(port), "cluster", "info"], text=True,
                                 capture_output=True, timeout=5).stdout
            if "cluster_state:ok" not in out:
                return False
        return True

    wait_for(all_ok, "the Redis Cluster")
    return ",".join(seeds)


def replicated_redis(services: Services) -> str:
    master = redis_node(services, "wait-master")
    replica = redis_node(services, "wait-replica", ["--replicaof", "127.0.0.1", str(master)])
    cli = shutil.which("redis-cli") or "redis-cli"

    def online() -> bool:
        out = subprocess.run([cli, "-p", str(master), "info", "replication"], text=True,
                             capture_output=True, timeout=5).stdout
        return "state=online" in out and f"port={replica}" in out

    wait_for(online, "the replica")
    return f"127.0.0.1:{master}"


def topology(services: Services, name: str, connection: str,
             flags: Sequence[str] = (), gameserver_flags: Sequence[str] = ()
             ) -> tuple[int, dict[str, int]]:
    """One GameServer and one Gateway on ``connection``; the Gateway's client port and the
    pids whose CPU the runs report."""
    gameserver, gs_metrics = services.gameserver(
        f"{name}-gameserver", 0, 1, extra=[*flags, *gameserver_flags], connection=connection)
    gateway, client_port, gw_metrics = services.gateway(f"{name}-gateway", 0, 1,
                                                        extra=flags, connection=connection)
    for port, what in ((gs_metrics, f"{name} GameServer"), (gw_metrics, f"{name} Gateway")):
        wait_for(lambda p=port: ready(p), what)
    return client_port, {"gateway": gateway.pid, "gameserver": gameserver.pid}


def run(args: argparse.Namespace, counts: list[int]) -> int:
    runs: list[dict[str, Any]] = []
    user_base = 10_000_000
    with tempfile.TemporaryDirectory(prefix="gb-bench-redis-") as tmp, \
            running(Path(tmp), args.log_level, ECHO_BENCH_ENV) as services:
        ports, watched = {}, {}
        for target, connection, flags, gameserver_flags in (
                ("r_standalone", f"127.0.0.1:{redis_node(services, 'standalone')}", (), ()),
                ("r_cluster", redis_cluster(services), ("--redis-mode", "cluster"), ()),
                ("r_wait", replicated_redis(services), (), ("--redis-wait-replicas", "1"))):
            ports[target], watched[target] = topology(services, target, connection, flags,
                                                      gameserver_flags)
        for round_no in range(1, args.rounds + 1):
            for conns in counts:
                shift = round_no % len(TARGETS)
                for target in TARGETS[shift:] + TARGETS[:shift]:
                    user_base += 10_000
                    result = run_load(ports[target], conns, args.duration, args.warmup,
                                      args.payload_bytes, user_base, args.loadgen_processes,
                                      ["--mode", "move"], watched[target])
                    result.update(round=round_no, target=target)
                    runs.append(result)
                    _log_run(round_no, target, conns, result)
    versus = {other: summarize(runs, counts, ("r_standalone", other))
              for other in ("r_cluster", "r_wait")}
    print(report_markdown(versus, runs, args))
    if args.json_out:
        args.json_out.write_text(json.dumps(
            {"machine": machine(), "settings": vars(args) | {"json_out": None},
             "versus_standalone": versus, "runs": runs}, indent=2, default=str))
    return 0


def report_markdown(versus: dict[str, list[dict[str, Any]]], runs: list[dict[str, Any]],
                    args: argparse.Namespace) -> str:
    lines = [
        f"{args.rounds} interleaved rounds, {args.duration:g} s each (+{args.warmup:g} s "
        "warm-up), MOVE (exactly-once), one request in flight per connection; medians, "
        "ratios are medians of per-round ratios against (s).", "",
        "| conns | set-up | MOVEs/s | p50 / p99 ms | vs (s) (min-max) | p99 vs (s) |",
        "|---:|---|---:|---|---|---:|"]
    for index, row in enumerate(versus["r_cluster"]):
        conns = row["connections"]
        lines.append(f"| {conns} | {NAMES['r_standalone']} | "
                     f"{row['r_standalone_msgs_per_s']:,.0f} | "
                     f"{row['r_standalone_p50_ms']:.2f} / {row['r_standalone_p99_ms']:.2f} "
                     "| 1 | 1 |")
        for other in ("r_cluster", "r_wait"):
            mine = versus[other][index]
            lines.append(
                f"| {conns} | {NAMES[other]} | {mine[f'{other}_msgs_per_s']:,.0f} | "
                f"{mine[f'{other}_p50_ms']:.2f} / {mine[f'{other}_p99_ms']:.2f} | "
                f"{mine['ratio_b_over_a']:.2f} ({mine['ratio_min']:.2f}-"
                f"{mine['ratio_max']:.2f}) | {mine['p99_ratio']:.2f} |")
    errors = sum(r["errors"] for r in runs)
    lines += ["", f"Errors over all {len(runs)} runs: {errors}."]
    return "\n".join(lines)
