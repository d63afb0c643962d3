"""Writes lake Parquet files exactly as docs/architecture.md "The lake" says, for dbt tests that
need precise control of batches (ingestion order, _ingested_at, duplicates) that a real file
ingest cannot give. End-to-end tests go through `pipeline.ingest.ingest_files` instead."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.ids import new_batch_id

COLUMNS: dict[str, list[str]] = {
    "events": ["event_id", "event_type", "occurred_at", "customer_id", "anonymous_id", "product_id", "properties"],
    "customers": [
        "customer_id",
        "email",
        "first_name",
        "last_name",
        "country",
        "locale",
        "timezone",
        "marketing_consent",
        "created_at",
        "updated_at",
    ],
    "orders": ["order_id", "customer_id", "status", "currency", "total_amount", "created_at", "updated_at"],
    "order_items": ["order_item_id", "order_id", "product_id", "quantity", "unit_price"],
    "products": ["product_id", "name", "category", "price", "currency", "url", "image_url", "in_stock"],
}
CDC = {"customers", "orders", "order_items"}


def _text(value: Any) -> str | None:
    """Source columns hold the trimmed text of the field; numbers and booleans as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip(" \t\n\r\f") or None
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return json.dumps(value)


@dataclass
class LakeWriter:
    """One writer per SENDTIME_HOME; each `write` is one batch (one file)."""

    home: Path
    clock: datetime = field(default_factory=lambda: datetime(2026, 11, 1, 12, 0, 0))

    def write(
        self,
        table: str,
        records: Iterable[dict[str, Any]],
        *,
        ingested_at: datetime | None = None,
        batch_id: str | None = None,
        source_file: str = "test.jsonl",
    ) -> str:
        if ingested_at is None:
            self.clock += timedelta(seconds=1)
            ingested_at = self.clock
        batch_id = batch_id or new_batch_id(ingested_at)
        rows: dict[str, list[Any]] = {
            c: [] for c in ["_batch_id", "_ingested_at", "_source_file", "_source_line", "_raw"]
        }
        if table in CDC:
            for c in ["op", "ts_ms", "source_lsn", "row_json"]:
                rows[c] = []
        for c in COLUMNS[table]:
            rows[c] = []
        for line, record in enumerate(records, start=1):
            rows["_batch_id"].append(batch_id)
            rows["_ingested_at"].append(ingested_at)
            rows["_source_file"].append(source_file)
            rows["_source_line"].append(line)
            rows["_raw"].append(json.dumps(record, sort_keys=True))
            if table in CDC:
                row = record["before"] if record["op"] == "d" else record["after"]
                rows["op"].append(record["op"])
                rows["ts_ms"].append(int(record["ts_ms"]))
                rows["source_lsn"].append((record.get("source") or {}).get("lsn"))
                rows["row_json"].append(json.dumps(row, sort_keys=True, separators=(",", ":")))
            else:
                row = record
            for c in COLUMNS[table]:
                rows[c].append(_text(row.get(c)))
        types = {
            "_ingested_at": pa.timestamp("us"),
            "_source_line": pa.int64(),
            "ts_ms": pa.int64(),
            "source_lsn": pa.int64(),
        }
        table_pa = pa.table({c: pa.array(v, type=types.get(c, pa.string())) for c, v in rows.items()})
        folder = self.home / "lake" / table / f"ingest_date={ingested_at:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{batch_id}.parquet.tmp"
        pq.write_table(table_pa, tmp)
        tmp.rename(folder / f"{batch_id}.parquet")
        return batch_id


def cdc(op: str, ts_ms: int, row: dict[str, Any], lsn: int | None = None) -> dict[str, Any]:
    """A Debezium envelope: the row is `after`, or `before` for a delete."""
    envelope: dict[str, Any] = {
        "op": op,
        "ts_ms": ts_ms,
        "before": row if op == "d" else None,
        "after": None if op == "d" else row,
    }
    if lsn is not None:
        envelope["source"] = {"lsn": lsn}
    return envelope
