"""The API over a PostgreSQL online store (several API nodes share one): same answers as SQLite."""

from __future__ import annotations

import pytest

from pipeline.config import load_settings
from tests.helpers.api_server import ApiServer, seed_store


@pytest.mark.postgres
def test_endpoints_on_postgresql(tmp_path, pg_url):
    env = {"SENDTIME_ONLINE_STORE_URL": pg_url}
    settings = load_settings(tmp_path, environ=env)
    keys = seed_store(settings)
    read, write = keys["profiles:read"], keys["events:write"]
    with ApiServer(tmp_path, workers=2, env=env) as server:
        r = server.get("/api/v1/customers/c1", read)
        assert r.status_code == 200 and '"lifetime_value":1234.50' in r.text and r.headers["X-Sendtime-Version"] == "1"
        assert server.get("/api/v1/customers/c1", read, headers={"If-None-Match": r.headers["ETag"]}).status_code == 304
        assert server.get("/api/v1/customers/c1?fields=email", read).json() == {
            "customer_id": "c1",
            "email": "ada.lovelace@example.com",
        }
        batch = server.post("/api/v1/customers/batch", read, json={"customer_ids": ["c2", "x", "c1"]}).json()
        assert [p["customer_id"] for p in batch["found"]] == ["c2", "c1"] and batch["not_found"] == ["x"]
        assert (
            server.post("/api/v1/customers/lookup", read, json={"email": "GRACE.HOPPER@example.com"}).json()[
                "customer_id"
            ]
            == "c2"
        )
        recs = server.get("/api/v1/customers/c1/recommendations?limit=2", read).json()["recommendations"]
        assert [x["product_id"] for x in recs] == ["P1", "P2"]
        assert server.get("/api/v1/customers/c3/merge-fields", read).json()["first_name"] == "there"
        assert server.get("/api/v1/customers/nobody", read).status_code == 404
        assert server.get("/api/v1/customers/c1", "st_bad").status_code == 401
        assert server.get("/ready").status_code == 200
        event = [
            {"event_id": "pg-1", "event_type": "login", "occurred_at": "2026-11-01T00:00:00Z", "customer_id": "c1"}
        ]
        first = server.post("/api/v1/events", write, json=event).json()
        again = server.post("/api/v1/events", write, json=event).json()
        assert first["accepted"] == 1 and again["duplicates"] == 1
