"""The seeded fault schedule of a randomized fault run: which fault, on which node, when.

Pure: :func:`build_schedule` turns ``random.Random(seed)`` and a duration into a list of
:class:`Fault` s, nothing else, so the same seed always replays the same faults (the timing of
the services around them is of course not replayed) and the rules below are unit-tested
(tests/test_chaos_schedule.py) without starting anything.

Rules, which keep the run meaningful rather than a pile of simultaneous outages:

- Faults do not overlap. Each one holds its node down for ``hold`` seconds and is then
  undone (restart, SIGCONT); the next one is planned ``recovery`` + ``settle`` seconds later,
  and the runner also waits until every client was served again before it goes on. So at
  most one GameServer (of 3) or one Gateway (of 2) or Redis is down at a time: at least
  two GameServers and one Gateway are always up.
- Every fault kind of the selection comes up once per round, in a seeded order, so a
  60 s run sees each kind at least once instead of whatever a coin gives it.
- SIGSTOP lasts longer than the registry expiry (``node_ttl_s``), so the paused GameServer
  is declared dead, its sessions move, and it wakes up into a cluster that has moved on.

Hand-rolled: a fault-injection framework (Jepsen's nemesis, chaos-mesh, toxiproxy) drives
containers or a network, not processes of one test run; the schedule itself is a few lines.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum


class FaultKind(StrEnum):
    GAMESERVER_KILL = "gameserver-kill"  # kill -9, restart after hold
    GAMESERVER_STOP = "gameserver-stop"  # SIGSTOP for hold (> registry expiry), SIGCONT
    GAMESERVER_TERM = "gameserver-term"  # SIGTERM (drain, hand over), restart after hold
    GATEWAY_TERM = "gateway-term"  # SIGTERM (clients told to go elsewhere), restart after hold
    REDIS_KILL = "redis-kill"  # kill -9 of redis-server (AOF always), restart after hold


ALL_FAULTS: tuple[FaultKind, ...] = tuple(FaultKind)


@dataclass(frozen=True)
class Timings:
    """How long faults last and how far apart they are, in seconds.

    ``recovery`` is what the planner allows for undoing a fault (a restarted GameServer first
    waits up to ``2 x NODE_TTL_S`` for its old registry entry; a drain takes a while); the
    runner waits for real recovery anyway, so these only space the plan.
    """

    node_ttl_s: float = 2.0
    warmup: float = 3.0
    tail: float = 3.0
    settle: tuple[float, float] = (2.0, 4.0)
    restart_hold: tuple[float, float] = (0.5, 2.0)
    stop_beyond_ttl: tuple[float, float] = (1.0, 3.0)
    redis_hold: tuple[float, float] = (0.5, 3.0)

    def recovery(self, kind: FaultKind) -> float:
        return {
            FaultKind.GAMESERVER_KILL: 2 * self.node_ttl_s + 2.0,
            FaultKind.GAMESERVER_STOP: 1.0,
            FaultKind.GAMESERVER_TERM: 4.0,
            FaultKind.GATEWAY_TERM: 3.0,
            FaultKind.REDIS_KILL: 2.0,
        }[kind]


@dataclass(frozen=True)
class Fault:
    """``kind`` on ``target`` (GameServer or Gateway index; 0 for Redis), ``at`` s into the run,
    undone after ``hold`` s."""

    at: float
    kind: FaultKind
    target: int
    hold: float

    def __str__(self) -> str:
        node = {FaultKind.GATEWAY_TERM: f"gateway[{self.target}]",
                FaultKind.REDIS_KILL: "redis"}.get(self.kind, f"gameserver[{self.target}]")
        return f"t={self.at:6.2f}s {self.kind} {node} hold {self.hold:.2f}s"


def build_schedule(
    rng: random.Random,
    duration: float,
    kinds: tuple[FaultKind, ...] = ALL_FAULTS,
    *,
    gameservers: int = 3,
    gateways: int = 2,
    timings: Timings | None = None,
) -> list[Fault]:
    """Faults for a run of ``duration`` s: planned to be over ``timings.tail`` s before the end.

    Gateway faults need a second Gateway to go to, and GameServer faults a second GameServer,
    so they are left out of a smaller cluster.
    """
    t = timings or Timings()
    usable = tuple(k for k in dict.fromkeys(kinds)
                   if (k is not FaultKind.GATEWAY_TERM or gateways >= 2)
                   and (k in (FaultKind.GATEWAY_TERM, FaultKind.REDIS_KILL) or gameservers >= 2))
    faults: list[Fault] = []
    at = t.warmup
    round_: list[FaultKind] = []
    while usable:
        if not round_:
            round_ = list(usable)
            rng.shuffle(round_)
        kind = round_.pop(0)
        hold = _hold(rng, kind, t)
        if at + hold + t.recovery(kind) > duration - t.tail:
            break
        target = (rng.randrange(gateways) if kind is FaultKind.GATEWAY_TERM
                  else 0 if kind is FaultKind.REDIS_KILL else rng.randrange(gameservers))
        faults.append(Fault(round(at, 3), kind, target, round(hold, 3)))
        at += hold + t.recovery(kind) + rng.uniform(*t.settle)
    return faults


def _hold(rng: random.Random, kind: FaultKind, t: Timings) -> float:
    if kind is FaultKind.GAMESERVER_STOP:
        return t.node_ttl_s + rng.uniform(*t.stop_beyond_ttl)
    if kind is FaultKind.REDIS_KILL:
        return rng.uniform(*t.redis_hold)
    return rng.uniform(*t.restart_hold)


def parse_kinds(text: str) -> tuple[FaultKind, ...]:
    """``"all"`` or a comma-separated list of :class:`FaultKind` values (for ``--faults``)."""
    if text.strip() == "all":
        return ALL_FAULTS
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [n for n in names if n not in {k.value for k in FaultKind}]
    if unknown or not names:
        valid = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"unknown fault kind(s) {unknown or text!r}; valid: all, {valid}")
    return tuple(FaultKind(n) for n in names)
