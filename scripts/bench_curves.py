#!/usr/bin/env python3
"""Scaling curves of docs/BENCHMARKS.md: the raw echo (a) and the full path (b) side by side.

Three sweeps, each point measured on (a) and (b) back to back, the whole set repeated
``--rounds`` times (medians over rounds), one load-generator process, every answer checked:

- **connections**: 1, 10, 100, 1000, 5000 connections, one request in flight each (flat out),
  64-byte payloads: throughput, p50 and p99 against the number of connections;
- **payload**: 64 B, 1 KB and 16 KB payloads at 100 connections; the full path's sessions
  accept LZ4, so answers above ``COMPRESSION_THRESHOLD_BYTES`` (1 KB) come compressed (the
  raw echo has no compression: it returns the bytes it got);
- **paced**: a game-like load, 2,000 connections each sending 5, 10 or 20 requests a second
  (one in flight), with latency counted from when each request was due: what a player sees
  at that load, not at saturation.

``--plot FILE.png`` draws all three as one figure with matplotlib (a dev dependency), (a)
and (b) on the same axes; the JSON of every run goes to ``--json-out``.

    .venv/bin/python scripts/bench.py --curves --plot docs/img/bench-curves.png   # ~8 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import format_cpu, machine, processes, run_load  # the sibling script

TARGETS = ("a_echo", "b_full")
LABELS = {"a_echo": "(a) raw echo: the physical limit", "b_full": "(b) full path"}
CONNECTIONS = (1, 10, 100, 1000, 5000)
PAYLOADS = (64, 1024, 16384)
PAYLOAD_CONNECTIONS = 100
PACED_CONNECTIONS = 2000
PACED_RATES = (5.0, 10.0, 20.0)


def points(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (sweep, x) point of one round, in the order they are measured."""
    out: list[dict[str, Any]] = []
    for conns in args.curve_connections:
        out.append({"sweep": "connections", "x": conns, "connections": conns, "payload": 64})
    for payload in args.curve_payloads:
        out.append({"sweep": "payload", "x": payload, "connections": PAYLOAD_CONNECTIONS,
                    "payload": payload})
    for rate in args.curve_rates:
        out.append({"sweep": "paced", "x": rate, "connections": args.curve_paced_connections,
                    "payload": 64, "rate": rate})
    return out


def run(args: argparse.Namespace) -> int:
    runs: list[dict[str, Any]] = []
    user_base = 20_000_000
    with tempfile.TemporaryDirectory(prefix="gb-curves-") as tmp, \
            processes(Path(tmp), args.log_level) as ports:
        port = {"a_echo": ports["echo"], "b_full": ports["gw_client"]}
        watched = {
            "a_echo": {"echo": ports["pid_echo"]},
            "b_full": {"gateway": ports["pid_gateway"], "gameserver": ports["pid_gameserver"]},
        }
        for round_no in range(1, args.rounds + 1):
            for point in points(args):
                for target in TARGETS:
                    user_base += 10_000
                    extra: list[str] = []
                    if "rate" in point:
                        extra += ["--rate", str(point["rate"])]
                    if target == "b_full" and point["sweep"] == "payload":
                        extra.append("--lz4")
                    result = run_load(port[target], point["connections"], args.duration,
                                      args.warmup, point["payload"], user_base,
                                      args.loadgen_processes, extra, watched[target])
                    result.update(point, round=round_no, target=target)
                    runs.append(result)
                    _log(result)
    summary = summarize(runs)
    print(markdown(summary))
    if args.json_out:
        args.json_out.write_text(json.dumps(
            {"machine": machine(), "settings": vars(args) | {"json_out": None, "plot": None},
             "summary": summary, "runs": runs}, indent=2, default=str))
    if args.plot:
        plot(summary, args.plot)
        print(f"\nplot: {args.plot}")
    errors = sum(r["errors"] + r["connect_errors"] for r in runs)
    return 1 if errors else 0


