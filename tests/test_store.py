"""The online store's helpers on both stores: SQLite (default) and a real PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import datetime

import pytest

from pipeline import store


def test_email_hash_normalizes_like_the_lookup():
    expected = hashlib.sha256(b"ann@example.com").hexdigest()
    assert store.email_hash("  Ann@Example.COM\t\n") == expected
    assert store.email_hash("ann@example.com") == expected
    assert store.email_hash(None) is None
    assert store.email_hash("   ") is None


def test_record_ingest_batch_single_and_nested(engine):
    one = {
        "batch_id": "20261128T100000000000Z-aaaaaaaa",
        "source": "events",
        "source_file": "e.jsonl",
        "received": 10,
        "accepted": 8,
        "rejected": 2,
        "quarantine_path": "/q/x.jsonl",
        "ingested_at": datetime(2026, 11, 28, 10, 0, 0),
    }
    assert store.record_ingest_batch(engine, one) == 1
    assert store.record_ingest_batch(engine, one) == 1  # idempotent by batch_id
    # IngestReport.to_dict(): one batch of several files
    several = {
        "source": "customers",
        "batch_id": "b0",
        "received": 4,
        "accepted": 4,
        "rejected": 0,
        "quarantine_path": "/q/b0.jsonl",
        "lake_file": "/l/b0.parquet",
        "ingested_at": "2026-11-28T10:00:00Z",
        "files": [
            {"file": "a.jsonl", "path": "/x/a.jsonl", "received": 1, "accepted": 1, "rejected": 0},
            {"file": "b.jsonl", "path": "/x/b.jsonl", "received": 3, "accepted": 3, "rejected": 0},
        ],
    }
    assert store.record_ingest_batch(engine, several) == 1
    nested = {
        "source": "orders",
        "received": 5,
        "batches": [
            {"batch_id": "b1", "source_file": "a.csv", "received": 3, "accepted": 3, "rejected": 0},
            {"batch_id": "b2", "source_file": "b.csv", "received": 2, "accepted": 1, "rejected": 1},
        ],
    }
    assert store.record_ingest_batch(engine, nested) == 2
    with engine.connect() as conn:
        rows = {r.batch_id: r for r in conn.execute(store.ingest_batches.select())}
    assert set(rows) == {one["batch_id"], "b0", "b1", "b2"}
    assert rows["b0"].source_file == "a.jsonl,b.jsonl" and rows["b0"].received == 4
    assert rows[one["batch_id"]].ingested_at == "2026-11-28T10:00:00Z"
    assert rows[one["batch_id"]].rejected == 2
    assert rows["b2"].source == "orders" and rows["b2"].accepted == 1


def test_versions_and_run_log(engine):
    assert store.current_version(engine) is None
    assert store.last_published_cycle_id(engine) is None
    with engine.begin() as conn:
        for cycle in ("c1", "c2"):
            conn.execute(
                store.published_versions.insert().values(
                    version=store.next_version(conn),
                    cycle_id=cycle,
                    as_of="2026-01-01T00:00:00Z",
                    published_at="2026-01-01T00:00:01Z",
                    profiles_upserted=1,
                    profiles_deleted=0,
                )
            )
    assert store.current_version(engine)["version"] == 2
    assert store.last_published_cycle_id(engine) == "c2"

    t = datetime(2026, 11, 28, 12, 0, 0)
    store.start_run(engine, "r1", t, t)
    store.finish_run(
        engine,
        "r1",
        status="success",
        ended_at=t,
        phases={"transform": 1.5},
        rows_read=3,
        rows_changed=2,
        rows_published=2,
        rows_deleted=0,
        validation={"s": {"success": True}},
    )
    store.start_run(engine, "r2", t, t)
    # r2's process "died": a new cycle holding the lock closes it as failed
    assert store.close_interrupted_runs(engine, t) == 1
    rows = store.recent_runs(engine, limit=10)
    assert [r["cycle_id"] for r in rows] == ["r2", "r1"]
    assert rows[0]["status"] == "failed" and "interrupted" in rows[0]["error"]
    assert rows[1]["phases"] == {"transform": 1.5} and rows[1]["validation"] == {"s": {"success": True}}
    with pytest.raises(ValueError):
        store.finish_run(engine, "r1", status="bogus", ended_at=t)
