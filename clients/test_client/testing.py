"""Helpers for tests: run the echo server as a real subprocess and know when it listens.

Readiness is a condition (a TCP connect succeeds) polled against a deadline, never a fixed
sleep, so tests are as fast as the machine allows and fail with a clear message when slow.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from types import TracebackType
from typing import Self


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's choice for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_listening(
    host: str, port: int, timeout_s: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll TCP connects until one succeeds; raise early if ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}") from exc
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s") from exc
            time.sleep(0.02)  # poll interval, not synchronisation: the loop checks the condition


class EchoServerProcess:
    """``python -m test_client.echo_server`` on a free port, as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self, timeout_s: float = 10.0) -> Self:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "test_client.echo_server",
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until_listening(self.host, self.port, timeout_s, self.proc)
        except RuntimeError as exc:
            stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"echo server failed to start: {exc}\n{stderr}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            with contextlib.suppress(OSError):
                proc.stderr.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
