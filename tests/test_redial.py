"""Dialling a GameServer again under the same routing id must never abort the process.

The randomized fault run found it: a Gateway hung up on a killed GameServer (its registry
entry expired) with batches still queued for it, the GameServer came back, the Gateway
dialled ``gs-N`` again, and libzmq aborted with ``router.cpp: !has_out_pipe (routing_id)``
(servicekit/redial.py explains why). Those checks run in a child process, because the
failure they guard against is an abort() that would take pytest down with it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from servicekit.redial import RedialGuard
from tests.support.ports import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_routing_id_may_be_dialled_again_only_after_the_wait() -> None:
    clock = Clock()
    guard = RedialGuard(clock, wait_s=1.0)
    assert guard.may_dial(b"gs-1")
    guard.hung_up(b"gs-1")
    assert not guard.may_dial(b"gs-1")
    assert guard.may_dial(b"gs-2")
    clock.now += 0.99
    assert not guard.may_dial(b"gs-1")
    clock.now += 0.01
    assert guard.may_dial(b"gs-1")


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


def test_redialling_after_hang_up_with_queued_batches_does_not_abort() -> None:
    """A dead peer with batches queued for it, hung up on and dialled again 50 ms later
    (twenty times sooner than REDIAL_AFTER_S): the process survives."""
    port = free_port()
    child = run_child(f"""
        import time, zmq
        from servicekit.redial import hang_up
        endpoint = "tcp://127.0.0.1:{port}"  # nobody listens: the peer is dead
        sock = zmq.Context().socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, 1000)
        for _ in range(3):
            sock.setsockopt(zmq.CONNECT_ROUTING_ID, b"gs-1")
            sock.connect(endpoint)
            time.sleep(0.05)
            for _ in range(100):
                sock.send_multipart([b"gs-1", b"batch"], zmq.NOBLOCK)  # queued, never sent
            hang_up(sock, endpoint, 1000)
            time.sleep(0.05)
            sock.getsockopt(zmq.EVENTS)  # let the socket process its pending commands
        assert sock.getsockopt(zmq.LINGER) == 1000
        print("survived")
    """)
    assert child.returncode == 0 and "survived" in child.stdout, child.stderr[-2000:]


def test_a_gameserver_that_moved_is_dialled_at_its_new_address_after_the_wait() -> None:
    """GameServerLinks, on a running event loop: a node whose address changed, with batches
    queued for it, is hung up on at once and dialled at the new address only at an update
    after the redial wait (never in the same one), and the process lives on."""
    old_port, new_port = free_port(), free_port()
    child = run_child(f"""
        import asyncio, time, zmq
        from gateway.links import GameServerLinks
        from protocol.internal import Kind
        from servicekit.redial import REDIAL_AFTER_S

        async def main():
            context = zmq.Context()
            links = GameServerLinks(context, b"gw-test", lambda *_: None, lambda *_: None,
                                    3.0, lambda _: None)
            links.update({{1: ("127.0.0.1", {old_port}, {{}})}})
            for _ in range(100):
                links.send(b"gs-1", Kind.FRAME, bytes(16), 0, b"frame")
            links.flush()
            await asyncio.sleep(0.05)
            links.update({{1: ("127.0.0.1", {new_port}, {{}})}})
            assert b"gs-1" not in links.upstreams, "dialled again in the same update"
            await asyncio.sleep(REDIAL_AFTER_S / 2)
            links.update({{1: ("127.0.0.1", {new_port}, {{}})}})
            assert b"gs-1" not in links.upstreams, "dialled again before the wait was over"
            await asyncio.sleep(REDIAL_AFTER_S / 2 + 0.05)
            links.update({{1: ("127.0.0.1", {new_port}, {{}})}})
            assert links.upstreams[b"gs-1"].endpoint == "tcp://127.0.0.1:{new_port}"
            await asyncio.sleep(0.1)
            links.close()
            context.term()
            print("survived")

        asyncio.run(main())
    """)
    assert child.returncode == 0 and "survived" in child.stdout, child.stderr[-2000:]
