"""The container images and deploy/compose.yaml, end to end on a real Docker engine.

* ``scripts/setup-docker.sh`` makes the engine, the compose plugin and hadolint ready. When it
  says the engine cannot be had here (exit 3, ``DOCKER ENGINE UNAVAILABLE: ...``), the compose
  test skips with that one line; once the engine is there, every failure fails.
* The Dockerfiles (the app's and the local stand-ins') lint clean with the pinned hadolint.
* ``scripts/build-images.sh --local-images`` builds (or, cached, reuses) the debootstrap base,
  both app images and stand-ins for Redis and Prometheus built from Debian's packages, since
  no registry is reachable here; compose gets them through REDIS_IMAGE / PROMETHEUS_IMAGE.
* The stack comes up under a project name of its own, on free loopback ports, with
  ``--scale gameserver=3`` (Grafana is left out: no image for it here), and ``--wait`` for
  every healthcheck. Then: the test client plays through the published Gateway port;
  Prometheus, through its HTTP API, scrapes the Gateway and all three GameServer replicas
  (found by DNS) and they are ``up``, with three distinct node ids (``GAMESERVER_NODE_ID=auto``);
  the app containers run as 10001:10001 on a read-only root filesystem with the image's
  /healthz healthcheck; ``docker compose down`` takes less than 30 s and the logs show every
  service draining on SIGTERM. ``down -v`` always runs at the end.
* CURVE is on in compose (issue 9), checked without an engine too: ``docker compose config``
  shows the one-shot ``curve-keygen`` writing the key into the ``cluster-keys`` volume, the
  Gateway and the GameServers mounting it read-only, pointed at it by
  CLUSTER_CURVE_SECRET_FILE and started only after it succeeded; its script, run here on a
  directory, makes a valid key once, keeps it, and leaves it 0400 for 10001:10001. In the
  running stack the key file is so, and ``docker compose exec gameserver python -m gameserver
  admin kick`` works there.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.support.ports import free_port
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP = REPO_ROOT / "scripts" / "setup-docker.sh"
BUILD = REPO_ROOT / "scripts" / "build-images.sh"
COMPOSE_FILE = REPO_ROOT / "deploy" / "compose.yaml"
DOCKERFILES = [
    REPO_ROOT / "Dockerfile.gateway",
    REPO_ROOT / "Dockerfile.gameserver",
    REPO_ROOT / "deploy" / "local-images" / "Dockerfile.redis",
    REPO_ROOT / "deploy" / "local-images" / "Dockerfile.prometheus",
]
TOOLS = Path(os.environ.get("GAMEBACKBONE_TOOLS") or Path.home() / ".cache/gamebackbone/tools")

TAG = "dev"
REDIS_IMAGE = "gamebackbone/redis:local"
PROMETHEUS_IMAGE = "gamebackbone/prometheus:local"
SERVICES = ["redis", "gameserver", "gateway", "prometheus"]  # no grafana: no image here
REPLICAS = 3
DOWN_LIMIT_S = 30.0
#: Where compose mounts the cluster's CURVE key (CLUSTER_CURVE_SECRET_FILE).
CURVE_DIR = "/etc/gamebackbone/curve"
CURVE_FILE = f"{CURVE_DIR}/cluster.key"
#: The images' USER (Dockerfile.gateway / Dockerfile.gameserver).
APP_USER = (10001, 10001)


def run(args: list[str], *, timeout: float, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, output captured; with ``check`` a non-zero exit fails the test with it."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout}"
                    f"\n--- stderr\n{result.stderr}")
    return result


def setup_docker(*args: str) -> None:
    """scripts/setup-docker.sh; skips the test (one line) when the engine is unavailable."""
    result = run([str(SETUP), *args], timeout=900, check=False)
    if result.returncode == 3:
        reason = next((line for line in result.stderr.splitlines()
                       if line.startswith("DOCKER ENGINE UNAVAILABLE")),
                      "DOCKER ENGINE UNAVAILABLE (scripts/setup-docker.sh exited 3)")
        pytest.skip(reason)
    if result.returncode != 0:
        pytest.fail(f"scripts/setup-docker.sh {' '.join(args)} exited {result.returncode}\n"
                    f"{result.stdout}\n{result.stderr}")


def test_dockerfiles_lint_clean() -> None:
    setup_docker("--tools-only")
    result = run([str(TOOLS / "bin" / "hadolint"), *map(str, DOCKERFILES)], timeout=120,
                 check=False)
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


# --- CURVE in compose, from `docker compose config` (no engine needed) ----------------------


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    """deploy/compose.yaml as Compose resolves it (defaults of every variable)."""
    setup_docker("--tools-only")
    return resolved_compose_config()


#: Variables of deploy/compose.yaml a developer's shell might set.
COMPOSE_VARIABLES = ("TAG", "LOG_LEVEL", "LOG_FORMAT", "COMPOSE_PROJECT_NAME", "AUTH_MODE",
                     "AUTH_SECRET", "ADMIN_TOKEN")


def resolved_compose_config(*overrides: Path, **variables: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    env.update(variables)
    files = [arg for path in (COMPOSE_FILE, *overrides) for arg in ("-f", str(path))]
    result = run(["docker", "compose", *files, "config", "--format", "json"],
                 timeout=60, env=env)
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_passes_login_and_admin_secrets_from_the_shell(
        compose_config: dict[str, Any]) -> None:
    environment = compose_config["services"]["gameserver"]["environment"]
    assert (environment["AUTH_MODE"], environment["AUTH_SECRET"],
            environment["ADMIN_TOKEN"]) == ("none", "", "")
    environment = resolved_compose_config(
        AUTH_MODE="hmac", AUTH_SECRET="s3cret", ADMIN_TOKEN="t0ken",
    )["services"]["gameserver"]["environment"]
    assert (environment["AUTH_MODE"], environment["AUTH_SECRET"],
            environment["ADMIN_TOKEN"]) == ("hmac", "s3cret", "t0ken")


def test_the_redis_cluster_override_points_the_services_at_three_masters() -> None:
    """deploy/compose.redis-cluster.yaml merged over compose.yaml (it was run for real on a
    Docker engine when written: `up`, `down`, `up` again, a client's login and MOVE)."""
    setup_docker("--tools-only")
    services = resolved_compose_config(REPO_ROOT / "deploy" / "compose.redis-cluster.yaml")[
        "services"]
    nodes = ("redis", "redis-2", "redis-3")
    for name in ("gameserver", "gateway"):
        environment = services[name]["environment"]
        assert environment["REDIS_MODE"] == "cluster"
        assert environment["REDIS_CONNECTION"] == ",".join(f"{n}:6379" for n in nodes)
        assert services[name]["depends_on"]["redis-cluster-init"]["condition"] == (
            "service_completed_successfully")
    for node in nodes:
        command = services[node]["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert command[command.index("--cluster-announce-hostname") + 1] == node
        assert [v["source"] for v in services[node]["volumes"]] == [
            f"redis-cluster-{nodes.index(node) + 1}"]
    init = services["redis-cluster-init"]
    assert init["restart"] == "no"
    assert init["environment"]["REDIS_CLUSTER_NODES"] == " ".join(f"{n}:6379" for n in nodes)


def test_compose_serves_the_browser_demo_and_publishes_the_websocket_port(
        compose_config: dict[str, Any]) -> None:
    """The service ``web`` (run for real when written: the page in Chromium against the
    stack's published WebSocket port, a login and a MOVE), and the Gateway's port 5080."""
    services = compose_config["services"]
    web = services["web"]
    assert web["image"] == services["gateway"]["image"]
    assert web["entrypoint"] == ["/opt/venv/bin/python", "-m", "test_client", "web"]
    assert web["command"] == ["--host", "0.0.0.0", "--port", "8000", "--root", "/srv/clients"]
    [mount] = web["volumes"]
    assert (mount["type"], mount["target"], mount["read_only"]) == ("bind", "/srv/clients", True)
    assert Path(mount["source"]) == REPO_ROOT / "clients"
    assert [(p["target"], p["published"]) for p in web["ports"]] == [(8000, "8000")]
    assert web["read_only"] is True and web["cap_drop"] == ["ALL"]
    assert 5080 in {p["target"] for p in services["gateway"]["ports"]}


def test_compose_turns_curve_on(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    keygen = services["curve-keygen"]
    assert keygen["image"] == services["gameserver"]["image"] == "gamebackbone/gameserver:dev"
    assert keygen["restart"] == "no"
    assert keygen["volumes"] == [
        {"type": "volume", "source": "cluster-keys", "target": CURVE_DIR}]
    # Root only to chown the file, with no capability but CHOWN, no network, read-only root.
    assert keygen["user"] == "0:0"
    assert keygen["cap_drop"] == ["ALL"] and keygen["cap_add"] == ["CHOWN"]
    assert keygen["read_only"] is True and keygen["network_mode"] == "none"
    assert "no-new-privileges:true" in keygen["security_opt"]
    assert "cluster-keys" in compose_config["volumes"]
    for name in ("gateway", "gameserver"):
        service = services[name]
        assert service["environment"]["CLUSTER_CURVE_SECRET_FILE"] == CURVE_FILE
        assert {"type": "volume", "source": "cluster-keys", "target": CURVE_DIR,
                "read_only": True} in service["volumes"]
        assert service["depends_on"]["curve-keygen"]["condition"] == \
            "service_completed_successfully"
        assert service["read_only"] is True


def test_the_keygen_script_makes_a_key_once(compose_config: dict[str, Any],
                                            tmp_path: Path) -> None:
    """curve-keygen's own script on a local directory, with the project's Python as the
    image's: a valid key, mode 0400, owned by the services' user; kept on the next run."""
    if os.geteuid() != 0:
        pytest.skip("the keygen script chowns the key to 10001:10001, which needs root")
    keygen = compose_config["services"]["curve-keygen"]
    assert keygen["entrypoint"][:1] == ["/bin/sh"]
    script = keygen["command"][0].replace(CURVE_DIR, str(tmp_path))
    assert CURVE_DIR not in script
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    key_file = tmp_path / "cluster.key"

    def keygen_run() -> str:
        result = run([*keygen["entrypoint"], script], timeout=60, env=env)
        return result.stdout

    assert "made a new CURVE key" in keygen_run()
    key = key_file.read_bytes()
    assert len(key) == 41 and key.endswith(b"\n")
    assert len(zmq.curve_public(key.strip())) == 40, "a valid Z85 CURVE secret key"
    info = key_file.stat()
    assert stat.S_IMODE(info.st_mode) == 0o400, "not readable by anyone but its owner"
    assert (info.st_uid, info.st_gid) == APP_USER
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "cluster.key"]

    assert "keeping the CURVE key" in keygen_run()
    assert key_file.read_bytes() == key

    key_file.chmod(0o644)  # a key brought in by hand: its mode is put right
    os.chown(key_file, 0, 0)
    keygen_run()
    info = key_file.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o400, *APP_USER)
    assert key_file.read_bytes() == key


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


class Stack:
    """One compose project of deploy/compose.yaml on free loopback ports."""

    def __init__(self) -> None:
        self.project = f"gbtest-{os.getpid()}-{secrets.token_hex(3)}"
        self.gateway_port = free_port()
        self.prometheus_port = free_port()
        self.env = {
            **os.environ,
            "TAG": TAG,
            "REDIS_IMAGE": REDIS_IMAGE,
            "PROMETHEUS_IMAGE": PROMETHEUS_IMAGE,
            "PUBLISH_ADDRESS": "127.0.0.1",
            "GATEWAY_PUBLISHED_PORT": str(self.gateway_port),
            "GATEWAY_WS_PUBLISHED_PORT": str(free_port()),
            "GATEWAY_METRICS_PUBLISHED_PORT": str(free_port()),
            "PROMETHEUS_PUBLISHED_PORT": str(self.prometheus_port),
            "GRAFANA_PUBLISHED_PORT": str(free_port()),
        }

    def compose(self, *args: str, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["docker", "compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args],
                   timeout=timeout, env=self.env, check=check)

    def container_ids(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).stdout.split()

    def prometheus(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = http_json(f"http://127.0.0.1:{self.prometheus_port}{path}{query}")
        assert body.get("status") == "success", body
        return body["data"]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    setup_docker()
    started = time.monotonic()
    build = run([str(BUILD), "--local-images"], timeout=900,
                env={**os.environ, "TAG": TAG})
    print(f"\nscripts/build-images.sh --local-images: {time.monotonic() - started:.0f} s\n"
          f"{build.stdout}")
    stack = Stack()
    try:
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=180,
                      check=False)


@pytest.mark.timeout(900)
def test_compose_stack_scaled_scraped_and_drained(stack: Stack) -> None:
    # ---- up, healthy -------------------------------------------------------------------
    started = time.monotonic()
    stack.compose("up", "-d", "--no-build", "--pull", "never", "--wait", "--wait-timeout", "180",
                  "--scale", f"gameserver={REPLICAS}", *SERVICES, timeout=240)
    up_s = time.monotonic() - started
    print(f"compose up --wait ({REPLICAS} GameServers): {up_s:.1f} s")

    # ---- a client plays through the published Gateway port --------------------------------
    client = run([sys.executable, "-m", "test_client", "--host", "127.0.0.1",
                  "--port", str(stack.gateway_port), "--user-id", "42",
                  "--run", "echo hi; move 1 2; logout"], timeout=60, check=False)
    assert client.returncode == 0, f"test client:\n{client.stdout}\n{client.stderr}"
    for line in ("ok login", "ok echo", "ok move", "ok logout"):
        assert line in client.stdout, client.stdout

    # ---- CURVE: the key made by curve-keygen, and the admin CLI inside compose -------------
    keygen = stack.compose("ps", "-a", "--format", "json", "curve-keygen").stdout
    # One JSON object per line (Compose >= 2.21), or one array (older).
    states = json.loads(keygen) if keygen.lstrip().startswith("[") else \
        [json.loads(line) for line in keygen.splitlines() if line.strip()]
    assert [(s["State"], s["ExitCode"]) for s in states] == [("exited", 0)], keygen
    listing = stack.compose("exec", "-T", "gameserver", "ls", "-ln", CURVE_FILE).stdout.split()
    assert listing[0] == "-r--------" and listing[2:4] == ["10001", "10001"], listing
    admin = stack.compose("exec", "-T", "gameserver", "python", "-m", "gameserver", "admin",
                          "kick", "--user-id", "1", check=False)
    assert (admin.returncode, admin.stdout.strip()) == (1, "user 1 is not online"), \
        f"{admin.stdout}\n{admin.stderr}"

    # ---- the app containers: hardening and the image's healthcheck -------------------------
    gameservers = stack.container_ids("gameserver")
    gateways = stack.container_ids("gateway")
    assert len(gameservers) == REPLICAS and len(gateways) == 1, (gameservers, gateways)
    for info in json.loads(run(["docker", "inspect", *gameservers, *gateways], timeout=30).stdout):
        name = info["Name"]
        assert info["Config"]["User"] == "10001:10001", name
        assert info["HostConfig"]["ReadonlyRootfs"] is True, name
        assert "/healthz" in " ".join(info["Config"]["Healthcheck"]["Test"]), name
        assert info["State"]["Health"]["Status"] == "healthy", name
        if "gameserver" in name:
            assert not info["HostConfig"]["PortBindings"], f"{name} publishes host ports"

    # ---- Prometheus scrapes every replica ----------------------------------------------------
    def targets_up() -> dict[str, set[str]] | None:
        """Instances per job whose target is up, once all of ours are; else None."""
        targets = stack.prometheus("/api/v1/targets", state="active")["activeTargets"]
        up: dict[str, set[str]] = {}
        for target in targets:
            if target["health"] == "up":
                up.setdefault(target["labels"]["job"], set()).add(target["labels"]["instance"])
        complete = (len(up.get("gameserver", ())) == REPLICAS
                    and len(up.get("gateway", ())) == 1)
        return up if complete else None

    def query_up() -> dict[str, set[str]] | None:
        """Instances per job with ``up == 1``, once all of ours are; else None."""
        up: dict[str, set[str]] = {}
        for sample in stack.prometheus("/api/v1/query", query="up == 1")["result"]:
            up.setdefault(sample["metric"]["job"], set()).add(sample["metric"]["instance"])
        complete = (len(up.get("gameserver", ())) == REPLICAS
                    and len(up.get("gateway", ())) == 1)
        return up if complete else None

    def node_ids() -> set[str] | None:
        result = stack.prometheus("/api/v1/query", query="gameserver_node_info")["result"]
        ids = {sample["metric"]["node_id"] for sample in result}
        return ids if len(result) == REPLICAS else None

    unreachable = (OSError, urllib.error.URLError)
    targets = wait_until(targets_up, timeout=90, interval=1.0, ignore=unreachable,
                         message=f"/api/v1/targets: {REPLICAS} gameserver and 1 gateway up")
    series = wait_until(query_up, timeout=30, interval=1.0, ignore=unreachable,
                        message=f"query up: {REPLICAS} gameserver and 1 gateway at 1")
    assert targets is not None and series is not None  # wait_until returns a truthy value
    assert series["gameserver"] == targets["gameserver"], (series, targets)
    ids = wait_until(node_ids, timeout=30, interval=1.0, ignore=unreachable,
                     message=f"gameserver_node_info of {REPLICAS} replicas")
    assert ids is not None
    assert len(ids) == REPLICAS, f"replicas share node ids: {sorted(ids)}"
    print(f"Prometheus: gameserver {sorted(targets['gameserver'])}, gateway "
          f"{sorted(targets['gateway'])}, node ids {sorted(ids)}")

    # ---- down: drained, quickly ---------------------------------------------------------------
    # The containers' logs go with them, so a follower must be attached to every app
    # container before `down` starts. It replays each container's history before following,
    # so a line from a container proves its stream is attached: wait for one from each.
    follower = subprocess.Popen(
        ["docker", "compose", "-p", stack.project, "-f", str(COMPOSE_FILE), "logs",
         "--follow", "--no-color", "gateway", "gameserver"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=stack.env,
        cwd=REPO_ROOT)
    followed: list[str] = []

    def pump() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            followed.append(line)

    reader = threading.Thread(target=pump, name="compose-logs", daemon=True)
    reader.start()

    def attached() -> set[str] | None:
        """The app containers (``gameserver-2``, ...) the follower has printed lines of."""
        prefixes = {line.split("|", 1)[0].strip() for line in list(followed) if "|" in line}
        ours = {p for p in prefixes if "gameserver" in p or "gateway" in p}
        return ours if len(ours) == REPLICAS + 1 else None

    try:
        wait_until(attached, timeout=30, interval=0.2,
                   message=lambda: "compose logs --follow: a line from every app container; "
                                   f"so far:\n{''.join(followed[-20:])}")
        started = time.monotonic()
        stack.compose("down", "-v", timeout=120)
        down_s = time.monotonic() - started
    finally:
        try:
            follower.wait(timeout=15)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
        reader.join(timeout=15)
    logs = "".join(followed)
    print(f"compose down -v: {down_s:.1f} s")
    assert down_s < DOWN_LIMIT_S, f"compose down took {down_s:.1f} s"
    drains = [line for line in logs.splitlines() if "SIGTERM received: draining" in line]
    stops = [line for line in logs.splitlines()
             if "Gateway stopped" in line or "GameServer stopped" in line]
    assert len(drains) == REPLICAS + 1, f"drain lines:\n{logs}"
    assert len(stops) == REPLICAS + 1, f"stop lines:\n{logs}"
    # Every app container ran with the key (docs/OPERATIONS.md §1.7, the start-up line).
    curve = [line for line in logs.splitlines()
             if f"Internal ZeroMQ traffic: CURVE with the cluster key in {CURVE_FILE}" in line]
    assert len(curve) == REPLICAS + 1, f"CURVE start-up lines:\n{logs}"
    assert "NOT authenticated" not in logs
