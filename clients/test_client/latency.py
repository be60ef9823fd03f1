"""Exact latency percentiles from raw samples, merged across benchmark processes.

Workers ship every sample (8 bytes each, a few MB per run) instead of a histogram, so the
percentiles of a multi-process run are exactly those of one big run: no bucket error to
explain when comparing the Gateway with the echo baseline.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable

#: Percentiles reported by ``bench`` (JSON keys ``p50_ms`` ...).
PERCENTILES = (50, 90, 99)


def merge_samples(chunks: Iterable[bytes]) -> array[int]:
    """Concatenate serialised ``array('q')`` sample chunks (nanoseconds)."""
    merged = array("q")
    for chunk in chunks:
        merged.frombytes(chunk)
    return merged


def percentile(sorted_values: list[int], pct: float) -> int:
    """Nearest-rank percentile of already sorted values (0 for no values)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_ms(samples_ns: Iterable[int]) -> dict[str, float]:
    """``p50_ms``, ``p90_ms``, ``p99_ms``, ``max_ms`` (0.0 each when there are no samples)."""
    ordered = sorted(samples_ns)
    summary = {f"p{pct}_ms": _ms(percentile(ordered, pct)) for pct in PERCENTILES}
    summary["max_ms"] = _ms(ordered[-1] if ordered else 0)
    return summary


def _ms(nanoseconds: int) -> float:
    return round(nanoseconds / 1e6, 3)
