"""A randomized, seeded fault run: 2 Gateways x 3 GameServers, clients playing MOVEs, faults.

:func:`run_chaos` starts a persistent redis-server (AOF, ``appendfsync always``, so a
``kill -9`` loses nothing acknowledged) and a :class:`~tests.support.cluster.Cluster` of
real processes, logs ``clients`` players in over both Gateways, and lets them play
(tests/support/chaos_players.py) while the faults of the seeded schedule
(tests/support/chaos_schedule.py) are injected one after the other. After each fault is
undone it waits until every client was served again, which is what keeps the faults apart.
Then the players stop, each sends one last MOVE, and every history goes through the
checker (tests/support/history.py).

Used by ``scripts/chaos.py`` (long runs, any seed) and tests/test_chaos.py (about 60 s in
CI). Both print the seed first: the same seed replays the same faults on the same nodes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.chaos_players import Player, join
from tests.support.chaos_schedule import ALL_FAULTS, Fault, FaultKind, Timings, build_schedule
from tests.support.cluster import DEFAULT_ENV, Cluster
from tests.support.history import Finding, Gap, check_all, longest_gap, service_gaps
from tests.support.redis_servers import LocalRedisServer
from tests.support.users import new_user_id
from tests.support.waiting import WaitTimeout, wait_until_async

GAMESERVERS, GATEWAYS = 3, 2
#: On top of the cluster helper's fast registry (NODE_TTL_S=2 s, heartbeat 0.25 s): no
#: per-connection rate limit, so the Gateway's abuse guard never throttles a player.
CHAOS_ENV: dict[str, str | None] = {"CLIENT_RATE_LIMIT": "0"}
#: A restarted GameServer waits up to 2 x NODE_TTL_S for its old registry entry first.
NODE_START_TIMEOUT_S = 60.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class ChaosConfig:
    seed: int
    duration: float = 60.0
    clients: int = 20
    kinds: tuple[FaultKind, ...] = ALL_FAULTS
    #: Pause after each acknowledged MOVE: 20 clients at up to 20 MOVE/s each leave the 2
    #: cores of a CI machine room for 5 services and a Redis that fsyncs every write.
    interval: float = 0.05
    request_timeout: float = 5.0
    #: After a fault is undone, every client must have been served again within this.
    recovery_timeout: float = 45.0
    env: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def node_ttl_s(self) -> float:
        return float(self.env.get("NODE_TTL_S") or DEFAULT_ENV["NODE_TTL_S"])

    def schedule(self) -> list[Fault]:
        return build_schedule(random.Random(self.seed), self.duration, self.kinds,
                              gameservers=GAMESERVERS, gateways=GATEWAYS,
                              timings=Timings(node_ttl_s=self.node_ttl_s))


@dataclass
class FaultRecord:
    """One injected fault and when it was injected, undone and recovered from (monotonic)."""

    fault: Fault
    started: float
    undone: float | None = None
    recovered: float | None = None


@dataclass
class ChaosResult:
    config: ChaosConfig
    schedule: list[Fault]
    faults: list[FaultRecord]
    players: list[Player]
    findings: list[Finding]
    gaps: list[Gap]
    started: float
    ended: float
    problems: list[str]
    tracebacks: dict[str, int]
    log_dir: Path

    @property
    def ok(self) -> bool:
        return not self.findings and not self.problems

    @property
    def acknowledged(self) -> int:
        return sum(len({a.seq for a in p.history.acknowledgements()}) for p in self.players)

    @property
    def longest_gap(self) -> Gap | None:
        return max(self.gaps, key=lambda g: g.seconds, default=None)

    def fault_during(self, gap: Gap) -> FaultRecord | None:
        """The fault whose window (injection to recovery) the gap overlaps, if any."""
        for record in self.faults:
            end = record.recovered or record.undone or self.ended
            if gap.start <= end and gap.end >= record.started:
                return record
        return None

    def longest_gap_per_kind(self) -> dict[FaultKind, float]:
        """Per fault kind, the longest gap of any client that overlaps such a fault."""
        worst: dict[FaultKind, float] = {}
        all_gaps = [g for p in self.players
                    for g in service_gaps(p.history, self.started, self.ended)]
        for record in self.faults:
            end = record.recovered or record.undone or self.ended
            longest = max((g.seconds for g in all_gaps
                           if g.start <= end and g.end >= record.started), default=0.0)
            worst[record.fault.kind] = max(worst.get(record.fault.kind, 0.0), longest)
        return worst

    def summary(self) -> list[str]:
        errors = Counter(f.reason for p in self.players for f in p.history.failures())
        kinds = Counter(r.fault.kind.value for r in self.faults)
        lines = [
            f"seed {self.config.seed}: {self.ended - self.started:.1f} s of play, "
            f"{len(self.players)} clients, {GATEWAYS} Gateways x {GAMESERVERS} GameServers, "
            f"faults {','.join(k.value for k in self.config.kinds)}",
            f"faults injected: {len(self.faults)} of {len(self.schedule)} planned ("
            + (", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "none") + ")",
            f"MOVEs acknowledged: {self.acknowledged} (distinct sequence ids, final MOVEs "
            "included)",
            f"errors: {sum(errors.values())} ("
            + (", ".join(f"{k} x{n}" for k, n in errors.most_common()) or "none")
            + f"), retries with the same sequence id: "
            f"{sum(p.history.retries() for p in self.players)}, session resumptions: "
            f"{sum(p.reconnects for p in self.players)}",
        ]
        gap = self.longest_gap
        if gap is not None:
            during = self.fault_during(gap)
            lines.append(f"longest service gap: {gap.seconds:.3f} s (client {gap.client}"
                         + (f", around {during.fault.kind} {target_name(during.fault)}"
                            if during else ", no fault") + ")")
        worst = self.longest_gap_per_kind()
        for kind in self.config.kinds:
            if kind in worst:
                lines.append(f"  longest gap around {kind}: {worst[kind]:.3f} s")
        if self.tracebacks:
            lines.append("tracebacks in service logs: " + ", ".join(
                f"{name} x{n}" for name, n in sorted(self.tracebacks.items())))
        lines += [f"PROBLEM {p}" for p in self.problems]
        lines += [f"VIOLATION {f}" for f in self.findings[:50]]
        if len(self.findings) > 50:
            lines.append(f"... and {len(self.findings) - 50} more violations")
        lines.append("OK: every client's MOVEs acknowledged exactly once, in order"
                     if self.ok else
                     f"FAILED (replay: --seed {self.config.seed}; logs in {self.log_dir})")
        return lines


def target_name(fault: Fault) -> str:
    if fault.kind is FaultKind.REDIS_KILL:
        return "redis"
    node = "gateway" if fault.kind is FaultKind.GATEWAY_TERM else "gameserver"
    return f"{node}[{fault.target}]"


def run_chaos(config: ChaosConfig, log_dir: Path, log: Log = print) -> ChaosResult:
    """Start everything, run the schedule while the clients play, check, stop everything."""
    schedule = config.schedule()
    log(f"chaos seed {config.seed}: {len(schedule)} faults planned in {config.duration:g} s")
    for fault in schedule:
        log(f"  planned {fault}")
    redis = LocalRedisServer(log_dir / "redis", persistent=True).start()
    cluster = Cluster(redis, log_dir, env={**CHAOS_ENV, **config.env})
    # Processes are stopped and restarted from this one thread, which lives until they are
    # all stopped: children get SIGKILL when the *thread* that started them exits
    # (PR_SET_PDEATHSIG, tests/support/processes.py), so asyncio's default executor, shut
    # down at the end of asyncio.run(), would kill every node it had restarted.
    hands = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos")
    try:
        cluster.start(gameservers=GAMESERVERS, gateways=GATEWAYS)
        result = asyncio.run(_drive(config, cluster, redis, schedule, hands, log))
        result.problems += [f"{p.name} is not running at the end (exit {p.returncode})"
                            for p in cluster.processes() if not p.running]
        result.tracebacks = {p.name: n for p in cluster.processes()
                             if (n := p.log_text().count("Traceback"))}
        return result
    finally:
        for node in cluster.gameservers:  # a run cut short may leave one paused
            node.process.send_signal(signal.SIGCONT)
        cluster.stop()
        redis.close()
        hands.shutdown()


async def _drive(config: ChaosConfig, cluster: Cluster, redis: LocalRedisServer,
                 schedule: list[Fault], hands: concurrent.futures.Executor,
                 log: Log) -> ChaosResult:
    gateways = [g.address for g in cluster.gateways]
    players = list(await asyncio.gather(
        *(join(i, new_user_id(), gateways, config.request_timeout)
          for i in range(config.clients))))
    stop = asyncio.Event()
    started = time.monotonic()
    loops = [asyncio.create_task(p.play(stop, config.interval)) for p in players]
    records: list[FaultRecord] = []
    problems: list[str] = []
    try:
        await _inject_all(config, cluster, redis, schedule, hands, players, started,
                          records, problems, log)
        await asyncio.sleep(max(0.0, started + config.duration - time.monotonic()))
    finally:
        stop.set()
    stopped_at = time.monotonic()
    _, pending = await asyncio.wait(loops, timeout=config.recovery_timeout)
    for player, task in zip(players, loops, strict=True):
        if task in pending:  # its MOVE stays unacknowledged: no final MOVE after it
            task.cancel()
            player.stopped = "a MOVE was still unanswered when the run ended"
    if pending:
        problems.append(f"{len(pending)} clients still waiting for a MOVE answer "
                        f"{config.recovery_timeout:g} s after the run")
    problems += [f"client loop crashed: {task.exception()!r}" for task in loops
                 if task.done() and not task.cancelled() and task.exception() is not None]
    finals = [asyncio.create_task(p.final_move()) for p in players]
    _, pending = await asyncio.wait(finals, timeout=config.recovery_timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*(p.client.close() for p in players), return_exceptions=True)
    log(f"{stopped_at - started:6.1f}s clients stopped")
    return ChaosResult(
        config=config, schedule=schedule, faults=records, players=players,
        findings=check_all(p.history for p in players),
        gaps=[longest_gap(p.history, started, stopped_at) for p in players],
        started=started, ended=stopped_at, problems=problems, tracebacks={},
        log_dir=cluster.log_dir)


async def _inject_all(config: ChaosConfig, cluster: Cluster, redis: LocalRedisServer,
                      schedule: list[Fault], hands: concurrent.futures.Executor,
                      players: list[Player], started: float, records: list[FaultRecord],
                      problems: list[str], log: Log) -> None:
    """Each fault in turn: inject, hold, undo, wait until every client was served again."""
    loop = asyncio.get_running_loop()
    for fault in schedule:
        await asyncio.sleep(max(0.0, started + fault.at - time.monotonic()))
        record = FaultRecord(fault, time.monotonic())
        records.append(record)
        log(f"{record.started - started:6.1f}s inject {fault.kind} {target_name(fault)} "
            f"(hold {fault.hold:.2f} s)")
        try:
            await loop.run_in_executor(hands, _inject, cluster, redis, fault)
            await asyncio.sleep(fault.hold)
            await loop.run_in_executor(hands, _undo, cluster, redis, fault)
        except Exception as exc:  # a node that will not come back ends the schedule
            problems.append(f"{fault.kind} {target_name(fault)}: {type(exc).__name__}: {exc}")
            return
        undone = record.undone = time.monotonic()

        def served_again(since: float = undone) -> bool:
            return all(p.stopped is not None or (p.history.last_ack_at or 0.0) > since
                       for p in players)

        try:
            await wait_until_async(served_again, timeout=config.recovery_timeout)
        except WaitTimeout:
            late = [p.index for p in players if not served_again(undone)]
            problems.append(f"after {fault.kind} {target_name(fault)}: clients {late} not "
                            f"served within {config.recovery_timeout:g} s of the undo")
            continue
        record.recovered = time.monotonic()
        log(f"{record.recovered - started:6.1f}s   undone after "
            f"{undone - record.started:.2f} s, every client served again "
            f"{record.recovered - undone:.2f} s later")


def _inject(cluster: Cluster, redis: LocalRedisServer, fault: Fault) -> None:
    if fault.kind is FaultKind.REDIS_KILL:
        redis.kill()
    elif fault.kind is FaultKind.GATEWAY_TERM:
        cluster.gateways[fault.target].terminate()
    elif fault.kind is FaultKind.GAMESERVER_KILL:
        cluster.gameservers[fault.target].kill()
    elif fault.kind is FaultKind.GAMESERVER_STOP:
        cluster.gameservers[fault.target].process.send_signal(signal.SIGSTOP)
    else:
        cluster.gameservers[fault.target].terminate()


def _undo(cluster: Cluster, redis: LocalRedisServer, fault: Fault) -> None:
    if fault.kind is FaultKind.REDIS_KILL:
        redis.start()
    elif fault.kind is FaultKind.GATEWAY_TERM:
        cluster.gateways[fault.target].start(timeout=NODE_START_TIMEOUT_S)
    elif fault.kind is FaultKind.GAMESERVER_STOP:
        cluster.gameservers[fault.target].process.send_signal(signal.SIGCONT)
    else:
        cluster.gameservers[fault.target].start(timeout=NODE_START_TIMEOUT_S)