def _log(result: dict[str, Any]) -> None:
    cpu = f"  cpu: {format_cpu(result['cpu'])}" if "cpu" in result else ""
    print(f"round {result['round']} {result['sweep']:11} x={result['x']:<6g} "
          f"{result['target']:6} {result['msgs_per_s']:9.0f} msgs/s  "
          f"p50={result['p50_ms']:.2f}ms p99={result['p99_ms']:.2f}ms "
          f"errors={result['errors']}{cpu}", flush=True)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over rounds per (sweep, x, target)."""
    rows: list[dict[str, Any]] = []
    keys = sorted({(r["sweep"], r["x"]) for r in runs},
                  key=lambda k: (("connections", "payload", "paced").index(k[0]), k[1]))
    for sweep, x in keys:
        row: dict[str, Any] = {"sweep": sweep, "x": x}
        for target in TARGETS:
            mine = [r for r in runs if (r["sweep"], r["x"], r["target"]) == (sweep, x, target)]
            row["connections"] = mine[0]["connections"]
            for key in ("msgs_per_s", "p50_ms", "p99_ms"):
                row[f"{target}_{key}"] = statistics.median(r[key] for r in mine)
            row[f"{target}_errors"] = sum(r["errors"] + r["connect_errors"] for r in mine)
            row[f"{target}_idle_share"] = statistics.median(
                r["cpu"]["idle_share"] for r in mine if "cpu" in r) if any(
                "cpu" in r for r in mine) else None
        rows.append(row)
    return rows


def markdown(summary: list[dict[str, Any]]) -> str:
    titles = {
        "connections": ("conns", "flat out, 64-byte payloads"),
        "payload": ("payload bytes", f"{PAYLOAD_CONNECTIONS} connections, flat out; (b) with LZ4"),
        "paced": ("requests/s per connection",
                  "paced, latency from when each was due"),
    }
    out: list[str] = []
    for sweep, (x_name, note) in titles.items():
        rows = [r for r in summary if r["sweep"] == sweep]
        if not rows:
            continue
        if sweep == "paced":
            note = f"{rows[0]['connections']} connections, {note}"
        out += ["", f"**{sweep}** ({note}):", "",
                f"| {x_name} | (a) msgs/s | (a) p50 / p99 ms | (b) msgs/s | (b) p50 / p99 ms "
                "| b/a msgs/s | (b) machine idle |",
                "|---:|---:|---|---:|---|---:|---:|"]
        for r in rows:
            ratio = r["b_full_msgs_per_s"] / r["a_echo_msgs_per_s"] if r["a_echo_msgs_per_s"] \
                else 0.0
            idle = r["b_full_idle_share"]
            out.append(
                f"| {r['x']:g} | {r['a_echo_msgs_per_s']:,.0f} | "
                f"{r['a_echo_p50_ms']:.2f} / {r['a_echo_p99_ms']:.2f} | "
                f"{r['b_full_msgs_per_s']:,.0f} | "
                f"{r['b_full_p50_ms']:.2f} / {r['b_full_p99_ms']:.2f} | {ratio:.2f} | "
                f"{'' if idle is None else f'{100 * idle:.0f}%'} |")
        errors = sum(r["a_echo_errors"] + r["b_full_errors"] for r in rows)
        out += ["", f"Errors: {errors}."]
    return "\n".join(out)


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """One figure, a row per sweep: msgs/s on the left, p50 and p99 on the right; (a) and
    (b) on the same axes."""
    import matplotlib  # a dev dependency: only plotting needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [s for s in ("connections", "payload", "paced")
              if any(r["sweep"] == s for r in summary)]
    x_labels = {"connections": "connections (one request in flight each)",
                "payload": f"payload bytes ({PAYLOAD_CONNECTIONS} connections; (b) with LZ4)",
                "paced": "requests/s per connection ({} connections, paced)"}
    colours = {"a_echo": "tab:grey", "b_full": "tab:blue"}
    fig, axes = plt.subplots(len(sweeps), 2, figsize=(12, 3.6 * len(sweeps)), squeeze=False)
    for row_axes, sweep in zip(axes, sweeps, strict=True):
        rows = [r for r in summary if r["sweep"] == sweep]
        xs = [r["x"] for r in rows]
        throughput, latency = row_axes
        for target in TARGETS:
            colour = colours[target]
            throughput.plot(xs, [r[f"{target}_msgs_per_s"] for r in rows], "o-",
                            color=colour, label=LABELS[target])
            latency.plot(xs, [r[f"{target}_p50_ms"] for r in rows], "o-", color=colour,
                         label=f"{LABELS[target][:3]} p50")
            latency.plot(xs, [r[f"{target}_p99_ms"] for r in rows], "s--", color=colour,
                         label=f"{LABELS[target][:3]} p99")
        for ax in row_axes:
            ax.set_xscale("log")
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
            ax.set_xlabel(x_labels[sweep].format(rows[0]["connections"]))
            ax.grid(True, alpha=0.3)
        throughput.set_ylabel("msgs/s")
        throughput.set_ylim(bottom=0)
        latency.set_ylabel("latency ms (log)")
        latency.set_yscale("log")
        throughput.legend(fontsize=8)
        latency.legend(fontsize=8)
    fig.suptitle("Raw echo (a) and full path (b) on one 2-core machine, medians over rounds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--curve-connections", type=_ints, default=CONNECTIONS,
                        help="--curves: connection counts (1,10,100,1000,5000)")
    parser.add_argument("--curve-payloads", type=_ints, default=PAYLOADS,
                        help="--curves: payload sizes in bytes (64,1024,16384)")
    parser.add_argument("--curve-rates", type=_floats, default=PACED_RATES,
                        help=f"--curves: paced requests/s per connection, {PACED_CONNECTIONS} "
                        "connections (5,10,20)")
    parser.add_argument("--curve-paced-connections", type=int, default=PACED_CONNECTIONS,
                        help=f"--curves: connections of the paced load ({PACED_CONNECTIONS})")
    parser.add_argument("--plot", type=Path,
                        help="--curves: draw the curves into this PNG (needs matplotlib, a dev "
                        "dependency)")


def _ints(text: str) -> Sequence[int]:
    return tuple(int(v) for v in text.split(",") if v)


def _floats(text: str) -> Sequence[float]:
    return tuple(float(v) for v in text.split(",") if v)
