#!/usr/bin/env python3
"""Memory of 10,000 idle logged-in connections (docs/BENCHMARKS.md, "10,000 idle connections").

Each round starts a fresh private redis-server, one GameServer and one Gateway (the launcher
of ``scripts/bench.py``: service defaults except ``IDLE_TIMEOUT_S`` and ``LOGIN_TIMEOUT_S``
longer than the run), then:

0. starts the services with a soft ``RLIMIT_NOFILE`` of ``--service-soft-nofile`` (1024, what
   a default shell or container gives them), which they raise to the hard limit themselves;
1. warms both services up with a small idle run (first-use costs such as lazy imports,
   code paths, allocator arenas are not per-connection costs) and waits until the Gateway
   reports no client connection and the GameServer no attached session;
2. reads each service's ``VmRSS`` from ``/proc/PID/status`` (*before*);
3. runs ``python -m test_client bench --idle`` in-process (``test_client.bench.run_bench``):
   ``--connections`` logins spread over ``--workers`` processes; once every connection is
   logged in and idle, reads ``VmRSS`` again (*after*) and the Gateway's and GameServer's
   own gauges (connected clients, attached sessions) to confirm what is being held;
4. holds the connections ``--hold`` seconds, then sends one ECHO on each; records the answers
   and each service's peak RSS (``VmHWM``) over the whole run.

Growth = after - before; per connection = growth / connections held. The report gives every
round and the median over rounds.

    .venv/bin/python scripts/bench_idle.py                         # 3 rounds x 10,000
    .venv/bin/python scripts/bench_idle.py --connections 2000 --rounds 1 --hold 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import System, machine, running, scrape, wait_for  # the sibling script

from servicekit.fdlimit import lowered_soft_limit, raise_nofile_limit
from test_client.bench import BenchConfig, run_bench

#: Service settings of this benchmark: nothing may close an idle connection during the run.
#: CLIENT_RATE_LIMIT stays at its default on purpose: the per-connection token bucket exists
#: only while the limit is on, and it is part of what a connection costs in production.
ENV = {"IDLE_TIMEOUT_S": "3600", "LOGIN_TIMEOUT_S": "3600"}
GATEWAY_TARGET_MB = 60.0


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` figure of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise SystemExit(f"bench_idle: no {field} in /proc/{pid}/status (Linux only)")


def fd_limit_line(log: Path) -> str:
    """What the service logged about its open-file limit (servicekit.fdlimit)."""
    for line in log.read_text(errors="replace").splitlines():
        if "File descriptor limit:" in line:
            return line[line.index("File descriptor limit:"):]
    return "(no 'File descriptor limit:' line in the log)"


def gauges(system: System) -> dict[str, float]:
    gw = next(iter(system.gateway_metrics.values()))
    gs = next(iter(system.gameserver_metrics.values()))
    clients = scrape(gw, "gateway_connected_clients")
    return {"gateway_clients": clients.get('{transport="tcp"}', -1.0),
            "gameserver_sessions": scrape(gs, "gameserver_sessions_active").get("", -1.0)}


def wait_quiet(system: System, timeout: float = 60.0) -> None:
    """Until the warm-up's connections and sessions are gone on both services."""
    wait_for(lambda: all(v == 0 for v in gauges(system).values()),
             "no client connection and no attached session after the warm-up", timeout)


def one_round(args: argparse.Namespace, workdir: Path, user_base: int) -> dict[str, Any]:
    with running(workdir, args.log_level, ENV) as services:
        with lowered_soft_limit(args.service_soft_nofile):
            system = services.system("idle", gameservers=1, gateways=1)
        system.wait_ready()
        fd_lines = {name: fd_limit_line(workdir / f"idle-{name}-1.log")
                    for name in ("gateway", "gameserver")}
        pids = {"gateway": system.gateways[1].pid, "gameserver": system.gameservers[1].pid}
        port = system.gateway_ports[1]

        def config(connections: int, hold: float, base: int) -> BenchConfig:
            return BenchConfig(host="127.0.0.1", port=port, connections=connections,
                               duration_s=hold, processes=min(args.workers, connections),
                               idle=True, ping_interval_s=args.ping_interval,
                               user_id_base=base, connect_concurrency=args.connect_concurrency,
                               connect_timeout_s=60.0, request_timeout_s=60.0)

        if args.warmup_connections:
            run_bench(config(args.warmup_connections, 0.5, user_base - args.warmup_connections),
                      progress=None)
            wait_quiet(system)
        before = {name: status_kb(pid, "VmRSS") for name, pid in pids.items()}
        after: dict[str, int] = {}
        held: dict[str, float] = {}

        def on_ready() -> None:
            after.update({name: status_kb(pid, "VmRSS") for name, pid in pids.items()})
            held.update(gauges(system))

        report = run_bench(config(args.connections, args.hold, user_base),
                           progress=sys.stderr if args.verbose else None, on_ready=on_ready)
        peak = {name: status_kb(pid, "VmHWM") for name, pid in pids.items()}
        for name, proc in (("Gateway", system.gateways[1]),
                           ("GameServer", system.gameservers[1])):
            if proc.poll() is not None:
                raise SystemExit(f"bench_idle: the {name} died (exit {proc.returncode})")
    conns = report["connections"]
    result: dict[str, Any] = {"bench": report, "held": held, "fd_limit": fd_lines}
    for name in pids:
        growth = after.get(name, 0) - before[name]
        result[name] = {"before_kb": before[name], "after_kb": after.get(name, 0),
                        "growth_kb": growth, "peak_kb": peak[name],
                        "kb_per_conn": round(growth / conns, 2) if conns else 0.0}
    return result


