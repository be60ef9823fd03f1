"""Test client of the game-server backbone: a client library, a CLI, a load generator.

``GameClient`` speaks wire protocol v1 (from the ``protocol`` package) to a Gateway and resumes
its session after drops, re-sending unanswered requests with their original sequence ids, so
integration tests can check exactly-once behaviour end to end. ``python -m test_client`` wraps
it for people and scripts; ``bench`` and ``echo_server`` measure throughput and its baseline.
"""

from test_client.client import GameClient, Push, check_response
from test_client.errors import (
    ClientError,
    ConnectionLost,
    NotConnected,
    ReconnectFailed,
    RequestError,
    RequestTimeout,
)

__all__ = [
    "ClientError",
    "ConnectionLost",
    "GameClient",
    "NotConnected",
    "Push",
    "ReconnectFailed",
    "RequestError",
    "RequestTimeout",
    "check_response",
]
