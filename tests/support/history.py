"""What every client of a fault run saw of its MOVEs, and the check that it is all consistent.

A :class:`ClientHistory` records, per client, each MOVE transmission (sequence id), each
answer (``MOVE_RES`` with ``moves``) and each failure (``SERVER_UNAVAILABLE``, a timeout, a
lost connection: the outcome is unknown, the client retries the *same* sequence id).
:func:`check_history` is pure: it looks only at the record, never at a clock or a socket, so
it is unit-tested with hand-made histories (tests/test_chaos_history.py) and then trusted on
the histories of real runs (tests/support/chaos.py).

The server guarantees MOVE is exactly-once per session (docs/PROTOCOL.md §7.3) and ``moves``
in ``MOVE_RES`` counts the moves applied for the player so far. So for one client playing one
MOVE at a time, the acknowledged values must go ``initial+1, initial+2, ...`` in sequence-id
order, a retried sequence id must get the value it got before, and a last MOVE after the run
must get ``last acknowledged + 1``. Anything else is a violation:

``doubled``            a value above the expected one: some MOVE was applied twice
``lost``               a value at or below the expected one minus one: an acknowledged MOVE's
                       effect is gone (``backwards`` when it is below an earlier value)
``backwards``          a value below the previous acknowledged value: state went back
``retried_different``  one sequence id acknowledged with two different values
``unacknowledged``     a MOVE the client never got a ``MOVE_RES`` for
``rejected``           a non-transient error (``DUPLICATE_SEQUENCE``, ``NOT_LOGGED_IN``...): the
                       outcome can no longer be learned
``session_lost``       the session could not be resumed
``no_final``           the history does not end with the after-run MOVE

Hand-rolled because this is the project's own invariant over its own protocol; a general
linearizability checker (Knossos, Porcupine) has no Python binding and would need a model of
the same one counter anyway.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Violation(StrEnum):
    DOUBLED = "doubled"
    LOST = "lost"
    BACKWARDS = "backwards"
    RETRIED_DIFFERENT = "retried_different"
    UNACKNOWLEDGED = "unacknowledged"
    REJECTED = "rejected"
    SESSION_LOST = "session_lost"
    NO_FINAL = "no_final"


@dataclass(frozen=True)
class Finding:
    """One violation in one client's history."""

    client: int
    kind: Violation
    seq: int | None
    detail: str

    def __str__(self) -> str:
        where = f" seq={self.seq}" if self.seq is not None else ""
        return f"client {self.client}{where}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class Sent:
    at: float
    seq: int
    retry: bool


@dataclass(frozen=True)
class Answered:
    at: float
    seq: int
    moves: int


@dataclass(frozen=True)
class Failed:
    """An answer that leaves the outcome unknown (or, with ``final=True``, a dead end)."""

    at: float
    seq: int
    reason: str
    final: bool = False


type Event = Sent | Answered | Failed


@dataclass
class ClientHistory:
    """The MOVEs of one client, in the order it saw things happen.

    ``initial_moves`` is ``state.moves`` from the LOGIN answer. ``final_seq`` is set when the
    after-run MOVE is sent; its answer is checked like any other, and it must be the last.
    """

    client: int
    initial_moves: int = 0
    events: list[Event] = field(default_factory=list)
    final_seq: int | None = None
    session_lost: str | None = None
    #: When the last ``MOVE_RES`` came (a runner polls this while waiting for recovery).
    last_ack_at: float | None = None

    def sent(self, at: float, seq: int, *, final: bool = False) -> None:
        retry = any(isinstance(e, Sent) and e.seq == seq for e in reversed(self.events))
        self.events.append(Sent(at, seq, retry))
        if final:
            self.final_seq = seq

    def answered(self, at: float, seq: int, moves: int) -> None:
        self.events.append(Answered(at, seq, moves))
        self.last_ack_at = at

    def failed(self, at: float, seq: int, reason: str, *, final: bool = False) -> None:
        self.events.append(Failed(at, seq, reason, final))

    def lost_session(self, reason: str) -> None:
        self.session_lost = reason

    # derived views

    def acknowledgements(self) -> list[Answered]:
        return [e for e in self.events if isinstance(e, Answered)]

    def ack_times(self) -> list[float]:
        return [e.at for e in self.acknowledgements()]

    def retries(self) -> int:
        return sum(1 for e in self.events if isinstance(e, Sent) and e.retry)

    def failures(self) -> list[Failed]:
        return [e for e in self.events if isinstance(e, Failed)]


def check_history(history: ClientHistory) -> list[Finding]:
    """Every violation in one client's history (empty: consistent)."""
    found: list[Finding] = []

    def add(kind: Violation, seq: int | None, detail: str) -> None:
        found.append(Finding(history.client, kind, seq, detail))

    first_value: dict[int, int] = {}
    for ack in history.acknowledgements():
        seen = first_value.setdefault(ack.seq, ack.moves)
        if seen != ack.moves:
            add(Violation.RETRIED_DIFFERENT, ack.seq,
                f"answered moves={seen} first, moves={ack.moves} on a retry")

    previous = history.initial_moves
    for seq in sorted(first_value):
        value, expected = first_value[seq], previous + 1
        if value > expected:
            add(Violation.DOUBLED, seq, f"moves={value}, expected {expected}: "
                f"{value - expected} more applied than acknowledged")
        elif value < previous:
            add(Violation.BACKWARDS, seq, f"moves={value} after moves={previous}")
        elif value < expected:
            add(Violation.LOST, seq, f"moves={value}, expected {expected}: "
                f"an acknowledged MOVE was lost")
        previous = value

    sent_seqs = {e.seq for e in history.events if isinstance(e, Sent)}
    for seq in sorted(sent_seqs - first_value.keys()):
        last = next((e for e in reversed(history.events)
                     if isinstance(e, Failed) and e.seq == seq), None)
        add(Violation.UNACKNOWLEDGED, seq,
            "never answered with MOVE_RES" + (f" (last: {last.reason})" if last else ""))
    for failure in history.failures():
        if failure.final:
            add(Violation.REJECTED, failure.seq, failure.reason)
    if history.session_lost is not None:
        add(Violation.SESSION_LOST, None, history.session_lost)
    if history.final_seq is None:
        add(Violation.NO_FINAL, None, "no MOVE after the run")
    elif sent_seqs and history.final_seq != max(sent_seqs):
        add(Violation.NO_FINAL, history.final_seq,
            f"the after-run MOVE is not the last (seq {max(sent_seqs)} came later)")
    return found


def check_all(histories: Iterable[ClientHistory]) -> list[Finding]:
    return [finding for history in histories for finding in check_history(history)]


@dataclass(frozen=True)
class Gap:
    """The longest time one client went without an acknowledged MOVE."""

    client: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def service_gaps(history: ClientHistory, start: float, end: float) -> list[Gap]:
    """Every interval in ``[start, end]`` between two acknowledgements for this client.

    ``start`` is when the client began playing and ``end`` when it stopped, so a client that
    was never answered after some point has a gap running to ``end``.
    """
    times = [start, *(t for t in history.ack_times() if start <= t <= end), end]
    return [Gap(history.client, a, b) for a, b in itertools.pairwise(times)]


def longest_gap(history: ClientHistory, start: float, end: float) -> Gap:
    """The longest time in ``[start, end]`` this client went without an acknowledgement."""
    return max(service_gaps(history, start, end), key=lambda gap: gap.seconds)
