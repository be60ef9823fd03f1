"""``python -m test_client`` as a user runs it: real subprocesses against the echo server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, cast

import orjson
import pytest

from protocol import FrameSplitter, MsgType, encode_frame, read_header
from protocol.auth import verify_token
from protocol.frame import HEADER, FrameHeader
from test_client import GameClient
from test_client.shell import execute, split_script
from test_client.testing import EchoServerProcess, free_port
from tests.support.cli import run_cli


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoServerProcess]:
    with EchoServerProcess() as server:
        yield server


def target(server: EchoServerProcess) -> list[str]:
    return ["--host", server.host, "--port", str(server.port)]


def test_mint_token_prints_a_token_the_server_accepts() -> None:
    done = run_cli("mint-token", "--secret", "s3cret", "--user-id", "42", "--ttl", "60")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert verify_token(b"s3cret", 42, token) is None
    assert verify_token(b"s3cret", 43, token) is not None
    assert verify_token(b"other", 42, token) is not None


def test_scripted_session_prints_results_and_succeeds(echo_server: EchoServerProcess) -> None:
    done = run_cli(*target(echo_server), "--user-id", "42", "--run", "echo hi; ping; logout")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith('ok login {"ok":true')
    assert lines[1] == 'ok echo {"text":"hi"}'
    assert lines[2].startswith("ok ping ")
    assert lines[3] == 'ok logout {"ok":true}'


def test_scripted_session_exits_1_when_a_command_fails(echo_server: EchoServerProcess) -> None:
    done = run_cli(*target(echo_server), "--user-id", "42", "--run", "move 1 2; echo after")
    assert done.returncode == 1
    assert "error move UNKNOWN_MESSAGE_TYPE" in done.stdout
    assert 'ok echo {"text":"after"}' in done.stdout  # the script goes on


def test_connection_failure_is_one_clear_line() -> None:
    port = str(free_port())
    done = run_cli("--host", "127.0.0.1", "--port", port, "--user-id", "1", "--run", "ping")
    assert done.returncode == 1
    assert f"cannot connect to any gateway (127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_interactive_session_reads_stdin_until_quit(echo_server: EchoServerProcess) -> None:
    done = run_cli(*target(echo_server), "--user-id", "5", stdin="echo hello there\nhelp\nquit\n")
    assert done.returncode == 0, done.stderr
    assert 'ok echo {"text":"hello there"}' in done.stdout
    assert "commands:" in done.stdout


def test_user_id_is_required_without_a_subcommand() -> None:
    done = run_cli("--run", "ping")
    assert done.returncode == 2
    assert "--user-id is required" in done.stderr


def test_split_script() -> None:
    assert split_script("echo a; ping;;\nmove 1 2 ") == ["echo a", "ping", "move 1 2"]


async def test_bad_command_lines_are_reported_without_a_request() -> None:
    printed: list[str] = []
    client = GameClient()  # never connected: usage errors must not reach the network
    for line in ("move 1", "move a b", "whisper x hi", "frobnicate"):
        outcome = await execute(client, line, printed.append)
        assert not outcome.ok
    assert all(line.split()[0] == "error" and "usage" in line for line in printed)
    assert (await execute(client, "quit", printed.append)).stop


def test_bench_json_against_the_echo_server(echo_server: EchoServerProcess) -> None:
    done = run_cli(
        "bench",
        *target(echo_server),
        "--connections",
        "10",
        "--duration",
        "2",
        "--payload-bytes",
        "100",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout.strip().splitlines()[-1])
    for key in (
        "connections",
        "duration_s",
        "messages",
        "msgs_per_s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "errors",
    ):
        assert key in report
    assert report["connections"] == 10
    assert report["messages"] > 0
    assert report["errors"] == 0
    assert 0 < report["p50_ms"] <= report["p90_ms"] <= report["p99_ms"] <= report["max_ms"]
    assert "msg/s" in done.stderr  # progress lines go to stderr, JSON alone to stdout


def test_bench_splits_connections_over_processes(echo_server: EchoServerProcess) -> None:
    done = run_cli(
        "bench",
        *target(echo_server),
        "--connections",
        "5",
        "--duration",
        "1",
        "--processes",
        "2",
        "--no-login",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    assert "connections 5 open, 0 failed" in done.stdout
    assert "errors      0" in done.stdout


def test_bench_without_a_server_fails_clearly() -> None:
    done = run_cli(
        "bench",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--connections",
        "3",
        "--duration",
        "1",
        "--json",
        "--quiet",
    )
    assert done.returncode == 1
    assert "no connection" in done.stderr
    assert orjson.loads(done.stdout)["connect_errors"] == 3


def test_bench_idle_holds_logged_in_connections_then_echoes_once_on_each(
    echo_server: EchoServerProcess,
) -> None:
    done = run_cli(
        "bench",
        *target(echo_server),
        "--idle",
        "--connections",
        "40",
        "--workers",
        "2",
        "--duration",
        "1",
        "--ping-interval",
        "0.3",
        "--json",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["mode"] == "idle"
    assert report["processes"] == 2
    assert (report["connections"], report["connect_errors"], report["dropped"]) == (40, 0, 0)
    # The first PING round is due before the hold ends, so every connection answered one.
    assert report["pongs"] >= 40
    assert (report["messages"], report["errors"]) == (40, 0)  # one echo per connection
    assert 0 < report["p50_ms"] <= report["max_ms"]


def test_bench_idle_text_report(echo_server: EchoServerProcess) -> None:
    done = run_cli(
        "bench", *target(echo_server), "--idle", "--connections", "6", "--duration", "0",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    assert "connections 6 open, 0 failed" in done.stdout
    assert "held        0 s (silent), 0 dropped" in done.stdout
    assert "echo        6 answered" in done.stdout
    assert "errors      0" in done.stdout


async def bench_against(answer: Callable[[FrameHeader, bytes], bytes],
                        *args: str) -> tuple[dict[str, Any], str]:
    """Run ``bench *args`` against a one-off server that answers each frame with
    ``answer(header, frame)``; returns the JSON report and everything bench printed."""

    class Answering(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)
            self.splitter = FrameSplitter(65536)

        def data_received(self, data: bytes) -> None:
            for frame in self.splitter.feed(data):
                self.transport.write(answer(read_header(frame), frame))

    server = await asyncio.get_running_loop().create_server(Answering, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        done = await asyncio.to_thread(
            run_cli, "bench", "--host", "127.0.0.1", "--port", str(port), "--duration", "1",
            "--warmup", "0", "--json", *args)
    finally:
        server.close()
    return orjson.loads(done.stdout.strip().splitlines()[-1]), done.stdout + done.stderr


async def test_bench_counts_an_answer_that_is_not_its_requests_echo_as_an_error() -> None:
    """A server that answers each ECHO_REQ with the right type and sequence id but the
    first request's payload (a mixed-up answer): every later answer is an error."""
    first_payload: list[bytes] = []

    def mixed_up(header: FrameHeader, frame: bytes) -> bytes:
        if not first_payload:
            first_payload.append(frame[HEADER.size:])
        return encode_frame(MsgType.ECHO_RES, header.sequence_id, first_payload[0])

    report, output = await bench_against(mixed_up, "--no-login", "--connections", "2")
    assert report["errors"] > 0 and report["messages"] <= 2, report  # at most the first each
    assert "ECHO_RES payload is not the request's" in output, report


