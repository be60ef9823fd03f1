"""Real service processes for integration tests: start, wait until ready, stop, read logs.

Every test that talks to the Gateway or the GameServer runs them as separate OS processes
(``python -m gateway`` / ``python -m gameserver``) exactly as a deployment would, so that
start-up, signal handling, config parsing and logging are tested along with the protocol.
Each process writes stdout and stderr to one log file under pytest's ``tmp_path``; a failure
message always carries the tail of that log, because "not ready after 20 s" alone says
nothing about why.

Every child started here is recorded; :func:`stop_all_processes` (also run at interpreter
exit) kills whatever a crashed fixture left behind, so a failing test never leaks a server
that then holds a port for the next one.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from tests.support.waiting import WaitTimeout, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Base environment additions for every service process.
BASE_ENV: dict[str, str] = {
    # Log lines must reach the file as they are written, not when a buffer fills up, or
    # wait_for_log() would wait for text that is already "printed".
    "PYTHONUNBUFFERED": "1",
    "PYTHONFAULTHANDLER": "1",
}


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()  # looked up before any fork: the child must not load libraries
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: on Linux, the child gets SIGKILL when the test process dies.

    Fixture teardown and atexit cover every ordinary failure; this covers pytest itself being
    SIGKILLed (an editor's "stop", the OOM killer), which would otherwise leave servers
    holding ports in their own sessions. Linux ties this to the *thread* that forked, so
    start services from the main thread (as fixtures and tests do).
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ServiceFailed(AssertionError):
    """A service died, did not become ready, or did not exit when asked (with its log tail)."""


# --- bookkeeping of every child process, for cleanup after crashes -----------------------

_children_lock = threading.Lock()
_children: set[subprocess.Popen[bytes]] = set()
_live_services: list[ServiceProcess] = []


def track_child(proc: subprocess.Popen[bytes]) -> None:
    """Remember ``proc`` so :func:`stop_all_processes` can kill it if nobody else does."""
    with _children_lock:
        _children.add(proc)


def untrack_child(proc: subprocess.Popen[bytes]) -> None:
    with _children_lock:
        _children.discard(proc)



def stop_child(proc: subprocess.Popen[bytes], timeout: float,
               send_term: Callable[[], None]) -> None:
    """Ask a child to stop (``send_term``), wait up to ``timeout``, SIGKILL after that;
    then forget it. A no-op for a child that has already exited."""
    if proc.poll() is None:
        send_term()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    untrack_child(proc)


def stop_all_processes() -> None:
    """SIGKILL every child process started by these helpers that is still running.

    The last line of defence (atexit, session teardown): fixtures stop their own processes
    gracefully, this only catches what an exception or a crashed fixture left behind.
    """
    with _children_lock:
        children = list(_children)
        _children.clear()
    for proc in children:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    for proc in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


atexit.register(stop_all_processes)


def live_services() -> list[ServiceProcess]:
    """Service processes started and not yet disposed of (for failure reports)."""
    with _children_lock:
        return list(_live_services)


# --- environment --------------------------------------------------------------------------


def service_env_names() -> set[str]:
    """Every environment variable the Gateway or the GameServer reads as a setting.

    Tests strip these from the inherited environment so that a developer's shell (say an
    exported ``IDLE_TIMEOUT_S`` or ``REDIS_CONNECTION``) cannot change what a test runs.
    """
    names: set[str] = set()
    for module_name, class_name in (
        ("gateway.config", "GatewayConfig"),
        ("gameserver.config", "GameServerConfig"),
    ):
        try:
            module = __import__(module_name, fromlist=[class_name])
            config_type = getattr(module, class_name)
            names.update(field.metadata["env"] for field in dataclasses.fields(config_type))
        except Exception:  # a half-written service must not break every test
            continue
    return names


def service_environment(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """``os.environ`` without service settings, plus :data:`BASE_ENV` and ``extra``.

    In ``extra`` a value of ``None`` removes the variable (falls back to the service default).
    """
    blocked = service_env_names()
    env = {key: value for key, value in os.environ.items() if key not in blocked}
    env.update(BASE_ENV)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


# --- HTTP probes --------------------------------------------------------------------------


def wait_readyz(
    name: str,
    port: int,
    timeout: float,
    gone: Callable[[], str | None],
    logs: Callable[[], str],
    interval: float = 0.1,
) -> str:
    """Poll ``/readyz`` on 127.0.0.1:``port`` until 200; returns the body.

    ``gone`` says why the service can no longer become ready (exited, container stopped)
    or None; ``logs`` is what a failure shows. Fails the test on either outcome.
    """
    import pytest

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        reason = gone()
        if reason is not None:
            pytest.fail(f"{name} {reason} before it was ready:\n{logs()}")
        try:
            status, body = http_get("127.0.0.1", port, "/readyz", 1.0)
            if status == 200:
                return body
            last = f"{status} {body.strip()}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(interval)
    pytest.fail(f"{name} /readyz not 200 within {timeout} s ({last}):\n{logs()}")


def http_get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """``(status, body)`` of a plain GET.

    http.client rather than urllib because urllib honours ``http_proxy`` from the
    environment, and a CI proxy must never see requests meant for 127.0.0.1.
    """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


# --- one service process ------------------------------------------------------------------


class ServiceProcess:
    """One ``python -m <module>`` service as a real child process, restartable.

    ``args`` are the command-line flags; ``env`` is merged over the cleaned environment (see
    :func:`service_environment`). The process is not started by the constructor: call
    :meth:`start`. A stopped process can be started again with the same flags (same node id,
    same ports); the log file is appended to, with a marker line per start, and
    :meth:`wait_for_log` by default only looks at the current run.
    """

    def __init__(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        *,
        log_path: Path,
        metrics_port: int | None,
        metrics_host: str = "127.0.0.1",
        env: Mapping[str, str | None] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.name = name
        self.module = module
        self.args = list(args)
        self.log_path = log_path
        self.metrics_host = metrics_host
        self.metrics_port = metrics_port
        self.env = dict(env or {})
        self.cwd = cwd
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_offset = 0
        self._sigterm_sent = False

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else f"exit={self.returncode}"
        return f"<ServiceProcess {self.name} {state} log={self.log_path}>"

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit code of the last run (negative: killed by that signal), ``None`` if running."""
        return None if self._proc is None else self._proc.poll()

    # lifecycle

    def start(self) -> ServiceProcess:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            marker = f"===== {self.name} start #{self.starts}: {' '.join(self.command)}\n"
            log.write(marker.encode())
            log.flush()
            self._run_offset = log.tell()
            self._sigterm_sent = False
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=service_environment(self.env),
                cwd=self.cwd,
                # Own session: a Ctrl-C in the terminal running pytest reaches pytest only,
                # which then stops the services in order instead of all dying at once.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        track_child(self._proc)
        with _children_lock:
            if self not in _live_services:
                _live_services.append(self)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll ``/readyz`` until it answers 200; fail with the log tail otherwise."""
        if self.metrics_port is None:
            raise RuntimeError(f"{self.name} has no metrics port to probe")
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            if not self.running:
                raise ServiceFailed(
                    f"{self.name} exited with code {self.returncode} before it became ready"
                    f"\n{self._tail_block()}"
                )
            try:
                status, body = http_get(self.metrics_host, self.metrics_port, "/readyz", 1.0)
                if status == 200:
                    return
                last = f"HTTP {status}: {body.strip()}"
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ServiceFailed(
                    f"{self.name} not ready after {timeout:g} s (last /readyz: {last})"
                    f"\n{self._tail_block()}"
                )
            time.sleep(0.05)

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait for a graceful exit; SIGKILL after ``timeout``. Returns the code."""
        proc = self._proc
        if proc is None:
            return None
        stop_child(proc, timeout, self.send_sigterm)
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL (a crash: no shutdown handler runs). Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait(timeout=10)
        untrack_child(proc)
        return proc.returncode

    def send_signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signum)

    def send_sigterm(self) -> None:
        """SIGTERM once per run: a second one may mean "exit now" and cut a graceful drain."""
        if not self._sigterm_sent:
            self._sigterm_sent = True
            self.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit on its own (after a signal, a fatal error...)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ServiceFailed(
                f"{self.name} still running after {timeout:g} s\n{self._tail_block()}"
            ) from None
        untrack_child(self._proc)
        return code

    def restart(
        self, *, kill: bool = False, wait_ready: bool = True, timeout: float = 20.0
    ) -> None:
        """Stop (SIGTERM, or SIGKILL with ``kill=True``) and start again with the same flags."""
        if kill:
            self.kill()
        else:
            self.terminate()
        self.start()
        if wait_ready:
            self.wait_ready(timeout)

    def dispose(self, timeout: float = 15.0) -> None:
        """Stop and forget: after this the process no longer shows up in failure reports."""
        self.terminate(timeout)
        with _children_lock:
            if self in _live_services:
                _live_services.remove(self)

    # HTTP

    def http(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        if self.metrics_port is None:
            raise RuntimeError(f"{self.name} has no metrics port")
        return http_get(self.metrics_host, self.metrics_port, path, timeout)

    def readyz_status(self) -> int:
        return self.http("/readyz")[0]

    def metrics_text(self) -> str:
        status, body = self.http("/metrics")
        if status != 200:
            raise ServiceFailed(f"{self.name} /metrics answered HTTP {status}: {body[:200]}")
        return body

    def metric(self, sample: str) -> float:
        """The value of one sample of /metrics, named with its labels exactly as exposed
        (``gateway_disconnects_total{reason="idle_timeout"}``); 0 if absent."""
        for line in self.metrics_text().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    # logs

    def log_offset(self) -> int:
        """Current size of the log in bytes: pass to :meth:`wait_for_log` as ``since``."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        """The whole log (all runs), or the part after byte offset ``since``."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(since)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _tail_block(self, lines: int = 40) -> str:
        return f"--- last {lines} lines of {self.log_path} ---\n{self.log_tail(lines)}"

    def wait_for_log(self, substring: str, timeout: float = 10.0, since: int | None = None) -> str:
        """Wait until a log line contains ``substring`` and return that line.

        ``since`` is a byte offset (see :meth:`log_offset`); by default the search starts at
        the beginning of the current run, so a restarted process is not fooled by the lines
        its previous incarnation wrote. Fails early if the process exits without the line.
        """
        start = self._run_offset if since is None else since

        def find() -> str | None:
            for line in self.log_text(start).splitlines():
                if substring in line:
                    return line
            if not self.running:
                # One last read: the line may have been written just before the exit.
                for line in self.log_text(start).splitlines():
                    if substring in line:
                        return line
                raise ServiceFailed(
                    f"{self.name} exited (code {self.returncode}) without logging "
                    f"{substring!r}\n{self._tail_block()}"
                )
            return None

        try:
            line = wait_until(find, timeout=timeout, interval=0.05)
        except WaitTimeout:
            raise ServiceFailed(
                f"{self.name} did not log {substring!r} within {timeout:g} s"
                f"\n{self._tail_block()}"
            ) from None
        assert line is not None  # wait_until only returns truthy values
        return line


class ProcessGroup:
    """Service processes owned by one fixture or test, stopped together at teardown.

    :meth:`stop_all` sends SIGTERM to everything first and then waits, so a group of five
    services takes one drain period to stop, not five.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ServiceProcess] = []

    def spawn(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        *,
        metrics_port: int | None,
        env: Mapping[str, str | None] | None = None,
        start: bool = True,
    ) -> ServiceProcess:
        """A new :class:`ServiceProcess` logging to ``<log_dir>/<name>.log`` (started)."""
        process = ServiceProcess(
            name,
            module,
            args,
            log_path=self.log_dir / f"{name}.log",
            metrics_port=metrics_port,
            env=env,
        )
        self.processes.append(process)
        if start:
            process.start()
        return process

    def stop_all(
        self, timeout: float = 15.0, order: Iterable[ServiceProcess] | None = None
    ) -> None:
        """SIGTERM all (in ``order``, default newest first), wait, SIGKILL what is left."""
        first = list(order) if order is not None else []
        targets = first + [p for p in reversed(self.processes) if p not in first]
        for process in targets:
            process.send_sigterm()
        deadline = time.monotonic() + timeout
        for process in targets:
            try:
                process.dispose(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # cleanup must reach every process
                process.kill()
