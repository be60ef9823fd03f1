"""Per-connection admission control, pure and clock-injected: a token-bucket rate limit and
the in-flight window.

Both run once per client frame on the Gateway's hot path, so they are a few attribute
updates each, not a library call: the rate-limit packages on PyPI (``limits``, ``aiolimiter``,
``pyrate-limiter``) either await (one task switch per frame), keep per-key storage behind
a backend, or read the clock per call, and none says "this client has been over its limit
for five seconds", which is what the kick needs.
"""

from __future__ import annotations


class RateLimiter:
    """A token bucket (``rate`` frames/s, ``burst`` deep) that remembers how long its owner
    has been over the limit.

    An *episode* of being over the limit starts with the first refused frame and ends once
    :attr:`EPISODE_GAP_S` passes without a refusal. A client that keeps pushing past the
    limit gets some frames through as tokens trickle back, so "stays over the limit" cannot
    mean "every frame refused"; it means the episode has lasted long enough.
    """

    __slots__ = ("_episode_start", "_last_refusal", "_stamp", "_tokens", "burst", "rate")

    #: A pause this long without a refused frame ends an episode.
    EPISODE_GAP_S = 1.0

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now
        self._episode_start = -1.0
        self._last_refusal = -1.0

    def take(self, now: float, wanted: int) -> int:
        """Admit up to ``wanted`` frames arriving at ``now``; returns how many (a prefix:
        at one instant, once the bucket is empty every later frame is refused too)."""
        tokens = min(self._tokens + (now - self._stamp) * self.rate, self.burst)
        self._stamp = now
        granted = min(wanted, int(tokens))
        self._tokens = tokens - granted
        if granted < wanted:
            if self._episode_start < 0 or now - self._last_refusal > self.EPISODE_GAP_S:
                self._episode_start = now
            self._last_refusal = now
        return granted

    def over_for(self, now: float) -> float:
        """Seconds the current over-limit episode has lasted (0 outside one)."""
        if self._episode_start < 0 or now - self._last_refusal > self.EPISODE_GAP_S:
            return 0.0
        return now - self._episode_start


class InflightWindow:
    """Requests forwarded for one client and not yet answered, in frames and in bytes.

    The Gateway never parses payloads, so it cannot tell which request an answer belongs to;
    answers come back in request order per socket, but sizes are not tracked per request
    (a deque per connection costs more than the whole rest of it). An answer releases the
    average in-flight size instead: exact when the window empties, never negative, and the
    byte bound holds to within one frame.
    """

    __slots__ = ("bytes", "frames", "max_bytes", "max_frames")

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames = 0
        self.bytes = 0

    @property
    def full(self) -> bool:
        return self.frames >= self.max_frames or self.bytes >= self.max_bytes

    def add(self, size: int) -> None:
        self.frames += 1
        self.bytes += size

    def answered(self) -> None:
        frames = self.frames
        if frames <= 1:
            self.frames = 0
            self.bytes = 0
        else:
            self.bytes -= self.bytes // frames
            self.frames = frames - 1
