"""Smoke test: the backbone starts from its real entry points and reports itself healthy.

If this fails, every other integration test would fail with a less direct message; the
failure report carries both services' log tails.
"""

from __future__ import annotations

from tests.support.cluster import Cluster


def test_both_services_are_ready(system: Cluster) -> None:
    assert system.gameserver.process.readyz_status() == 200
    assert system.gateway.process.readyz_status() == 200


def test_both_services_serve_prometheus_metrics(system: Cluster) -> None:
    for node in (system.gameserver, system.gateway):
        status, body = node.process.http("/metrics")
        assert status == 200, f"{node.process.name} /metrics answered {status}"
        assert "# HELP" in body, f"{node.process.name} /metrics has no HELP lines"
