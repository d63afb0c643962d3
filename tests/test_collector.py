"""POST /api/v1/events: per-record results, idempotency by event_id, limits, and lake files equal
to what `sendtime ingest events` writes for the same records."""

from __future__ import annotations

import json
import sqlite3

import pyarrow.parquet as pq
import pytest
import requests

from pipeline.config import load_settings
from tests.helpers.api_server import ApiServer, seed_store

EVENTS = [
    {
        "event_id": "e1",
        "event_type": "product_view",
        "occurred_at": "2026-11-01T10:00:00Z",
        "customer_id": "c1",
        "product_id": " p1 ",
        "properties": {"price": 19.9},
    },
    {"event_id": "e2", "event_type": "login", "occurred_at": 1764000000000, "anonymous_id": "anon-9"},
    {"event_id": "e3", "event_type": "page_view", "occurred_at": "not a time", "customer_id": "c1"},
    {"event_id": "e1", "event_type": "login", "occurred_at": "2026-11-01T10:00:00Z", "customer_id": "c1"},
    "not an object",
]
META = {"_batch_id", "_ingested_at", "_source_file", "_source_line"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("collector-home")
    keys = seed_store(load_settings(home, environ={}))
    env = {"SENDTIME_COLLECTOR_MAX_EVENTS": "20", "SENDTIME_COLLECTOR_MAX_BODY_BYTES": "4096"}
    with ApiServer(home, workers=2, env=env) as server:
        yield server, keys["events:write"], home


def _lake_files(home):
    return sorted((home / "lake" / "events").rglob("*.parquet"))


def _rows(paths) -> list[dict]:
    rows = []
    for path in paths:
        rows += pq.read_table(path).to_pylist()
    return rows


def test_per_record_results_and_idempotency(api):
    server, key, home = api
    r = server.post("/api/v1/events", key, json=EVENTS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["received"], body["accepted"], body["duplicates"], body["rejected"]) == (5, 2, 1, 2)
    statuses = [(x["index"], x["event_id"], x["status"]) for x in body["results"]]
    assert statuses == [
        (0, "e1", "accepted"),
        (1, "e2", "accepted"),
        (2, "e3", "rejected"),
        (3, "e1", "duplicate"),
        (4, None, "rejected"),
    ]
    assert "occurred_at" in body["results"][2]["reason"]
    files = _lake_files(home)
    assert len(files) == 1 and body["batch_id"] in files[0].name
    assert sorted(row["event_id"] for row in _rows(files)) == ["e1", "e2"]
    assert {row["_source_file"] for row in _rows(files)} == {"collector"}

    again = server.post("/api/v1/events", key, json={"events": EVENTS})
    assert again.status_code == 200
    assert [x["status"] for x in again.json()["results"]] == [
        "duplicate",
        "duplicate",
        "rejected",
        "duplicate",
        "rejected",
    ]
    assert _lake_files(home) == files  # nothing new in the lake

    with sqlite3.connect(home / "online.sqlite") as conn:
        claimed = dict(conn.execute("select event_id, batch_id from collector_event_ids").fetchall())
        batches = conn.execute(
            "select batch_id, source, source_file, received, accepted, rejected from ingest_batches order by batch_id"
        ).fetchall()
    assert claimed == {"e1": body["batch_id"], "e2": body["batch_id"]}
    assert batches[0] == (body["batch_id"], "events", "collector", 5, 2, 2)
    assert len(batches) == 2


def test_lake_rows_equal_a_cli_ingest_of_the_same_records(api, cli, home, tmp_path):
    server, key, server_home = api
    records = [dict(e, event_id="same-" + str(i)) for i, e in enumerate(EVENTS) if isinstance(e, dict)]
    before = set(_lake_files(server_home))
    assert server.post("/api/v1/events", key, json=records).status_code == 200
    collected = [p for p in _lake_files(server_home) if p not in before]
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    cli("ingest", "events", str(source))
    ingested = _lake_files(home)

    # _raw is the record as JSON text: the collector's is its compact serialization, a file's is
    # the line as written, so they are compared as JSON values
    def strip(rows):
        return sorted(
            ({k: json.loads(v) if k == "_raw" else v for k, v in r.items() if k not in META} for r in rows),
            key=lambda r: r["event_id"],
        )

    assert len(_rows(collected)) == 3
    assert strip(_rows(collected)) == strip(_rows(ingested))
    assert pq.read_schema(collected[0]) == pq.read_schema(ingested[0])


@pytest.mark.parametrize(
    "payload, slug",
    [
        ([], "bad-request"),
        ({"events": []}, "bad-request"),
        ({"event_id": "x"}, "bad-request"),
        ({"events": [{}], "more": 1}, "bad-request"),
        ([{"event_id": f"m{i}"} for i in range(21)], "too-many-items"),
    ],
)
def test_bad_requests(api, payload, slug):
    server, key, _ = api
    r = server.post("/api/v1/events", key, json=payload)
    assert r.status_code == 400 and r.json()["type"] == f"https://sendtime.dev/problems/{slug}", r.text


def test_invalid_json_content_type_and_size(api):
    server, key, home = api
    before = _lake_files(home)
    bad = server.post("/api/v1/events", key, data=b"[{", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["type"].endswith("/invalid-json")
    text = server.post("/api/v1/events", key, data=json.dumps(EVENTS[:1]), headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and text.headers["Content-Type"] == "application/problem+json"
    big = [dict(EVENTS[0], event_id=f"big{i}", properties={"pad": "x" * 200}) for i in range(19)]
    too_big = server.post("/api/v1/events", key, json=big)
    assert too_big.status_code == 413 and too_big.json()["type"].endswith("/payload-too-large")

    def chunks():  # no Content-Length: the limit holds while reading the stream
        yield b"["
        for i in range(19):
            yield (json.dumps(big[i]) + ",").encode()
        yield b"{}]"

    chunked = requests.post(
        server.url + "/api/v1/events",
        data=chunks(),
        timeout=30,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413, chunked.text
    assert _lake_files(home) == before
