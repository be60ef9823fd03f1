"""The fault run's seeded schedule (tests/support/chaos_schedule.py), pure and in-process."""

from __future__ import annotations

import itertools
import random

import pytest

from tests.support.chaos_schedule import (
    ALL_FAULTS,
    FaultKind,
    Timings,
    build_schedule,
    parse_kinds,
)

SEEDS = range(200)


def test_the_same_seed_gives_the_same_schedule() -> None:
    first = build_schedule(random.Random(11), 600)
    assert first == build_schedule(random.Random(11), 600)
    assert first != build_schedule(random.Random(12), 600)


@pytest.mark.parametrize("duration", [60.0, 600.0])
def test_faults_fit_the_run_and_never_overlap(duration: float) -> None:
    timings = Timings()
    for seed in SEEDS:
        faults = build_schedule(random.Random(seed), duration, timings=timings)
        assert faults, seed
        assert faults[0].at >= timings.warmup
        for fault in faults:
            assert fault.at + fault.hold + timings.recovery(fault.kind) <= duration - timings.tail
        for a, b in itertools.pairwise(faults):
            # the next fault starts after the previous one is undone, recovered and settled
            assert b.at >= a.at + a.hold + timings.recovery(a.kind) + timings.settle[0], seed


def test_a_60_s_run_sees_every_fault_kind() -> None:
    for seed in SEEDS:
        kinds = {f.kind for f in build_schedule(random.Random(seed), 60.0)}
        assert kinds == set(ALL_FAULTS), seed


def test_sigstop_outlasts_the_registry_expiry() -> None:
    timings = Timings(node_ttl_s=2.0)
    stops = [f for seed in SEEDS for f in build_schedule(random.Random(seed), 600, timings=timings)
             if f.kind is FaultKind.GAMESERVER_STOP]
    assert stops
    assert all(f.hold > timings.node_ttl_s + timings.stop_beyond_ttl[0] - 1e-9 for f in stops)


def test_targets_are_real_nodes_and_all_of_them_get_hit() -> None:
    faults = [f for seed in SEEDS for f in build_schedule(random.Random(seed), 120)]
    by_kind = {kind: {f.target for f in faults if f.kind is kind} for kind in ALL_FAULTS}
    assert by_kind[FaultKind.GATEWAY_TERM] == {0, 1}
    assert by_kind[FaultKind.REDIS_KILL] == {0}
    for kind in (FaultKind.GAMESERVER_KILL, FaultKind.GAMESERVER_STOP,
                 FaultKind.GAMESERVER_TERM):
        assert by_kind[kind] == {0, 1, 2}


def test_only_selected_kinds_and_none_that_would_take_the_last_node() -> None:
    kinds = (FaultKind.GAMESERVER_KILL, FaultKind.GATEWAY_TERM)
    faults = build_schedule(random.Random(5), 300, kinds, gameservers=3, gateways=2)
    assert {f.kind for f in faults} == set(kinds)
    lone = build_schedule(random.Random(5), 300, ALL_FAULTS, gameservers=1, gateways=1)
    assert {f.kind for f in lone} == {FaultKind.REDIS_KILL}


def test_a_run_too_short_for_any_fault_gets_none() -> None:
    assert build_schedule(random.Random(1), 5.0) == []


def test_fault_kinds_parse_from_the_command_line() -> None:
    assert parse_kinds("all") == ALL_FAULTS
    assert parse_kinds("redis-kill, gateway-term") == (FaultKind.REDIS_KILL,
                                                       FaultKind.GATEWAY_TERM)
    with pytest.raises(ValueError, match="gameserver-kill"):
        parse_kinds("gameserver-explode")
