"""A full server session, including lookup by email and the collector, leaves no email, name or
key in the logs: one JSON line per request with the route template, never the raw path."""

from __future__ import annotations

import json
import re

import requests

from pipeline.config import load_settings
from tests.helpers.api_server import PEOPLE, ApiServer, seed_store


def test_no_pii_or_keys_in_a_full_sessions_logs(tmp_path):
    settings = load_settings(tmp_path, environ={})
    keys = seed_store(settings)
    read, write, admin = keys["profiles:read"], keys["events:write"], keys["admin"]
    emails = [p["email"] for p in PEOPLE.values()]
    with ApiServer(tmp_path, workers=2) as server:
        for email in emails:
            assert server.post("/api/v1/customers/lookup", read, json={"email": email.upper()}).status_code == 200
        assert server.post("/api/v1/customers/lookup", read, json={"email": "nobody@example.org"}).status_code == 404
        for cid in ("c1", "c2", "c3"):
            assert server.get(f"/api/v1/customers/{cid}", read).status_code == 200
            assert server.get(f"/api/v1/customers/{cid}/merge-fields", read).status_code == 200
            assert server.get(f"/api/v1/customers/{cid}/recommendations", admin).status_code == 200
        assert server.post("/api/v1/customers/batch", read, json={"customer_ids": ["c1", "c2"]}).status_code == 200
        # a client that puts an email in a path or a query string: answered, never logged
        assert server.get(f"/api/v1/customers/{emails[0]}", read).status_code == 404
        assert server.get(f"/api/v1/customers/c1?fields={emails[1]}", read).status_code == 400
        assert server.get(f"/no/such/{emails[0]}", read).status_code == 404
        events = [
            {
                "event_id": "pii-1",
                "event_type": "signup",
                "occurred_at": "2026-11-01T00:00:00Z",
                "customer_id": "c1",
                "properties": {"email": emails[0], "name": "Ada Lovelace"},
            },
            {"event_id": "pii-2", "event_type": "signup", "occurred_at": "bad", "customer_id": emails[1]},
        ]
        assert server.post("/api/v1/events", write, json=events).status_code == 200
        assert (
            server.post(
                "/api/v1/events", write, data=json.dumps(events)[:-3], headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
        assert server.get("/api/v1/customers/c1", "st_" + "wrong" * 8).status_code == 401
        assert (
            requests.get(
                server.url + "/api/v1/customers/c1", timeout=5, headers={"Authorization": f"Bearer {emails[0]}"}
            ).status_code
            == 401
        )
        assert server.get("/status", admin).status_code in (200, 503)
        assert server.get("/metrics").status_code == 200
        logs = server.logs()

    lines = [line for line in logs.splitlines() if line.strip()]
    requests_logged = [json.loads(line) for line in lines if '"logger":"sendtime.request"' in line]
    assert len(requests_logged) >= 20
    for entry in requests_logged:
        assert set(entry) >= {"request_id", "key", "method", "route", "status", "latency_ms", "version"}
    assert {e["key"] for e in requests_logged if e["status"] == 200} >= {"profiles-read-key", "events-write-key"}
    assert "/api/v1/customers/<customer_id>" in {e["route"] for e in requests_logged}
    lowered = logs.lower()
    for secret in emails + ["nobody@example.org", "lovelace", "hopper", read, write, admin, "wrong" * 8]:
        assert secret.lower() not in lowered, secret
    for name in ("Ada", "Grace"):
        assert not re.search(rf"\b{name}\b", logs), name
    assert "@" not in logs
