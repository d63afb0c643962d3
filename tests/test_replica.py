"""A PostgreSQL online store with a streaming read replica (`online_store_read_url`), and a
PostgreSQL store that is locked or stopped.

Two private PostgreSQL 15 clusters (tests/helpers/pg_cluster.py): a primary made with initdb and a replica
made from it with pg_basebackup. Real cycles (`sendtime run`) publish to the primary; a real
`sendtime serve` reads the replica, keeps answering with the primary stopped, and shows the next
publish once the primary is back. Without a replica, a locked or stopped store is a 503 on every
route within 2 s (the route walker of tests/test_store_unavailable.py).
"""

from __future__ import annotations

import json
import subprocess
import time

import psycopg
import pytest
import requests

from pipeline.config import load_settings
from tests.helpers.api_server import ApiServer, seed_store
from tests.helpers.cli import Cli
from tests.helpers.pg_cluster import BIN, PrimaryAndReplica
from tests.test_cycle import AS_OF_ARG, load_sample
from tests.test_store_unavailable import assert_available, assert_unavailable, every_route

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pair():
    clusters = PrimaryAndReplica().start()
    try:
        yield clusters
    finally:
        clusters.close()


@pytest.fixture(scope="module")
def published(pair, tmp_path_factory):
    """A home with a published state on the primary (the real publish, pipeline/publish.py), an
    admin key, the replica caught up, and a lake for the cycle that runs after the outage."""
    home = tmp_path_factory.mktemp("replica-home")
    env = {"SENDTIME_ONLINE_STORE_URL": pair.primary_url, "SENDTIME_ONLINE_STORE_READ_URL": pair.replica_url}
    load_sample(home, tmp_path_factory.mktemp("gen"), customers=20, events=300)
    key = seed_store(load_settings(home, environ=env))["admin"]
    pair.wait_replayed()
    return home, env, key


def _customer(url: str) -> tuple[str, dict]:
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        cid, body = conn.execute("SELECT customer_id, body FROM profiles ORDER BY customer_id LIMIT 1").fetchone()
    return cid, json.loads(body)


def test_the_api_reads_the_replica_and_keeps_serving_with_the_primary_down(pair, published):
    home, env, key = published
    cid, body = _customer(pair.replica_url)
    assert cid == "c1"
    auth = {"Authorization": f"Bearer {key}"}
    reads = [
        ("GET", f"/api/v1/customers/{cid}", None),
        ("GET", f"/api/v1/customers/{cid}?fields=email", None),
        ("POST", "/api/v1/customers/batch", {"customer_ids": [cid, "nobody"]}),
        ("GET", f"/api/v1/customers/{cid}/recommendations", None),
        ("GET", f"/api/v1/customers/{cid}/merge-fields", None),
        ("GET", "/ready", None),
        ("GET", "/openapi.json", None),
        ("GET", "/metrics", None),
        ("GET", "/status", None),
    ]
    with ApiServer(home, workers=2, env=env) as server:
        ready = server.get("/ready").json()
        assert ready["version"] == 1 and ready["replica_lag_seconds"] is not None and ready["replica_lag_seconds"] < 5
        assert server.get(f"/api/v1/customers/{cid}", key).json() == body

        pair.primary.stop()
        answers = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # both workers, several times: no 5xx at all
            for method, path, payload in reads:
                started = time.monotonic()
                r = requests.request(method, server.url + path, json=payload, headers=auth, timeout=10)
                answers.append((path, r.status_code, time.monotonic() - started))
        assert {status for _, status, _ in answers} == {200}, [a for a in answers if a[1] != 200][:5]
        assert max(seconds for _, _, seconds in answers) < 2.0
        assert server.get(f"/api/v1/customers/{cid}", key).json() == body
        assert "sendtime_store_up 1.0" in server.get("/metrics").text

        # writes need the primary: a cycle fails clearly, the collector says retry
        down = Cli(home, env)("run", "--as-of", AS_OF_ARG, "--json", check=False)
        assert down.returncode == 1 and json.loads(down.stdout)["status"] == "failed"
        event = [
            {"event_id": "while-down", "event_type": "login", "occurred_at": "2026-11-20T10:00:00Z", "customer_id": cid}
        ]
        collected = server.post("/api/v1/events", key, json=event)
        assert collected.status_code == 503 and collected.headers["Retry-After"]

        # the primary returns: a cycle publishes the lake's customers, the replica serves them
        pair.primary.start()
        assert server.get("/api/v1/customers/C0000001", key).status_code == 404
        second = json.loads(Cli(home, env)("run", "--as-of", AS_OF_ARG, "--json").stdout)
        assert second["status"] == "success" and second["version"] == 2, second
        deadline = time.monotonic() + 30
        while server.get("/api/v1/customers/C0000001", key).status_code != 200:
            assert time.monotonic() < deadline, "the replica never served the new publish"
            time.sleep(0.2)
        assert server.get("/ready").json()["version"] == 2
        assert server.post("/api/v1/events", key, json=event).json()["results"][0]["status"] == "accepted"
        assert '"level":"error"' not in server.logs()


def test_every_route_answers_503_quickly_while_postgresql_is_locked_or_stopped(pair, published):
    home, _, key = published
    primary_only = {"SENDTIME_ONLINE_STORE_URL": pair.primary_url}
    routes = every_route(load_settings(home, environ=primary_only))
    with ApiServer(home, workers=2, env=primary_only) as server:
        assert_available(server, key, routes)
        # every table locked by a transaction that sleeps (statements wait for lock_timeout)
        tables = (
            "profiles, products, recommendations, published_versions, api_keys, mart_contracts, runs, "
            "ingest_batches, collector_event_ids"
        )
        locker = subprocess.Popen(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(BIN / "psql"),
                "-h",
                str(pair.root),
                "-p",
                str(pair.primary.port),
                "-d",
                "sendtime",
                "-c",
                f"BEGIN; LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while (
                pair.primary.psql(
                    "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation IS NOT NULL",
                    "sendtime",
                )
                == "0"
            ):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert_unavailable(server, key, routes)
        finally:
            locker.kill()
            locker.wait(10)
        pair.primary.stop()
        try:
            time.sleep(1.2)
            assert_unavailable(server, key, routes)
        finally:
            pair.primary.start()
        time.sleep(1.2)
        assert_available(server, key, routes)
        assert '"level":"error"' not in server.logs()
