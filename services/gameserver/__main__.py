"""``python -m gameserver``: run one GameServer node (``--help`` lists every setting);
``python -m gameserver admin ...``: operator commands (see ``admin --help``);
``python -m gameserver keygen``: print a new cluster CURVE secret key (one Z85 line) for
``CLUSTER_CURVE_SECRET_FILE``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import uvloop

from gameserver.config import GameServerConfig
from servicekit.config import load_or_exit
from servicekit.logs import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["admin"]:
        from gameserver.admin import main as admin_main

        return admin_main(args[1:])
    if args[:1] == ["keygen"]:
        return keygen(args[1:])
    config = load_or_exit(
        GameServerConfig, args, prog="gameserver",
        description="GameServer: owns player sessions behind the Gateways (smart hub).",
    )
    setup_logging("gameserver", config.log_level, config.log_format)
    from gameserver.app import GameServerApp

    return uvloop.run(GameServerApp(config).run())


def keygen(args: Sequence[str]) -> int:
    """Print a new secret key. Nothing else is printed to stdout, so
    ``python -m gameserver keygen > cluster.key`` makes the file."""
    if args:
        print("usage: python -m gameserver keygen > FILE  (prints one new Z85 CURVE "
              "secret key for CLUSTER_CURVE_SECRET_FILE)", file=sys.stderr)
        return 0 if args[0] in ("-h", "--help") else 2
    from servicekit.curve import generate_secret

    print(generate_secret())
    return 0


if __name__ == "__main__":
    sys.exit(main())
