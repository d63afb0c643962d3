"""The CLI's own glue: one-line errors, and every ingest counted in the online store."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from pipeline.config import load_settings
from pipeline.store import engine_for, ingest_batches


def test_unknown_source_is_one_line_and_nonzero(cli, tmp_path: Path) -> None:
    f = tmp_path / "e.jsonl"
    f.write_text("{}\n")
    proc = cli("ingest", "clicks", str(f), check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "sendtime: error: unknown source 'clicks' (expected one of events, customers, orders, order_items, products)"
    ]


def test_ingest_is_recorded_in_the_online_store(cli, home: Path, tmp_path: Path) -> None:
    f = tmp_path / "e.jsonl"
    f.write_text(
        json.dumps({"event_id": "e1", "event_type": "login", "occurred_at": 1764300000000, "customer_id": "c1"})
        + "\n"
        + "{broken\n"
    )
    report = cli.json("ingest", "events", str(f))
    engine = engine_for(load_settings(home, environ={}))
    with engine.connect() as conn:
        rows = conn.execute(select(ingest_batches)).mappings().all()
    assert [(r["batch_id"], r["source"], r["received"], r["accepted"], r["rejected"]) for r in rows] == [
        (report["batch_id"], "events", 2, 1, 1)
    ]


def test_help_lists_every_command(cli) -> None:
    out = cli("--help").stdout
    for command in ("ingest", "run", "runs", "schedule", "serve", "keys", "generate", "demo", "docs"):
        assert command in out