def markdown(rounds: list[dict[str, Any]], args: argparse.Namespace) -> str:
    keepalive = f"PING every {args.ping_interval:g} s" if args.ping_interval else "silent"
    lines = [
        f"{len(rounds)} round(s), {args.connections} connections over {args.workers} "
        f"load-generator processes, held {args.hold:g} s ({keepalive}), then one ECHO each.",
        "",
        "| round | service | RSS before MB | RSS after MB | growth MB | KB / conn | peak MB |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for index, result in enumerate(rounds, 1):
        for name in ("gateway", "gameserver"):
            r = result[name]
            lines.append(f"| {index} | {name} | {r['before_kb'] / 1024:.1f} | "
                         f"{r['after_kb'] / 1024:.1f} | {r['growth_kb'] / 1024:.1f} | "
                         f"{r['kb_per_conn']:.2f} | {r['peak_kb'] / 1024:.1f} |")
    lines += ["", "| service | median growth MB | median KB / conn |", "|---|---:|---:|"]
    for name in ("gateway", "gameserver"):
        growth = statistics.median(r[name]["growth_kb"] for r in rounds) / 1024
        per = statistics.median(r[name]["kb_per_conn"] for r in rounds)
        lines.append(f"| {name} | {growth:.1f} | {per:.2f} |")
    lines += ["", f"Services started with a soft open-file limit of {args.service_soft_nofile}; "
              f"they logged: {'; '.join(rounds[0]['fd_limit'].values())}.", ""]
    for index, result in enumerate(rounds, 1):
        b = result["bench"]
        first = f"; first error: {b['first_error']}" if b["first_error"] else ""
        lines.append(
            f"Round {index}: {b['connections']} open ({b['connect_errors']} failed) in "
            f"{b['connect_s']} s; held by the services: {result['held']}; "
            f"{b['dropped']} dropped during the hold; echo answered {b['messages']} "
            f"(p50 {b['p50_ms']} / p99 {b['p99_ms']} / max {b['max_ms']} ms), "
            f"errors {b['errors']}{first}.")
    growth_mb = statistics.median(r["gateway"]["growth_kb"] for r in rounds) / 1024
    verdict = "met" if growth_mb < GATEWAY_TARGET_MB else "NOT met"
    lines.append(f"\nTarget: Gateway growth < {GATEWAY_TARGET_MB:g} MB: {verdict} "
                 f"({growth_mb:.1f} MB).")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4, help="load-generator processes")
    parser.add_argument("--rounds", type=int, default=3, help="fresh services each round")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds held idle")
    parser.add_argument("--ping-interval", type=float, default=0.0,
                        help="PING each connection this often while held (0: silent)")
    parser.add_argument("--warmup-connections", type=int, default=500)
    parser.add_argument("--service-soft-nofile", type=int, default=1024,
                        help="soft RLIMIT_NOFILE the services start with, as from a default "
                        "shell or container (1024); they raise it to the hard limit")
    parser.add_argument("--connect-concurrency", type=int, default=25,
                        help="logins in progress per load-generator process (25: with 4 "
                        "processes, 100 at a time; at 400 at a time on 2 cores a few logins "
                        "outlast REDIS_REQUEST_TIMEOUT_S and are refused SERVER_UNAVAILABLE)")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="gb-bench-idle-") as tmp:
            result = one_round(args, Path(tmp), 20_000_000 + index * 1_000_000)
        rounds.append(result)
        print(f"round {index + 1}: gateway +{result['gateway']['growth_kb'] / 1024:.1f} MB, "
              f"gameserver +{result['gameserver']['growth_kb'] / 1024:.1f} MB, "
              f"{result['bench']['connections']} connections", file=sys.stderr, flush=True)
    print(markdown(rounds, args))
    if args.json_out:
        args.json_out.write_text(json.dumps({"machine": machine(), "settings": vars(args)
                                             | {"json_out": None}, "rounds": rounds},
                                            indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
