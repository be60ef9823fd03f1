"""``python -m gateway``: run one Gateway (``--help`` lists every setting)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import uvloop

from gateway.config import GatewayConfig
from servicekit.config import load_or_exit
from servicekit.logs import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    config = load_or_exit(
        GatewayConfig, argv, prog="gateway",
        description="Gateway: accepts game clients over TCP and relays their frames to "
        "GameServers over ZeroMQ (dumb proxy).",
    )
    setup_logging("gateway", config.log_level, config.log_format)
    from gateway.app import GatewayApp

    return uvloop.run(GatewayApp(config).run())


if __name__ == "__main__":
    sys.exit(main())
