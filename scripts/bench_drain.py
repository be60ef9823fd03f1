#!/usr/bin/env python3
"""The drain of docs/BENCHMARKS.md: a GameServer holding 1,000 sessions under MOVE load gets
SIGTERM and hands every session over to another; how long that takes, and whether any client
notices.

Each run starts a private redis-server, GameServer 1 and one Gateway (``scripts/bench.py``
launches them the same way), logs in ``--clients`` ``test_client.GameClient`` instances (all
on node 1, the only one; automatic resume on, as a real client would have it), then starts
GameServer 2 and waits until the Gateway sees it live. Every client loops MOVE (one in
flight, ``--interval`` pause between answers). After ``--before`` seconds node 1 gets SIGTERM
at T0. Measured:

- **drain**: T0 to node 1's exit;
- **handed over**: T0 to node 2 holding every session (its ``gameserver_sessions_active``,
  polled every 10 ms);
- **longest pause** any client saw between two answers from T0 - 1 s on;
- **errors** after T0 (any error answer, timeout or dropped connection) and **resumes** (a
  handover needs none: the Gateway re-pins each socket, the client keeps its connection);
- **exactly once**: when the loops stop each client sends one more MOVE; its ``moves`` must
  be one more than the number of MOVEs answered, and the values seen must have gone 1, 2, 3...

    .venv/bin/python scripts/bench_drain.py                    # 3 runs, 1000 clients
    .venv/bin/python scripts/bench_drain.py --clients 200 --runs 1 --json-out drain.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Services, System, machine, scrape  # the sibling scripts
from bench_failover import Probe, error_kind, final_move, fmt, move_loop

from test_client import GameClient


async def drive(services: Services, system: System, args: argparse.Namespace,
                run_no: int) -> dict[str, Any]:
    (host, port), = system.addresses
    probes = [Probe(i, GameClient(host, port, auto_reconnect=True,
                                  request_timeout=args.request_timeout))
              for i in range(args.clients)]
    for probe in probes:
        probe.client.on_event = probe.on_event
    user_base = 1_000_000 * run_no
    loop = asyncio.get_running_loop()
    try:
        for start in range(0, len(probes), 200):  # the Gateway's accept backlog is no limit
            await asyncio.gather(*(p.client.login(user_base + p.index)
                                   for p in probes[start:start + 200]))
        # The second GameServer joins only now, so every session is on node 1.
        proc, metrics_port = services.gameserver(f"run{run_no}-gameserver-2",
                                                 system.redis_port, 2)
        system.gameservers[2] = proc
        system.gameserver_metrics[2] = metrics_port
        await loop.run_in_executor(None, system.wait_ready)
        stop = asyncio.Event()
        loops = [asyncio.create_task(move_loop(p, stop, args.interval)) for p in probes]
        await asyncio.sleep(args.before)
        draining = system.gameservers[1]
        t0 = time.monotonic()
        os.kill(draining.pid, signal.SIGTERM)
        handed_over_at = exited_at = None
        deadline = t0 + args.timeout
        while time.monotonic() < deadline and (handed_over_at is None or exited_at is None):
            now = time.monotonic()
            if handed_over_at is None:
                held = await loop.run_in_executor(
                    None, lambda: scrape(metrics_port, "gameserver_sessions_active"))
                if held.get("", 0) >= args.clients:
                    handed_over_at = time.monotonic()
            if exited_at is None and draining.poll() is not None:
                exited_at = now
            await asyncio.sleep(0.01)
        await asyncio.sleep(args.after)
        stop.set()
        _, pending = await asyncio.wait(loops, timeout=args.request_timeout + 35)
        for task in pending:
            task.cancel()
        final = await asyncio.gather(*(final_move(p) for p in probes))
    finally:
        await asyncio.gather(*(p.client.close() for p in probes), return_exceptions=True)
    pause = 0.0
    for probe in probes:
        window = [t for t in probe.answers if t >= t0 - 1]
        pause = max([pause, *(b - a for a, b in itertools.pairwise(window))])
    return {
        "clients": args.clients,
        "drain_s": None if exited_at is None else exited_at - t0,
        "exit_code": draining.returncode,
        "handed_over_s": None if handed_over_at is None else handed_over_at - t0,
        "longest_pause_s": pause,
        "errors_after_t0": dict(Counter(error_kind(text) for p in probes
                                        for t, text in p.errors if t >= t0)),
        "resumes": sum(1 for p in probes if p.first_event("reconnected", t0)),
        "moves_answered": sum(len(p.answers) for p in probes),
        "exactly_once_violations": [f"client {p.index}: {text}"
                                    for p, text in zip(probes, final, strict=True) if text],
        "sequence_errors": [p.index for p in probes
                            if p.moves_seen != list(range(1, len(p.moves_seen) + 1))],
        "stuck_loops": len(pending),
    }


def handover_lines(workdir: Path) -> int:
    return sum(log.read_text(errors="replace").count("Session handed over:")
               for log in workdir.glob("*gameserver-1.log"))


def run_once(run_no: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    workdir = root / f"run-{run_no}"
    workdir.mkdir()
    services = Services(workdir, args.log_level, {"CLIENT_RATE_LIMIT": "0"})
    try:
        system = services.system(f"run{run_no}", gameservers=1, gateways=1)
        system.wait_ready()
        result = uvloop.run(drive(services, system, args, run_no))
    finally:
        services.stop()
    result["handover_log_lines"] = handover_lines(workdir)
    result["run"] = run_no
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.1,
                        help="pause after each MOVE answer, seconds (0.1)")
    parser.add_argument("--before", type=float, default=3.0, help="seconds of MOVEs before T0")
    parser.add_argument("--after", type=float, default=2.0,
                        help="seconds of MOVEs after the handover and the exit")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="gb-drain-") as tmp:
        for run_no in range(1, args.runs + 1):
            result = run_once(run_no, args, Path(tmp))
            results.append(result)
            print(f"run {run_no}: {result}", file=sys.stderr, flush=True)
    print(markdown(results, args))
    if args.json_out:
        args.json_out.write_text(json.dumps({"machine": machine(), "settings": vars(args),
                                             "runs": results}, indent=2, default=str))
    bad = any(r["drain_s"] is None or r["handed_over_s"] is None or r["errors_after_t0"]
              or r["exactly_once_violations"] or r["sequence_errors"] or r["exit_code"] != 0
              for r in results)
    return 1 if bad else 0


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{len(results)} runs, {args.clients} clients looping MOVE ({args.interval:g} s pause) "
        "on GameServer 1, one Gateway; SIGTERM to GameServer 1, GameServer 2 takes over.",
        "",
        "| run | handed over s | drain (exit) s | longest gap between answers s (with the "
        f"{args.interval:g} s pause) | errors after SIGTERM | "
        "resumes | MOVEs answered | exactly-once |",
        "|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in results:
        errors = ", ".join(f"{k} x{v}" for k, v in r["errors_after_t0"].items()) or "none"
        once = ("ok" if not r["exactly_once_violations"] and not r["sequence_errors"]
                else f"{len(r['exactly_once_violations'])} violations")
        lines.append(f"| {r['run']} | {fmt(r['handed_over_s'])} | {fmt(r['drain_s'])} | "
                     f"{r['longest_pause_s']:.3f} | {errors} | {r['resumes']} | "
                     f"{r['moves_answered']:,} | {once} |")
    drains = [r["drain_s"] for r in results if r["drain_s"] is not None]
    if drains:
        lines += ["", f"Drain of {args.clients} sessions over {len(drains)} runs: median "
                  f"{statistics.median(drains):.3f} s (min {min(drains):.3f}, max "
                  f"{max(drains):.3f})."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
