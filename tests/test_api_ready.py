"""/ready: 503 problem until something is published, and again once the last publish is too old."""

from __future__ import annotations

import time

from pipeline.config import load_settings
from serving.keys import create_key
from tests.helpers.api_server import ApiServer, profile_row, publish_rows


def test_ready_follows_the_published_state(tmp_path):
    settings = load_settings(tmp_path, environ={})
    key, _ = create_key(settings, "reader", ["profiles:read"])
    with ApiServer(tmp_path, env={"SENDTIME_READY_MAX_AGE_SECONDS": "2"}) as server:
        for path in ("/ready", "/api/v1/ready"):
            r = server.get(path)
            assert r.status_code == 503 and r.headers["Content-Type"] == "application/problem+json"
            assert r.json()["type"] == "https://sendtime.dev/problems/not-ready"
            assert r.headers["X-Sendtime-Version"] == "0" and r.headers["Retry-After"]
        assert server.get("/health").status_code == 200  # alive, though not ready
        missing = server.get("/api/v1/customers/c1", key)
        assert missing.status_code == 404 and missing.headers["X-Sendtime-Version"] == "0"

        publish_rows(settings, [profile_row("c1")])
        ready = server.get("/ready")
        assert ready.status_code == 200 and ready.json()["version"] == 1
        assert ready.headers["X-Sendtime-Version"] == "1"
        assert server.get("/api/v1/customers/c1", key).status_code == 200
        time.sleep(2.2)
        stale = server.get("/ready")
        assert stale.status_code == 503 and "old" in stale.json()["detail"]
