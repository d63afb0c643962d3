"""`sendtime runs`: the run log as a table and as JSON, through the real CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from pipeline import store
from pipeline.runlog import format_runs, list_runs, read_runs


def test_runs_before_any_cycle(cli, settings):
    assert list_runs(settings) == []
    assert "no cycles yet" in cli("runs").stdout
    assert json.loads(cli("runs", "--json").stdout) == {"runs": [], "kafka_topics": []}


def test_runs_lists_latest_first_with_phases_counts_and_failures(cli, settings):
    engine = store.engine_for(settings)
    store.migrate(engine)
    t0 = datetime(2026, 11, 28, 12, 0, 0)
    store.start_run(engine, "20261128T120000000000Z-00000001", t0, t0)
    store.finish_run(
        engine,
        "20261128T120000000000Z-00000001",
        status="success",
        ended_at=t0 + timedelta(seconds=2.5),
        phases={"transform": 1.25, "read": 0.1, "validate": 0.5, "publish": 0.2},
        rows_read=40,
        rows_changed=12,
        rows_published=12,
        rows_deleted=1,
    )
    t1 = t0 + timedelta(minutes=5)
    store.start_run(engine, "20261128T120500000000Z-00000002", t1, t1)
    store.finish_run(
        engine,
        "20261128T120500000000Z-00000002",
        status="validation_failed",
        ended_at=t1 + timedelta(seconds=1),
        phases={"transform": 0.5, "read": 0.1, "validate": 0.3},
        rows_read=3,
        rows_changed=3,
        rows_published=0,
        rows_deleted=0,
        validation={
            "customer_profiles": {
                "success": False,
                "rows": 3,
                "failed": [
                    {"expectation": "expect_column_values_to_match_regex", "column": "country", "unexpected_count": 2}
                ],
            }
        },
        error="validation failed",
    )
    engine.dispose()

    rows = list_runs(settings, limit=10)
    assert [r["status"] for r in rows] == ["validation_failed", "success"]
    text = format_runs(read_runs(settings, limit=10))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["cycle_id", "status", "started_at"]
    assert lines[1].split()[:2] == ["20261128T120500000000Z-00000002", "validation_failed"]
    assert "customer_profiles.country: expect_column_values_to_match_regex (2 rows)" in lines[2]
    success = lines[3].split()
    assert success[:2] == ["20261128T120000000000Z-00000001", "success"]
    assert success[3:8] == ["2.50s", "1.25s", "0.10s", "0.50s", "0.20s"] and success[-3:] == ["12", "12", "1"]

    out = cli("runs", "--limit", "1").stdout
    assert "validation_failed" in out and "20261128T120000000000Z-00000001" not in out
    as_json = json.loads(cli("runs", "--json").stdout)["runs"]
    assert as_json[1]["phases"]["transform"] == 1.25
    assert as_json[0]["validation"]["customer_profiles"]["failed"][0]["unexpected_count"] == 2
