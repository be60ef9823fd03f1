#!/usr/bin/env python3
"""The failover gap of docs/BENCHMARKS.md: how long clients of a GameServer killed with
``kill -9`` go unserved, and whether their MOVEs stay exactly-once across it.

Each run starts a private redis-server, 3 GameServers and 2 Gateways (``scripts/bench.py``
launches them the same way), then ``--clients`` ``test_client.GameClient`` instances in this
process, spread over both Gateways, each knowing both (``gateways=[...]``, automatic
resume). Every client loops MOVE (one in flight, ``--interval`` pause between answers) and
the time of every successful answer is recorded. After ``--before`` seconds one GameServer
that holds sessions (``LOGIN_RES node_id``; node 1, 2, 3, 1, ... from run to run) gets
SIGKILL at T0. For each client that was on it, the gap is the time from T0 to its first
successful answer after it resumed on a survivor; the run's failover gap is the largest of
those. ``--after`` seconds after the last affected client is back, the loops stop and each
client sends one more MOVE: its ``moves`` must be exactly one more than the number of MOVEs
answered before (nothing lost, nothing applied twice), and the ``moves`` values a client saw
must have gone 1, 2, 3, ...

The services run on their defaults (NODE_HEARTBEAT_S=1, NODE_TTL_S=5,
DISCOVERY_INTERVAL_S=1, MESH_DEADLINE_S=1) unless ``--fast-registry`` selects the values the
integration tests use (0.25, 2, 0.2) or ``--env NAME=VALUE`` sets others.

    .venv/bin/python scripts/bench_failover.py                  # 5 runs, 100 clients
    .venv/bin/python scripts/bench_failover.py --fast-registry --json-out failover.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Services, System, machine  # the sibling script

from test_client import ClientError, GameClient, RequestError, RequestTimeout

FAST_REGISTRY = {"NODE_HEARTBEAT_S": "0.25", "NODE_TTL_S": "2", "DISCOVERY_INTERVAL_S": "0.2"}
#: The defaults of the settings that matter here (printed with the results).
DEFAULT_REGISTRY = {"NODE_HEARTBEAT_S": "1", "NODE_TTL_S": "5", "DISCOVERY_INTERVAL_S": "1",
                    "MESH_DEADLINE_S": "1"}


@dataclass
class Probe:
    """One client and what it saw."""

    index: int
    client: GameClient
    node_id: int | None = None
    answers: list[float] = field(default_factory=list)
    moves_seen: list[int] = field(default_factory=list)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    #: MOVEs whose outcome is unknown (timed out, connection lost): may have been applied.
    unknown: int = 0
    stopped_by: str = ""

    def on_event(self, name: str, detail: str) -> None:
        if name == "disconnected":  # requests the library will re-send after resuming
            detail += f" pending={self.client.pending_count}"
        self.events.append((time.monotonic(), name, detail))

    def pending_at_drop(self, after: float) -> int:
        detail = next((d for t, n, d in self.events if n == "disconnected" and t > after), "")
        return int(detail.rpartition("pending=")[2] or 0)

    def first_event(self, name: str, after: float) -> float | None:
        return next((t for t, n, _ in self.events if n == name and t > after), None)

    def first_answer(self, after: float) -> float | None:
        return next((t for t in self.answers if t > after), None)


async def move_loop(probe: Probe, stop: asyncio.Event, interval: float) -> None:
    client = probe.client
    step = 0
    while not stop.is_set():
        step += 1
        try:
            result = await client.move(float(probe.index), float(step))
        except RequestError as exc:  # answered with an error: not applied
            probe.errors.append((time.monotonic(), f"RequestError {exc.code}"))
        except RequestTimeout as exc:
            probe.unknown += 1
            probe.errors.append((time.monotonic(), f"RequestTimeout {exc}"))
        except (ClientError, OSError) as exc:
            probe.unknown += 1
            probe.errors.append((time.monotonic(), f"{type(exc).__name__} {exc}"))
            if not client.connected and not client.resuming:
                probe.stopped_by = f"{type(exc).__name__}: {exc}"
                return
        else:
            probe.answers.append(time.monotonic())
            probe.moves_seen.append(int(result["moves"]))
        if interval > 0:
            await asyncio.sleep(interval)


async def drive(system: System, args: argparse.Namespace, run_no: int) -> dict[str, Any]:
    addresses = system.addresses
    probes: list[Probe] = []
    for index in range(args.clients):
        primary = addresses[index % len(addresses)]
        others = [a for a in addresses if a != primary]
        client = GameClient(primary[0], primary[1], gateways=others, auto_reconnect=True,
                            request_timeout=args.request_timeout)
        probe = Probe(index, client)
        client.on_event = probe.on_event
        probes.append(probe)
    user_base = 1_000_000 * run_no
    try:
        await asyncio.gather(*(p.client.login(user_base + p.index) for p in probes))
        stop = asyncio.Event()
        loops = [asyncio.create_task(move_loop(p, stop, args.interval)) for p in probes]
        await asyncio.sleep(args.before)
        for probe in probes:
            probe.node_id = probe.client.node_id
        per_node = Counter(p.node_id for p in probes)
        # Each run kills another node (1, 2, 3, 1, ...), unless that one has no clients.
        victim = sorted(system.gameservers)[(run_no - 1) % len(system.gameservers)]
        if not per_node.get(victim):
            victim = max(sorted(system.gameservers), key=lambda n: per_node.get(n, 0))
        affected = [p for p in probes if p.node_id == victim]
        t0 = time.monotonic()
        os.kill(system.gameservers[victim].pid, signal.SIGKILL)
        # Wait until every affected client got an answer after resuming elsewhere.
        deadline = t0 + args.timeout
        while time.monotonic() < deadline:
            if all(served_again(p, t0) is not None or p.stopped_by for p in affected):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(args.after)
        stop.set()
        _, pending = await asyncio.wait(loops, timeout=args.request_timeout + 35)
        for task in pending:
            task.cancel()
        final = await asyncio.gather(*(final_move(p) for p in probes))
    finally:
        await asyncio.gather(*(p.client.close() for p in probes), return_exceptions=True)
    return judge(probes, affected, victim, per_node, t0, final, len(pending))


def served_again(probe: Probe, t0: float) -> float | None:
    """When ``probe`` was first answered after resuming on a survivor (None: not yet)."""
    resumed = probe.first_event("reconnected", t0)
    return None if resumed is None else probe.first_answer(resumed)


async def final_move(probe: Probe) -> str:
    """One last MOVE: ``moves`` must be the number answered so far plus one."""
    if probe.stopped_by:
        return f"client stopped: {probe.stopped_by}"
    try:
        result = await probe.client.move(-1.0, -1.0)
    except (ClientError, OSError) as exc:
        return f"final MOVE failed: {type(exc).__name__}: {exc}"
    expected = len(probe.answers) + 1
    if result["moves"] != expected:
        return (f"moves={result['moves']} after {len(probe.answers)} answered MOVEs "
                f"(+1 final; {probe.unknown} with unknown outcome)")
    return ""


def judge(probes: list[Probe], affected: list[Probe], victim: int, per_node: Counter[int | None],
          t0: float, final: list[str], stuck_loops: int) -> dict[str, Any]:
    gaps, detect, resume, first = [], [], [], []
    not_back = []
    for probe in affected:
        back = served_again(probe, t0)
        if back is None:
            not_back.append(probe.index)
            continue
        gaps.append(back - t0)
        dropped = probe.first_event("disconnected", t0)
        resumed = probe.first_event("reconnected", t0)
        if dropped is not None and resumed is not None:
            detect.append(dropped - t0)
            resume.append(resumed - dropped)
            first.append(back - resumed)
    unaffected = [p for p in probes if p not in affected]
    # The longest pause an unaffected client saw around the kill (answers in [T0-1, T0+5]).
    stall = 0.0
    for probe in unaffected:
        window = [t for t in probe.answers if t0 - 1 <= t <= t0 + 5]
        stall = max([stall, *(b - a for a, b in itertools.pairwise(window))])
    sequence_errors = [p.index for p in probes
                       if p.moves_seen != list(range(1, len(p.moves_seen) + 1))]
    errors = Counter(error_kind(text) for p in probes for t, text in p.errors if t >= t0)
    errors_before = sum(1 for p in probes for t, _ in p.errors if t < t0)
    return {
        "victim": victim,
        "clients_per_node": {str(k): v for k, v in sorted(per_node.items(), key=str)},
        "affected": len(affected),
        "gap_s": max(gaps) if gaps else None,
        "gap_median_s": statistics.median(gaps) if gaps else None,
        "detect_max_s": max(detect, default=None),
        "detect_median_s": statistics.median(detect) if detect else None,
        "resume_max_s": max(resume, default=None),
        "resume_median_s": statistics.median(resume) if resume else None,
        "first_answer_max_s": max(first, default=None),
        "in_flight_at_drop": sum(1 for p in affected if p.pending_at_drop(t0)),
        "not_back": not_back,
        "unaffected_reconnected": sum(1 for p in unaffected if p.first_event("reconnected", t0)),
        "unaffected_max_stall_s": stall,
        "moves_answered": sum(len(p.answers) for p in probes),
        "unknown_outcome": sum(p.unknown for p in probes),
        "errors_after_kill": dict(errors),
        "errors_before_kill": errors_before,
        "exactly_once_violations": [f"client {p.index}: {text}"
                                    for p, text in zip(probes, final, strict=True) if text],
        "sequence_errors": sequence_errors,
        "stuck_loops": stuck_loops,
        "first_errors": sorted({text for p in probes for _, text in p.errors})[:5],
    }


def error_kind(text: str) -> str:
    """``RequestError SERVER_UNAVAILABLE``, ``RequestTimeout``, ``ConnectionLost``..."""
    words = text.split(" ")
    return " ".join(words[:2]) if words[0] == "RequestError" else words[0]


def log_counts(workdir: Path) -> dict[str, int]:
    """How often the services logged the failover's tell-tale lines."""
    patterns = {"gateway_node_down": "clients told to resume elsewhere",
                "mesh_owner_unreachable": "not reached",
                "sessions_resumed": "Session resumed:",
                # A re-sent request the dead node had applied: answered from the cache.
                "retries_answered_from_cache": "Duplicate packet detected",
                "tracebacks": "Traceback"}
    counts = dict.fromkeys(patterns, 0)
    for log in workdir.glob("*.log"):
        text = log.read_text(errors="replace")
        for key, pattern in patterns.items():
            counts[key] += text.count(pattern)
    return counts


