#!/usr/bin/env python3
"""Randomized fault run: clients play MOVEs on 2 Gateways x 3 GameServers while a seeded
schedule kills, pauses and stops GameServers, stops Gateways and kills Redis; then every
client's acknowledged MOVE counts are checked (each the previous + 1, nothing lost, nothing
applied twice, never backwards). Exit status 1 on any violation.

The seed is printed first; ``--seed N`` replays the same faults on the same nodes.

    .venv/bin/python scripts/chaos.py                           # 60 s, random seed
    .venv/bin/python scripts/chaos.py --duration 600 --seed 42
    .venv/bin/python scripts/chaos.py --faults gameserver-kill,gameserver-stop --keep-logs out/

The run itself lives in tests/support/chaos.py (tests/test_chaos.py runs it in CI).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.support

from tests.support.chaos import ChaosConfig, run_chaos
from tests.support.chaos_schedule import FaultKind, parse_kinds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of play (60)")
    parser.add_argument("--seed", type=int, help="schedule seed (default: a random one)")
    parser.add_argument("--clients", type=int, default=20, help="logged-in clients (20)")
    parser.add_argument("--faults", default="all",
                        help="'all' or a comma-separated list of: "
                        + ", ".join(k.value for k in FaultKind))
    parser.add_argument("--interval", type=float, default=0.05,
                        help="pause after each acknowledged MOVE, seconds (0.05)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="one more service setting for every node (repeatable)")
    parser.add_argument("--keep-logs", type=Path, help="copy the service logs here")
    args = parser.parse_args(argv)
    try:
        kinds = parse_kinds(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    if any("=" not in item for item in args.env):
        parser.error("--env takes NAME=VALUE")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"seed {seed}", flush=True)
    config = ChaosConfig(seed=seed, duration=args.duration, clients=args.clients, kinds=kinds,
                         interval=args.interval,
                         env=dict(item.split("=", 1) for item in args.env))

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="gb-chaos-") as tmp:
        try:
            result = run_chaos(config, Path(tmp), log)
        finally:
            if args.keep_logs:
                shutil.copytree(tmp, args.keep_logs, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("*.aof", "appendonlydir"))
        print("\n".join(result.summary()), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
