"""The drain handover's choice of peer (:class:`gameserver.handover.TargetPicker`).

Pure: a registry as the heartbeat would have read it, and a set of peers the mesh reports
down; no sockets, no Redis. The live handover is covered end to end in test_cluster.py.
"""

from __future__ import annotations

from gameserver.handover import TargetPicker
from servicekit.registry import Registry

SELF = 1


def entry(sessions: int | str, draining: bool = False) -> tuple[str, int, dict[str, str]]:
    return ("127.0.0.1", 9000, {"sessions": str(sessions), "draining": "1" if draining else "0"})


def picker(registry: Registry, down: frozenset[int] = frozenset()) -> TargetPicker:
    return TargetPicker(SELF, lambda: registry, lambda node_id: node_id in down)


def test_the_peer_with_the_fewest_sessions_wins() -> None:
    assert picker({2: entry(7), 3: entry(2), 4: entry(5)}).pick(set()) == 3


def test_sessions_given_during_this_drain_count_on_top_of_the_registry() -> None:
    # The registry does not see our handovers until the peers' next heartbeats.
    targets = picker({2: entry(1), 3: entry(0)})
    assert [targets.pick(set()) for _ in range(5)] == [3, 2, 3, 2, 3]
    assert targets.assigned == {2: 2, 3: 3}


def test_a_pick_for_a_session_that_tried_others_counts_too() -> None:
    targets = picker({2: entry(0), 3: entry(0)})
    assert targets.pick({2}) == 3
    assert targets.pick(set()) == 2  # 3 already got one


def test_draining_peers_are_skipped() -> None:
    assert picker({2: entry(0, draining=True), 3: entry(9)}).pick(set()) == 3


def test_peers_the_mesh_reports_down_are_skipped() -> None:
    assert picker({2: entry(0), 3: entry(9)}, down=frozenset({2})).pick(set()) == 3


def test_it_never_picks_itself() -> None:
    assert picker({SELF: entry(0), 3: entry(9)}).pick(set()) == 3


def test_excluded_peers_are_skipped() -> None:
    assert picker({2: entry(0), 3: entry(1), 4: entry(9)}).pick({2, 3}) == 4


def test_a_missing_or_empty_session_count_is_zero() -> None:
    registry: Registry = {2: entry(1), 3: ("127.0.0.1", 9000, {"sessions": ""}),
                          4: ("127.0.0.1", 9000, {})}
    assert picker(registry).pick(set()) == 3


def test_none_when_nothing_qualifies_and_nothing_is_counted() -> None:
    assert picker({}).pick(set()) is None
    targets = picker({SELF: entry(0), 2: entry(0, draining=True), 3: entry(0), 4: entry(0)},
                     down=frozenset({3}))
    assert targets.pick({4}) is None
    assert targets.assigned == {}


def test_each_pick_reads_the_registry_as_last_read() -> None:
    current: Registry = {2: entry(0)}
    targets = TargetPicker(SELF, lambda: current, lambda node_id: False)
    assert targets.pick(set()) == 2
    current = {3: entry(0), 2: entry(0, draining=True)}
    assert targets.pick(set()) == 3
