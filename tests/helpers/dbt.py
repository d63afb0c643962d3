"""Support of the dbt tests (no tests here): run a cycle through pipeline.transform.build, snapshot the marts."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from pipeline.config import Settings
from pipeline.ids import new_cycle_id
from pipeline.ingest import ingest_files
from pipeline.transform import TransformResult, build

MARTS = {
    "customer_profiles": "customer_id",
    "customer_recommendations": "customer_id, rank",
    "products": "product_id",
    "customer_erasures": "customer_id",
    "int_category_affinities_scored": "customer_id, category",
    "int_product_associations_scored": "product_id, associated_product_id",
}


def cycle(settings: Settings, as_of: datetime, **kwargs: Any) -> TransformResult:
    result = build(settings, as_of=as_of, cycle_id=new_cycle_id(), **kwargs)
    assert result.ok, result.error
    return result


def snapshot(settings: Settings) -> dict[str, list[tuple]]:
    """Every mart's rows, every column but _cycle_id, in key order."""
    out: dict[str, list[tuple]] = {}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for table, key in MARTS.items():
            out[table] = con.execute(f"select * exclude (_cycle_id) from {table} order by {key}").fetchall()
    return out


def query(settings: Settings, sql: str, params: Any = None) -> list[tuple]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(sql, params).fetchall()


def profile(settings: Settings, customer_id: str) -> dict[str, Any] | None:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        rel = con.execute("select * from customer_profiles where customer_id = ?", [customer_id])
        names = [d[0] for d in rel.description]
        rows = rel.fetchall()
    return dict(zip(names, rows[0])) if rows else None


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def ingest(settings: Settings, source: str, path: Path) -> None:
    report = ingest_files(settings, source, [path])
    assert report.rejected == 0, report
