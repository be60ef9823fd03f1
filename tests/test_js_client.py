"""The JavaScript client library (clients/js/): its own unit tests (``npm test``, Node's test
runner), and the library against real services from Node: login, moves, a whisper between
two clients, and an automatic resume when its Gateway stops (SIGTERM), with the same
session and state. The page in a real browser is tests/test_browser_demo.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cluster import Cluster
from tests.support.users import new_user_id

JS = Path(__file__).resolve().parent.parent / "clients" / "js"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(NODE is None or NPM is None,
                                reason="needs Node.js and npm (apt-get install nodejs npm)")


def test_npm_test_passes() -> None:
    assert NPM is not None
    done = subprocess.run([NPM, "test", "--silent"], cwd=JS, capture_output=True, text=True,
                          timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "# fail 0" in output and "# pass " in output, output[-2000:]


def node_has_websocket() -> bool:
    assert NODE is not None
    done = subprocess.run([NODE, "--experimental-websocket", "-e",
                           "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                          capture_output=True, timeout=30, check=False)
    return done.returncode == 0


@pytest.mark.timeout(120)
def test_the_library_against_real_services(
        system_factory: Callable[..., Cluster]) -> None:
    if not node_has_websocket():
        pytest.skip("this Node.js has no WebSocket (Node >= 22, or 20 with the flag)")
    assert NODE is not None
    cluster = system_factory(gateways=2, env={"CLIENT_RATE_LIMIT": "0"})
    first, second = cluster.gateways
    user_a, user_b = new_user_id(), new_user_id()
    process = subprocess.Popen(
        [NODE, "--experimental-websocket", "examples/live-check.mjs",
         f"{first.ws_url},{second.ws_url}", str(user_a), str(user_b)],
        cwd=JS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()  # blocks until READY (or the script fails)
        assert ready.strip() == "READY", ready + (process.stderr.read() if process.stderr
                                                  else "")
        assert first.terminate() == 0  # A's Gateway drains: SERVER_SHUTDOWN, then close
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert [m["moves"] for m in report["moves"]] == [1, 2]
    assert report["whisper"] == {"from_user_id": user_b, "text": "hello from B"}
    assert report["rtt"] > 0
    # Resumed on the other Gateway: the same session, the state where it was, moves go on.
    assert report["sameSession"] is True
    assert report["snapshot"]["state"] == {"x": 3.0, "y": 4.0, "moves": 2}
    assert report["after"]["moves"] == 3
    assert "reconnecting" in report["statuses"] and report["statuses"][-1] == "online"
