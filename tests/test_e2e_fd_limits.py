"""A Gateway started with the common soft open-file limit of 1024 still holds more clients.

The Gateway raises its soft ``RLIMIT_NOFILE`` to the hard limit at start (servicekit.fdlimit)
and logs it. Here it is started the way a default shell or container starts it, with the
soft limit at 1024, and then has to hold 1,500 logged-in clients at once and answer a PING
on every one of them; without the raise it would fail accepting around the 1,000th.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from protocol import MsgType
from servicekit.fdlimit import (
    NofileLimit,
    describe_nofile_limit,
    lowered_soft_limit,
    raise_nofile_limit,
    target_soft_limit,
)
from tests.support.cluster import Cluster
from tests.support.raw import RawClient
from tests.support.users import new_user_id

CLIENTS = 1500
LOWERED = 1024


async def open_logged_in(address: tuple[str, int], gate: asyncio.Semaphore) -> RawClient:
    async with gate:
        client = await RawClient.connect(address)
        await client.login(new_user_id())
        return client


async def ping(client: RawClient, gate: asyncio.Semaphore) -> int:
    async with gate:
        frame = await client.request(MsgType.PING_REQ, 2, {"client_time_ms": 7})
        return frame.msg_type


async def test_gateway_raises_a_soft_limit_of_1024_and_holds_1500_clients(
    system_factory: Callable[..., Cluster],
) -> None:
    own = raise_nofile_limit()  # this test holds the 1,500 client ends itself
    if own.soft < CLIENTS + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {own.hard} is too low for {CLIENTS} clients")
    cluster = system_factory(start=False, env={"LOGIN_TIMEOUT_S": "120"})
    cluster.add_gameserver()
    with lowered_soft_limit(LOWERED):
        gateway = cluster.add_gateway(wait_ready=False)
    gateway.wait_ready(cluster.ready_timeout)
    line = gateway.process.wait_for_log("File descriptor limit:")
    raised = NofileLimit(LOWERED, target_soft_limit(own.hard), own.hard)
    assert line.endswith(describe_nofile_limit(raised))

    gate = asyncio.Semaphore(100)
    clients = await asyncio.gather(
        *(open_logged_in(gateway.address, gate) for _ in range(CLIENTS)))
    try:
        answers = await asyncio.gather(*(ping(client, gate) for client in clients))
        assert answers == [MsgType.PONG_RES] * CLIENTS
    finally:
        await asyncio.gather(*(client.close() for client in clients))
