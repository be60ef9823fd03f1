"""The scripts that regenerate figures of docs/BENCHMARKS.md, run with tiny settings against
the real system: ``scripts/bench.py --curves --plot`` (every sweep, and the PNG), ``--redis``
and ``scripts/bench_drain.py``. These check that they work, never how fast anything is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def test_curves_run_every_sweep_and_draw_the_plot(tmp_path: Path) -> None:
    png, report = tmp_path / "curves.png", tmp_path / "curves.json"
    done = subprocess.run(
        [sys.executable, "scripts/bench.py", "--curves", "--rounds", "1", "--duration", "0.5",
         "--warmup", "0", "--curve-connections", "1,4", "--curve-payloads", "2048",
         "--curve-rates", "5", "--curve-paced-connections", "10", "--plot", str(png),
         "--json-out", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for title in ("**connections**", "**payload**", "**paced** (10 connections"):
        assert title in done.stdout, done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = orjson.loads(report.read_bytes())["runs"]
    # Every point on both targets, every answer checked, none wrong.
    assert sorted((r["sweep"], r["x"], r["target"]) for r in runs) == sorted(
        (sweep, x, target) for sweep, x in (("connections", 1), ("connections", 4),
                                            ("payload", 2048), ("paced", 5))
        for target in ("a_echo", "b_full"))
    assert all(r["errors"] == 0 and r["messages"] > 0 for r in runs), runs
    # The full path's 2 KB answers came LZ4-compressed and still matched their requests.
    payload_run = next(r for r in runs if r["sweep"] == "payload" and r["target"] == "b_full")
    assert payload_run["compressed_answers"] >= payload_run["messages"]


def test_drain_benchmark_hands_every_session_over(tmp_path: Path) -> None:
    """``scripts/bench_drain.py``: SIGTERM to a GameServer holding every session under MOVE
    load; it must exit 0 with each session handed over, no client error, exactly once."""
    report = tmp_path / "drain.json"
    done = subprocess.run(
        [sys.executable, "scripts/bench_drain.py", "--runs", "1", "--clients", "30",
         "--before", "0.5", "--after", "0.3", "--json-out", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = orjson.loads(report.read_bytes())["runs"]
    assert run["handover_log_lines"] == 30 and run["resumes"] == 0, run
    assert run["errors_after_t0"] == {} and run["exactly_once_violations"] == [], run


def test_redis_benchmark_measures_moves_on_all_three_set_ups(tmp_path: Path) -> None:
    """``scripts/bench.py --redis``: MOVE on one Redis, a 3-master Redis Cluster and with
    REDIS_WAIT_REPLICAS=1, every answer checked exactly-once, none wrong."""
    report = tmp_path / "redis.json"
    done = subprocess.run(
        [sys.executable, "scripts/bench.py", "--redis", "--rounds", "1", "--duration", "0.5",
         "--warmup", "0", "--connections", "4", "--json-out", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "(c) 3-master cluster" in done.stdout and "(w) WAIT 1 replica" in done.stdout
    runs = orjson.loads(report.read_bytes())["runs"]
    assert sorted(r["target"] for r in runs) == ["r_cluster", "r_standalone", "r_wait"]
    assert all(r["errors"] == 0 and r["messages"] > 0 for r in runs), runs