def test_bench_reports_cpu_of_watched_processes_over_the_window(
        echo_server: EchoServerProcess) -> None:
    """The machine's idle share and each process's cores over the measured window: how a
    stall (cores idle while requests wait) shows beside the msgs/s."""
    pid = echo_server.proc.pid
    done = run_cli("bench", *target(echo_server), "--connections", "20", "--duration", "2",
                   "--warmup", "0.5", "--json", "--watch", f"echo={pid}")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout.strip().splitlines()[-1])
    cpu = report["cpu"]
    assert set(cpu) == {"loadgen", "echo", "idle_share", "busy_cores"}
    # Both sides of a flat-out echo work (the load generator is busy most of the window).
    assert cpu["loadgen"] > 0.2 and cpu["echo"] > 0.05, cpu
    assert 0 <= cpu["idle_share"] <= 1 and cpu["busy_cores"] >= cpu["loadgen"] - 0.1, cpu
    text = run_cli("bench", *target(echo_server), "--connections", "5", "--duration", "1",
                   "--watch", f"echo={pid}")
    assert text.returncode == 0, text.stderr
    assert "cpu         loadgen " in text.stdout and "% idle" in text.stdout


def test_bench_refuses_a_malformed_watch() -> None:
    done = run_cli("bench", "--watch", "echo")
    assert done.returncode == 2
    assert "expected NAME=PID, got 'echo'" in done.stderr


async def test_bench_move_mode_counts_a_move_applied_twice_as_an_error() -> None:
    """A server whose every MOVE_RES says ``moves: 1``: the first answer is right (the
    login said 0), every later one is not "one more" and is an error."""

    def stuck_at_one(header: FrameHeader, frame: bytes) -> bytes:
        if header.msg_type == MsgType.LOGIN_REQ:
            return encode_frame(MsgType.LOGIN_RES, header.sequence_id, orjson.dumps(
                {"ok": True, "state": {"x": 0, "y": 0, "moves": 0}}))
        return encode_frame(MsgType.MOVE_RES, header.sequence_id, orjson.dumps(
            {"x": 12.5, "y": -3.25, "moves": 1}))

    report, output = await bench_against(stuck_at_one, "--mode", "move", "--connections", "1")
    assert report["errors"] > 0 and report["messages"] <= 1, report
    assert "MOVE_RES is not moves 2" in output, report
