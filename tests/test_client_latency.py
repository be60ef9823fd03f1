"""Percentiles of the bench report: exact, whether samples come in one piece or many."""

from __future__ import annotations

from array import array

from protocol import MsgType, read_header
from test_client.bench import echo_frame
from test_client.latency import merge_samples, percentile, summarize_ms


def test_nearest_rank_percentiles() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7], 99) == 7
    assert percentile([], 50) == 0


def test_merged_chunks_give_the_same_summary_as_one_array() -> None:
    samples = [(i * 7919) % 100_000 * 1000 for i in range(10_000)]
    whole = summarize_ms(samples)
    chunks = [array("q", samples[i::3]).tobytes() for i in range(3)]
    assert summarize_ms(merge_samples(chunks)) == whole
    assert whole["max_ms"] == max(samples) / 1e6


def test_empty_summary_is_zeros() -> None:
    assert summarize_ms([]) == {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}


def test_echo_frame_has_about_the_requested_payload_size() -> None:
    frame = echo_frame(100)
    header = read_header(frame)
    assert header.msg_type == MsgType.ECHO_REQ
    assert len(frame) - 12 == 100
