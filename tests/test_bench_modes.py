"""``python -m test_client bench --mode move`` against the real system: MOVEs committed to
Redis through the group commit, every answer checked to count exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.support.cli import run_cli
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.users import new_user_id

#: The bench plays flat out: no per-client rate limit.
SYSTEM_ENV = {"CLIENT_RATE_LIMIT": "0"}


async def test_bench_move_mode_counts_every_move_once(system: Cluster) -> None:
    base = new_user_id()
    for _ in range(20):
        new_user_id()  # the bench's users are base .. base + 19
    host, port = system.gateway_address
    done = await asyncio.to_thread(
        run_cli, "bench", "--host", host, "--port", str(port), "--mode", "move",
        "--connections", "20", "--duration", "2", "--warmup", "0.2", "--json",
        "--user-id-base", str(base))
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert report["mode"] == "move" and report["errors"] == 0, report
    assert report["messages"] > 20, report
    # The moves are in Redis: the user logs in again (the bench's session is kicked) and
    # its state counts at least the moves measured for it.
    client = await RawClient.connect(system.gateway_address)
    login = await client.login(base)
    assert login.payload["state"]["moves"] >= 1, login.payload
    await client.close()


def test_bench_move_mode_needs_a_login() -> None:
    done = run_cli("bench", "--mode", "move", "--no-login")
    assert done.returncode == 2
    assert "--mode move needs the login" in done.stderr


async def test_bench_login_mode_logs_in_and_out_new_and_returning_users(
        system: Cluster) -> None:
    host, port = system.gateway_address
    for returning in (False, True):
        base = new_user_id()
        for _ in range(10_000):
            new_user_id()  # room for the new users of every round
        done = await asyncio.to_thread(
            run_cli, "bench", "--host", host, "--port", str(port), "--mode", "login",
            "--connections", "5", "--duration", "1.5", "--json", "--user-id-base", str(base),
            *(["--returning"] if returning else []))
        assert done.returncode == 0, done.stderr
        report = orjson.loads(done.stdout.strip().splitlines()[-1])
        assert report["mode"] == "login" and report["errors"] == 0, report
        assert report["messages"] >= 10, report  # logins measured, each with its LOGOUT
        assert 0 < report["p50_ms"] <= report["p99_ms"], report


async def bench_report(system: Cluster, connections: int, *flags: str) -> dict[str, Any]:
    """Run ``test_client bench --json`` with ``connections`` users of its own against the
    module's system; its report."""
    base = new_user_id()
    for _ in range(connections):
        new_user_id()
    host, port = system.gateway_address
    done = await asyncio.to_thread(
        run_cli, "bench", "--host", host, "--port", str(port), "--connections",
        str(connections), "--json", "--user-id-base", str(base), *flags)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return report


async def test_bench_paced_load_keeps_to_its_rate(system: Cluster) -> None:
    report = await bench_report(system, 20, "--rate", "10", "--duration", "2")
    assert report["errors"] == 0 and report["rate_per_connection"] == 10, report
    # 20 connections x 10/s x 2 s: never more than the pace allows (one request may be
    # in flight at each edge of the window), and not starved either.
    assert 200 <= report["messages"] <= 400 + 2 * 20, report


async def test_bench_lz4_answers_come_compressed_and_match(system: Cluster) -> None:
    report = await bench_report(system, 5, "--payload-bytes", "16384", "--lz4",
                                "--duration", "1")
    assert report["errors"] == 0 and report["messages"] > 0, report
    # Every 16 KB answer is above COMPRESSION_THRESHOLD_BYTES: all came compressed.
    assert report["compressed_answers"] >= report["messages"], report
