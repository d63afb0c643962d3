"""Per-key token buckets: 429 with Retry-After over HTTP, and the bucket arithmetic."""

from __future__ import annotations

import time

from pipeline.config import load_settings
from serving.keys import create_key
from serving.ratelimit import TokenBucketLimiter, per_worker, retry_after_header
from tests.helpers.api_server import ApiServer, seed_store


def test_429_with_retry_after_per_key(tmp_path):
    settings = load_settings(tmp_path, environ={})
    keys = seed_store(settings)
    other, _ = create_key(settings, "other", ["profiles:read"])
    env = {"SENDTIME_RATE_LIMIT_PER_SECOND": "1", "SENDTIME_RATE_LIMIT_BURST": "3"}
    with ApiServer(tmp_path, workers=1, env=env) as server:
        key = keys["profiles:read"]
        statuses = [server.get("/api/v1/customers/c1", key).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = server.get("/api/v1/customers/c1", key)
        assert limited.status_code == 429
        assert limited.headers["Content-Type"] == "application/problem+json"
        assert limited.json()["type"] == "https://sendtime.dev/problems/rate-limited"
        assert int(limited.headers["Retry-After"]) >= 1
        assert "X-Sendtime-Version" in limited.headers
        # another key has its own bucket
        assert server.get("/api/v1/customers/c1", other).status_code == 200
        # open endpoints are not limited
        assert server.get("/health").status_code == 200
        time.sleep(1.1)
        assert server.get("/api/v1/customers/c1", key).status_code == 200


def test_bucket_refills_at_the_rate_up_to_the_burst():
    bucket = TokenBucketLimiter(rate_per_second=100, burst=5)
    assert [bucket.acquire("k") for _ in range(5)] == [0.0] * 5
    wait = bucket.acquire("k")
    assert 0 < wait <= 0.01
    time.sleep(0.05)  # ~5 tokens back, capped at the burst
    assert sum(1 for _ in range(10) if bucket.acquire("k") == 0.0) == 5
    assert bucket.acquire("other") == 0.0


def test_limits_are_split_across_workers():
    limiter = per_worker(10_000, 20_000, 2)
    assert limiter.rate == 5_000 and limiter.burst == 10_000
    assert per_worker(1, 1, 4).burst == 1.0  # never below one request
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"
