"""Randomized fault run on 2 Gateways x 3 GameServers (tests/support/chaos.py), ~60 s.

Clients play MOVEs while a seeded schedule kills (-9), pauses (SIGSTOP past the registry
expiry) and stops (SIGTERM) GameServers, stops Gateways and kills Redis (AOF always), each
undone again; then every client's history must show its MOVEs acknowledged exactly once, in
order. The seed is printed first (``pytest -s`` shows it live, a failure repeats it):

    GB_CHAOS_SEED=1234 pytest tests/test_chaos.py      # replay a seed
    GB_CHAOS_SECONDS=300 pytest tests/test_chaos.py    # run longer
    GB_CHAOS_FAULTS=gameserver-kill,redis-kill ...     # only some fault kinds

``scripts/chaos.py --duration 600 --seed N`` runs the same thing from a shell.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.support.chaos import ChaosConfig, run_chaos
from tests.support.chaos_schedule import FaultKind, parse_kinds
from tests.support.redis_servers import redis_binary

SECONDS = float(os.environ.get("GB_CHAOS_SECONDS", "60"))
#: Under CI a fixed seed (hypothesis is derandomized there too: a red build must be the
#: code's doing); elsewhere a fresh one each run, printed. Seed 2 injects every fault kind
#: and twice a GameServer kill -9, and once aborted both Gateways (fixed since).
CI_SEED = 2
SEED = int(os.environ.get("GB_CHAOS_SEED")
           or (CI_SEED if os.environ.get("CI") else random.SystemRandom().randrange(2**32)))
KINDS = parse_kinds(os.environ.get("GB_CHAOS_FAULTS", "all"))

pytestmark = pytest.mark.skipif(
    redis_binary() is None,
    reason="needs a local redis-server to kill -9 and restart (apt-get install redis-server)")


# Play, plus up to two recovery waits and the start and stop of seven processes.
@pytest.mark.timeout(SECONDS + 240)
def test_randomized_faults_keep_every_move_exactly_once(tmp_path: Path) -> None:
    print(f"\nchaos seed {SEED} (replay: GB_CHAOS_SEED={SEED}), {SECONDS:g} s, "
          f"faults {','.join(k.value for k in KINDS)}", flush=True)
    result = run_chaos(ChaosConfig(seed=SEED, duration=SECONDS, kinds=KINDS), tmp_path)
    summary = "\n".join(result.summary())
    print(summary)
    assert result.ok, f"seed {SEED}:\n{summary}"
    # The run did what it says: the planned faults happened and clients were busy.
    assert len(result.faults) == len(result.schedule)
    if SECONDS >= 60 and set(KINDS) == set(FaultKind):
        assert {r.fault.kind for r in result.faults} == set(FaultKind)
    assert result.acknowledged > 10 * len(result.players)