def run_once(run_no: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    workdir = root / f"run-{run_no}"
    workdir.mkdir()
    services = Services(workdir, args.log_level, args.service_env)
    try:
        system = services.system(f"run{run_no}", gameservers=3, gateways=2)
        system.wait_ready()
        result = uvloop.run(drive(system, args, run_no))
        for kind, procs in (("GameServer", system.gameservers), ("Gateway", system.gateways)):
            for node_id, proc in procs.items():
                killed = kind == "GameServer" and node_id == result["victim"]
                if not killed and proc.poll() is not None:
                    result.setdefault("died", []).append(f"{kind} {node_id}")
    finally:
        services.stop()
    result["logs"] = log_counts(workdir)
    result["run"] = run_no
    return result


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.01,
                        help="pause after each MOVE answer, seconds (0.01)")
    parser.add_argument("--before", type=float, default=3.0, help="seconds of MOVEs before T0")
    parser.add_argument("--after", type=float, default=2.0,
                        help="seconds of MOVEs after the last affected client is back")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="give up waiting for affected clients after this many seconds")
    parser.add_argument("--request-timeout", type=float, default=5.0)
    parser.add_argument("--fast-registry", action="store_true",
                        help="NODE_HEARTBEAT_S=0.25 NODE_TTL_S=2 DISCOVERY_INTERVAL_S=0.2 "
                        "(the tests' values) instead of the service defaults")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="one more service setting for every node (repeatable), "
                        "e.g. MESH_DEADLINE_S=0.2")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--keep-logs", type=Path, help="copy the service logs here")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.env):
        parser.error("--env takes NAME=VALUE")
    extra = dict(item.split("=", 1) for item in args.env)
    # Clients play flat out (one MOVE in flight each, far over CLIENT_RATE_LIMIT's default):
    # the gap measured is the failover's, not the rate limit's.
    args.service_env = ({"CLIENT_RATE_LIMIT": "0"}
                        | (FAST_REGISTRY if args.fast_registry else {}) | extra)
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gb-failover-") as tmp:
        for run_no in range(1, args.runs + 1):
            try:
                result = run_once(run_no, args, Path(tmp))
            except Exception as exc:  # one broken run must not hide the others' numbers
                print(f"run {run_no} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed.append(f"run {run_no}: {type(exc).__name__}: {exc}")
                continue
            results.append(result)
            print(f"run {run_no}: killed node {result['victim']} "
                  f"(clients per node {result['clients_per_node']}), "
                  f"{result['affected']} affected ({result['in_flight_at_drop']} with a request "
                  f"in flight), gap {fmt(result['gap_s'])} s "
                  f"(median {fmt(result['gap_median_s'])}; kick {fmt(result['detect_max_s'])}, "
                  f"resume {fmt(result['resume_max_s'])}, first answer "
                  f"{fmt(result['first_answer_max_s'])}), not back {result['not_back']}, "
                  f"errors {result['errors_after_kill']}, "
                  f"exactly-once violations {len(result['exactly_once_violations'])}, "
                  f"logs {result['logs']}", file=sys.stderr, flush=True)
        if args.keep_logs:
            with contextlib.suppress(FileExistsError):
                args.keep_logs.mkdir(parents=True)
            for log in Path(tmp).glob("run-*/*.log"):
                (args.keep_logs / f"{log.parent.name}-{log.name}").write_bytes(log.read_bytes())
    settings = DEFAULT_REGISTRY | args.service_env
    print(markdown(results, args, settings))
    for text in failed:
        print(f"FAILED {text}")
    if args.json_out:
        args.json_out.write_text(json.dumps(
            {"machine": machine(), "settings": vars(args) | {"registry": settings},
             "runs": results, "failed": failed}, indent=2, default=str))
    bad = bool(failed) or any(r["not_back"] or r["exactly_once_violations"] or r["sequence_errors"]
              or r.get("died") for r in results)
    return 1 if bad else 0


def markdown(results: list[dict[str, Any]], args: argparse.Namespace,
             settings: dict[str, str]) -> str:
    gaps = [r["gap_s"] for r in results if r["gap_s"] is not None]
    lines = [
        f"{len(results)} runs, {args.clients} clients looping MOVE ({args.interval:g} s pause), "
        "2 Gateways x 3 GameServers, " + ", ".join(f"{k}={v}" for k, v in settings.items())
        + ".",
        "",
        "| run | killed node | affected (request in flight) | gap s (max) | median | kick | "
        "resume | first answer | unaffected max stall s | errors after kill | exactly-once |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        errors = ", ".join(f"{k} x{v}" for k, v in r["errors_after_kill"].items()) or "none"
        once = ("ok" if not r["exactly_once_violations"] and not r["sequence_errors"]
                else f"{len(r['exactly_once_violations'])} violations")
        lines.append(
            f"| {r['run']} | {r['victim']} | {r['affected']} ({r['in_flight_at_drop']}) | "
            f"{fmt(r['gap_s'])} | "
            f"{fmt(r['gap_median_s'])} | {fmt(r['detect_max_s'])} | {fmt(r['resume_max_s'])} | "
            f"{fmt(r['first_answer_max_s'])} | {r['unaffected_max_stall_s']:.3f} | {errors} | "
            f"{once} |")
    lines.append("")
    if gaps:
        lines.append(f"Failover gap over {len(gaps)} runs: min {min(gaps):.3f} s, median "
                     f"{statistics.median(gaps):.3f} s, max {max(gaps):.3f} s.")
    for r in results:
        for key in ("not_back", "exactly_once_violations", "sequence_errors", "died"):
            if r.get(key):
                lines.append(f"Run {r['run']} {key}: {r[key]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
