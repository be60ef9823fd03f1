"""The real images accept exactly what the Helm chart gives their containers.

test_helm.py runs the services as local processes with the rendered environment; this runs
the built images (``scripts/build-images.sh --local-images``) on a real Docker engine instead:

* the default values are rendered (test_helm's ``rendered`` fixture and helpers);
* on a network of its own, the Redis stand-in image runs, then the GameServer image with the
  StatefulSet container's env, command/args and securityContext (user, read-only root, no
  capabilities, no privilege escalation, a tmpfs /tmp for the chart's emptyDir) and the host
  name of the StatefulSet's pod ``<name>-0`` (for GAMESERVER_NODE_ID=ordinal), then the
  Gateway image with the Deployment container's; each Secret volume (the generated CURVE key)
  is bind-mounted read-only where the pod mounts it. Only what a cluster supplies is replaced:
  status.podIP -> the GameServer container's name (resolvable on the network), Redis -> the
  stand-in container; each metrics port is published on a free loopback port;
* both answer /readyz with 200, the chart's ``helm test`` Pod command (host -> the Gateway
  container) logs in and echoes through them from a container of its image, and
  ``docker stop`` (SIGTERM) ends each with exit 0 within its terminationGracePeriodSeconds.

When scripts/setup-docker.sh says the engine cannot be had here, the test skips with that one
line (as test_compose.py does); once the engine is there, every failure fails.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.packaging.test_compose import BUILD, REDIS_IMAGE, TAG, run, setup_docker
from tests.packaging.test_helm import (  # noqa: F401  (rendered, tools: fixtures)
    container,
    documents,
    one,
    pod_spec,
    rendered,
    secret_mounts,
    secret_values,
    tools,
    write_secret_mounts,
)
from tests.support.ports import free_port
from tests.support.processes import wait_readyz

pytestmark = pytest.mark.timeout(900)

CASE = "default"
READY_TIMEOUT_S = 60.0


def docker(*args: str, timeout: float = 60, check: bool = True) -> Any:
    return run(["docker", *args], timeout=timeout, check=check)


def logs(name: str, tail: str = "60") -> str:
    result = docker("logs", "--tail", tail, name, timeout=30, check=False)
    return f"--- docker logs {name}\n{result.stdout}{result.stderr}"


def local_image(rendered_image: str) -> str:
    """The chart's ``gamebackbone/<component>:<version>`` -> the locally built ``:dev``."""
    repository = rendered_image.rsplit(":", 1)[0]
    assert repository in ("gamebackbone/gateway", "gamebackbone/gameserver"), rendered_image
    return f"{repository}:{TAG}"


def container_env(ctr: dict[str, Any], secrets: dict[tuple[str, str], str],
                  pod_ip: str, redis_url: str) -> dict[str, str]:
    """What the kubelet would set: values, Secrets, status.podIP; Redis -> the stand-in."""
    env: dict[str, str] = {}
    for item in ctr.get("env", []):
        if "value" in item:
            value = str(item["value"])
        elif "fieldRef" in item.get("valueFrom", {}):
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", item
            value = pod_ip
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            value = secrets[(ref["name"], ref["key"])]
        env[item["name"]] = redis_url if item["name"] == "REDIS_CONNECTION" else value
    return env


def hardening(workload: dict[str, Any], secrets: dict[tuple[str, str], str],
              files: Path) -> list[str]:
    """docker run options for the rendered pod + container securityContext and volumes:
    a tmpfs for each emptyDir, the files of each Secret volume (written under ``files``)
    bind-mounted read-only at its mountPath."""
    pod = pod_spec(workload)
    ctr = container(workload)
    sc = {**pod.get("securityContext", {}), **ctr.get("securityContext", {})}
    options = ["--user", f"{sc['runAsUser']}:{sc['runAsGroup']}"]
    if sc.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    options += [f"--cap-drop={cap}" for cap in sc.get("capabilities", {}).get("drop", [])]
    if sc.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for mount in ctr.get("volumeMounts", []):
        if mount["name"] in empty_dirs:
            options += ["--tmpfs", mount["mountPath"]]
    # Readable by the container's user whatever the host's uids (the kubelet uses the fsGroup).
    mounted = write_secret_mounts(secret_mounts(workload, secrets), files, mode=0o444)
    for mount_path, directory in mounted.items():
        directory.chmod(0o755)
        options += ["--mount", f"type=bind,source={directory},target={mount_path},readonly"]
    return options


def command_line(ctr: dict[str, Any], env: dict[str, str]) -> tuple[list[str], list[str]]:
    """(docker run options, arguments after the image) for command/args, with $(VAR)."""
    def expand(arg: str) -> str:
        return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), arg)

    options: list[str] = []
    trailing: list[str] = []
    if ctr.get("command"):
        command = [expand(a) for a in ctr["command"]]
        options = ["--entrypoint", command[0]]
        trailing = command[1:]
    return options, trailing + [expand(a) for a in ctr.get("args", [])]


