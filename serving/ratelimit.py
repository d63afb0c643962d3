"""Per-key token buckets, held in each gunicorn worker's memory.

Each worker gets rate/workers tokens per second and burst/workers of capacity, so with
connections spread over the workers (sync workers close every connection, and the kernel hands
each new connection to an idle worker) the whole server admits about the configured rate per key.
Across several API nodes the limit is per node. See docs/api.md, "Rate limits".
"""

from __future__ import annotations

import math
import threading
import time


class TokenBucketLimiter:
    def __init__(self, rate_per_second: float, burst: float) -> None:
        self.rate = max(float(rate_per_second), 1e-9)
        self.burst = max(float(burst), 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """0.0 when `cost` tokens were taken; otherwise the seconds until they are available (none
        taken). A cost above the bucket's capacity costs the whole bucket (a full bucket admits it)."""
        cost = min(max(float(cost), 0.0), self.burst)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (cost - tokens) / self.rate

    def waiting(self, key: str) -> float:
        """The seconds until `key` has a token again, without taking one (0.0: it has one)."""
        with self._lock:
            found = self._buckets.get(key)
        if found is None:
            return 0.0
        tokens = min(self.burst, found[0] + (time.monotonic() - found[1]) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


def forget_idle(limiter: TokenBucketLimiter, max_keys: int = 100_000) -> None:
    """Drop the buckets of a limiter keyed by client address when there are too many: a full bucket
    is the default anyway, so only addresses that failed recently lose their count."""
    with limiter._lock:
        if len(limiter._buckets) > max_keys:
            limiter._buckets.clear()


def per_worker(rate_per_second: float, burst: int, workers: int) -> TokenBucketLimiter:
    workers = max(int(workers), 1)
    return TokenBucketLimiter(rate_per_second / workers, max(burst / workers, 1.0))


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds (RFC 9110); never 0, or clients would retry at once."""
    return str(max(1, math.ceil(seconds)))
