"""A locked online store is a 503 with Retry-After, never a 500, within 2 s, on every route.

A real `sendtime serve` (gunicorn, 2 workers) over a SQLite store that another process holds in an
exclusive lock (`locking_mode=EXCLUSIVE` and a write, taken before the API opened the file: WAL
readers must wait for it). Every route of the app's URL map is called, the fast path (GET one
profile) and the collector included. A write lock alone (a long transaction, a big publish) leaves
WAL readers alone: reads answer, and the collector, which must record what it landed, answers
"retry". The stopped-PostgreSQL case is in tests/test_replica.py, with the same walker.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import requests

from pipeline.config import Settings, load_settings
from tests.helpers.api_server import ApiServer, seed_store

EVENT = {"event_id": "locked-1", "event_type": "login", "occurred_at": "2026-11-20T10:00:00Z", "customer_id": "c1"}
BODIES = {  # endpoint -> JSON body of its POST
    "profiles.batch": {"customer_ids": ["c1", "c2"]},
    "profiles.lookup": {"email": "ada.lovelace@example.com"},
    "events.post_events": [EVENT],
}
# routes that answer without the store: a liveness probe, and the scrape that reports `sendtime_store_up 0`
NO_STORE = {"/health", "/api/v1/health", "/metrics"}
# the OpenAPI document: a worker serves the contract it read last, else 503
CACHED = {"/openapi.json", "/api/v1/openapi.json"}


def every_route(settings: Settings) -> list[tuple[str, str, object]]:
    """(method, path, json body) for every route and method of the app, ids filled in."""
    from serving.app import create_app

    app = create_app(settings)
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "oauth.token":
            continue  # a form post (RFC 6749): this JSON call is a 400 before any store access
        path = re.sub(r"<[^>]+>", "c1", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, path, BODIES.get(rule.endpoint, {}) if method == "POST" else None))
    assert ("GET", "/api/v1/customers/c1", None) in out and ("POST", "/api/v1/events", [EVENT]) in out
    return out


def call(server: ApiServer, key: str, method: str, path: str, body: object) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.request(
        method, server.url + path, json=body, timeout=10, headers={"Authorization": f"Bearer {key}"}
    )
    return response, time.monotonic() - started


def assert_unavailable(server: ApiServer, key: str, routes: list, rounds: int = 2) -> None:
    """Every route, `rounds` times (both workers): 503 problems with Retry-After within 2 s; the
    store-free ones 200."""
    slow, wrong = [], []
    for _ in range(rounds):
        for method, path, body in routes:
            response, seconds = call(server, key, method, path, body)
            if seconds >= 2.0:
                slow.append((method, path, round(seconds, 2)))
            if path in NO_STORE or (path in CACHED and response.status_code == 200):
                ok = response.status_code == 200
            else:
                ok = (
                    response.status_code == 503
                    and "Retry-After" in response.headers
                    and response.headers["Content-Type"].startswith("application/problem+json")
                )
            if not ok:
                wrong.append((method, path, response.status_code, response.text[:200]))
    assert not wrong, wrong
    assert not slow, f"answered in 2 s or more: {slow}"


def assert_available(server: ApiServer, key: str, routes: list) -> None:
    for method, path, body in routes:
        response, _ = call(server, key, method, path, body)
        assert response.status_code < 500, (method, path, response.status_code, response.text[:300])


class StoreLock:
    """Another process holds the SQLite store locked until released: `exclusive` (no reader
    either), else a write transaction (BEGIN IMMEDIATE: readers go on)."""

    def __init__(self, path: Path, exclusive: bool = True) -> None:
        mode = "c.execute('PRAGMA locking_mode=EXCLUSIVE')\n" if exclusive else ""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                (
                    "import sqlite3, sys\n"
                    f"c = sqlite3.connect({str(path)!r}, isolation_level=None, timeout=30)\n"
                    f"{mode}"
                    f"c.execute('BEGIN {'EXCLUSIVE' if exclusive else 'IMMEDIATE'}')\n"
                    "c.execute(\"UPDATE schema_version SET version = version\")\n"
                    "print('locked', flush=True)\n"
                    "sys.stdin.read()\n"
                ),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(10)


def test_every_route_answers_503_quickly_while_the_sqlite_store_is_locked(tmp_path):
    settings = load_settings(tmp_path, environ={})
    keys = seed_store(settings)
    admin = keys["admin"]
    routes = every_route(settings)
    lock = StoreLock(tmp_path / "online.sqlite")
    try:
        with ApiServer(tmp_path, workers=2) as server:  # starts although it cannot migrate the store
            assert_unavailable(server, admin, routes)
            metrics = requests.get(server.url + "/metrics", timeout=10).text
            assert "sendtime_store_up 0.0" in metrics
            assert not list((tmp_path / "lake").rglob("*.parquet"))  # the collector landed nothing
            lock.release()
            time.sleep(1.2)  # the readers' fail-fast window (serving/reader.py RECHECK_SECONDS)
            assert_available(server, admin, routes)
            profile = requests.get(
                server.url + "/api/v1/customers/c1",
                timeout=10,
                headers={"Authorization": f"Bearer {keys['profiles:read']}"},
            )
            assert profile.status_code == 200 and profile.json()["first_name"] == "Ada"
            assert '"level":"error"' not in server.logs()
    finally:
        lock.release()


def test_a_write_lock_leaves_reads_alone_and_the_collector_answers_retry(tmp_path):
    settings = load_settings(tmp_path, environ={})
    keys = seed_store(settings)
    read, write = keys["profiles:read"], keys["events:write"]
    with ApiServer(tmp_path, workers=2) as server:
        # both workers import the collector's ingest (pyarrow, DuckDB: a second on first use)
        warm = [dict(EVENT, event_id=f"warm-{i}") for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda e: call(server, write, "POST", "/api/v1/events", [e]), warm))
        lock = StoreLock(tmp_path / "online.sqlite", exclusive=False)
        try:
            response, seconds = call(server, read, "GET", "/api/v1/customers/c1", None)
            assert response.status_code == 200 and seconds < 2.0
            response, seconds = call(server, write, "POST", "/api/v1/events", [EVENT])
            assert response.status_code == 503 and seconds < 2.0 and response.headers["Retry-After"]
            assert "retry the same request" in response.json()["detail"]
            landed = [
                p
                for p in (tmp_path / "lake" / "events").rglob("*.parquet")
                if "locked-1" in pq.read_table(p, columns=["event_id"]).column(0).to_pylist()
            ]
            assert len(landed) == 1  # the event is in the lake already: nothing is lost
        finally:
            lock.release()
        retry, _ = call(server, write, "POST", "/api/v1/events", [EVENT])
        assert retry.status_code == 200 and retry.json()["results"][0]["status"] == "accepted"
        again, _ = call(server, write, "POST", "/api/v1/events", [EVENT])
        assert again.json()["results"][0]["status"] == "duplicate"
