"""``./run-sample.sh``, the README's one command, run for real (non-interactive demo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.ports import free_port
from tests.support.redis_servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "run-sample.sh"


def sample_env(redis_connection: str, path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "GAMESERVER_", "REDIS_"))}
    env.update({
        "REDIS_CONNECTION": redis_connection,
        "GATEWAY_CLIENT_PORT": str(free_port()),
        "GATEWAY_WS_PORT": str(free_port()),
        "GATEWAY_P2P_PORT": str(free_port()),
        "GATEWAY_METRICS_PORT": str(free_port()),
        "GAMESERVER_P2P_PORT": str(free_port()),
        "GAMESERVER_MESH_PORT": str(free_port()),
        "GAMESERVER_METRICS_PORT": str(free_port()),
        "GAMESERVER_NODE_ID": "4242",
    })
    if path is not None:
        env["PATH"] = path
    return env


def test_run_sample_runs_the_scripted_demo(redis_server: RedisServer) -> None:
    result = subprocess.run(
        [str(SCRIPT)], cwd=ROOT, env=sample_env(redis_server.connection),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"Redis is running at {redis_server.connection}" in output
    assert "LOGIN_SUCCESS" in output or "logged in" in output.lower(), output
    # Internal traffic is CURVE with a key of the sample's own, readable by its owner only.
    key_file = ROOT / ".run" / "cluster.key"
    assert f"internal traffic uses CURVE (key file: {key_file})" in output
    assert key_file.stat().st_mode & 0o077 == 0
    assert "Internal ZeroMQ traffic: CURVE" in (ROOT / ".run" / "gameserver.log").read_text()
    # Everything it started is gone again.
    leftovers = subprocess.run(["pgrep", "-f", "gameserver.*4242|GAMESERVER_NODE_ID=4242"],
                               capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""


def test_run_sample_says_redis_is_not_running(tmp_path: Path) -> None:
    """No Redis and no redis-server binary: the seed's message, exit 1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    search = [*os.environ.get("PATH", "").split(os.pathsep), str(Path(sys.executable).parent)]
    for directory in search:
        if not directory or not Path(directory).is_dir():
            continue
        for entry in Path(directory).iterdir():
            target = bin_dir / entry.name
            if entry.name.startswith("redis-server") or target.exists():
                continue
            target.symlink_to(entry)
    closed_port = free_port()
    result = subprocess.run(
        [str(SCRIPT)], cwd=ROOT, env=sample_env(f"127.0.0.1:{closed_port}", str(bin_dir)),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert (f"✗ Redis is NOT running at 127.0.0.1:{closed_port} → start redis-server or set "
            "REDIS_CONNECTION") in result.stderr
