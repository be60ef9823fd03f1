"""The fault run's history checker (tests/support/history.py) on hand-made histories.

Each violation it exists to catch is built here by hand, so a checker that stopped noticing
one would fail this file rather than bless a broken run.
"""

from __future__ import annotations

from tests.support.history import ClientHistory, Violation, check_history, longest_gap


def played(*answers: tuple[int, int], initial: int = 0, final: bool = True) -> ClientHistory:
    """A history of MOVEs ``(seq, moves)``, each sent once and answered; the last is final."""
    history = ClientHistory(client=7, initial_moves=initial)
    for n, (seq, moves) in enumerate(answers):
        history.sent(float(n), seq, final=final and n == len(answers) - 1)
        history.answered(n + 0.5, seq, moves)
    return history


def kinds(history: ClientHistory) -> list[Violation]:
    return [finding.kind for finding in check_history(history)]


def test_consecutive_moves_with_a_retried_sequence_id_pass() -> None:
    history = ClientHistory(client=1, initial_moves=4)
    history.sent(0.0, 2)
    history.answered(0.1, 2, 5)
    history.sent(0.2, 3)
    history.failed(0.3, 3, "ERROR_RES SERVER_UNAVAILABLE")
    history.sent(0.4, 3)
    history.failed(0.5, 3, "timeout")
    history.sent(0.6, 3)
    history.answered(0.7, 3, 6)
    history.answered(0.8, 3, 6)  # a late answer to an earlier transmission: same bytes
    history.sent(0.9, 5, final=True)  # gaps in sequence ids are fine
    history.answered(1.0, 5, 7)
    assert check_history(history) == []
    assert history.retries() == 2
    assert len(history.failures()) == 2


def test_a_value_above_the_expected_one_is_doubled() -> None:
    history = played((1, 1), (2, 3), (3, 4))
    [finding] = check_history(history)
    assert finding.kind is Violation.DOUBLED
    assert finding.seq == 2
    assert "expected 2" in finding.detail


def test_a_final_move_that_does_not_count_the_last_acknowledged_one_is_lost() -> None:
    assert kinds(played((1, 1), (2, 2), (3, 2))) == [Violation.LOST]


def test_a_value_below_an_earlier_one_is_backwards() -> None:
    assert kinds(played((1, 1), (2, 2), (3, 3), (4, 1), (5, 2))) == [Violation.BACKWARDS]


def test_the_first_answer_must_follow_the_login_state() -> None:
    assert kinds(played((1, 1), initial=5)) == [Violation.BACKWARDS]
    assert kinds(played((1, 6), initial=5)) == []


def test_a_retry_answered_with_another_value_is_caught() -> None:
    history = ClientHistory(client=3)
    history.sent(0.0, 1)
    history.answered(0.1, 1, 1)
    history.sent(0.2, 1)
    history.answered(0.3, 1, 2)  # the retry was applied again
    history.sent(0.4, 2, final=True)
    history.answered(0.5, 2, 3)
    found = check_history(history)
    assert [f.kind for f in found] == [Violation.RETRIED_DIFFERENT, Violation.DOUBLED]
    assert found[0].seq == 1


def test_a_move_never_acknowledged_is_reported_with_its_last_error() -> None:
    history = played((1, 1), final=False)
    history.sent(1.0, 2, final=True)
    history.failed(1.5, 2, "timeout")
    [finding] = check_history(history)
    assert finding.kind is Violation.UNACKNOWLEDGED
    assert finding.seq == 2
    assert "timeout" in finding.detail


def test_a_refused_move_and_a_lost_session_are_violations() -> None:
    history = played((1, 1), final=False)
    history.sent(1.0, 2)
    history.failed(1.1, 2, "ERROR_RES DUPLICATE_SEQUENCE", final=True)
    history.lost_session("RECONNECT refused: SESSION_EXPIRED")
    assert kinds(history) == [Violation.UNACKNOWLEDGED, Violation.REJECTED,
                              Violation.SESSION_LOST, Violation.NO_FINAL]


def test_a_history_without_the_after_run_move_is_incomplete() -> None:
    assert kinds(played((1, 1), (2, 2), final=False)) == [Violation.NO_FINAL]


def test_the_longest_gap_runs_from_start_to_the_first_answer_and_to_the_end() -> None:
    history = played((1, 1), (2, 2), (3, 3))  # answers at 0.5, 1.5, 2.5
    gap = longest_gap(history, start=0.0, end=10.0)
    assert (gap.start, gap.end) == (2.5, 10.0)
    gap = longest_gap(history, start=0.0, end=3.0)
    assert gap.seconds == 1.0
    assert gap.client == 7