@pytest.fixture(scope="module")
def images() -> Iterator[None]:
    setup_docker()
    started = time.monotonic()
    run([str(BUILD), "--local-images"], timeout=900, env={**os.environ, "TAG": TAG})
    print(f"\nscripts/build-images.sh --local-images: {time.monotonic() - started:.0f} s")
    yield


def wait_ready(name: str, port: int, timeout: float = READY_TIMEOUT_S) -> str:
    def gone() -> str | None:
        state = docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name,
                       check=False).stdout.strip()
        return None if state.startswith("running") else f"is {state!r}"

    return wait_readyz(name, port, timeout, gone, lambda: logs(name), interval=0.2)


def test_images_run_with_the_rendered_env(rendered: dict[str, Any],  # noqa: F811
                                          images: None, tmp_path: Path) -> None:
    docs = documents(rendered, CASE)
    secrets_of_release = secret_values(docs)
    sts = one(docs, "StatefulSet")
    deploy = one(docs, "Deployment")
    test_pod = one(docs, "Pod")

    prefix = f"gbchart-{os.getpid()}-{secrets.token_hex(3)}"
    network = f"{prefix}-net"
    redis_name, gs_name, gw_name = (f"{prefix}-{n}" for n in ("redis", "gameserver", "gateway"))
    pod_name = f"{sts['metadata']['name']}-0"
    redis_url = f"redis://{redis_name}:6379/0"
    created: list[str] = []
    timings: dict[str, float] = {}
    try:
        docker("network", "create", network)
        docker("run", "-d", "--name", redis_name, "--network", network, REDIS_IMAGE,
               "redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no")
        created.append(redis_name)

        def start(name: str, workload: dict[str, Any], pod_ip: str,
                  extra: list[str]) -> tuple[dict[str, str], int]:
            ctr = container(workload)
            env = container_env(ctr, secrets_of_release, pod_ip, redis_url)
            metrics = next(p["containerPort"] for p in ctr["ports"] if p["name"] == "metrics")
            host_port = free_port()
            entry, arguments = command_line(ctr, env)
            env_options = [opt for k, v in env.items() for opt in ("-e", f"{k}={v}")]
            docker("run", "-d", "--name", name, "--network", network, *extra,
                   *hardening(workload, secrets_of_release, tmp_path / name), *env_options,
                   "-p", f"127.0.0.1:{host_port}:{metrics}", *entry,
                   local_image(ctr["image"]), *arguments)
            created.append(name)
            return env, host_port

        started = time.monotonic()
        gs_env, gs_port = start(gs_name, sts, gs_name, ["--hostname", pod_name])
        body = wait_ready(gs_name, gs_port)
        timings["gameserver ready"] = time.monotonic() - started
        if gs_env.get("GAMESERVER_NODE_ID") == "ordinal":
            assert body.startswith("ready: node 1,"), body
            assert f"from the StatefulSet ordinal of {pod_name}" in logs(gs_name, "all"), \
                logs(gs_name)

        started = time.monotonic()
        _, gw_port = start(gw_name, deploy, gw_name, [])
        wait_ready(gw_name, gw_port)
        timings["gateway ready"] = time.monotonic() - started

        # The chart's helm test Pod, from its image, against the Gateway container.
        ctr = container(test_pod)
        pod_env = container_env(ctr, secrets_of_release, "", redis_url)
        entry, arguments = command_line(ctr, pod_env)
        arguments[arguments.index("--host") + 1] = gw_name
        started = time.monotonic()
        client = docker("run", "--rm", "--name", f"{prefix}-helm-test", "--network", network,
                        *hardening(test_pod, secrets_of_release, tmp_path / "helm-test"),
                        *[opt for k, v in pod_env.items() for opt in ("-e", f"{k}={v}")],
                        *entry, local_image(ctr["image"]), *arguments,
                        timeout=120, check=False)
        timings["helm test command"] = time.monotonic() - started
        assert client.returncode == 0, (f"helm test command exited {client.returncode}\n"
                                        f"{client.stdout}\n{client.stderr}\n{logs(gw_name)}")
        assert "ok echo" in client.stdout, client.stdout

        # SIGTERM (docker stop), as the kubelet does: drained, exit 0, within the grace.
        for name, workload in ((gw_name, deploy), (gs_name, sts)):
            grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            started = time.monotonic()
            docker("stop", "--time", str(grace), name, timeout=grace + 30)
            took = time.monotonic() - started
            timings[f"{name.rsplit('-', 1)[1]} stop"] = took
            code = docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
            assert code == "0", f"{name} exited {code} on SIGTERM\n{logs(name)}"
            assert took < grace, f"{name} took {took:.1f} s >= {grace} s\n{logs(name)}"
        print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    finally:
        for name in reversed(created):
            docker("rm", "-f", "-v", name, timeout=60, check=False)
        docker("network", "rm", network, timeout=60, check=False)
