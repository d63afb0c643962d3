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

from pipeline.contracts import CONTRACTS, lake_schema
from pipeline.ids import new_batch_id


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
        schema = lake_schema(table)  # the columns and types ingest writes (pipeline/contracts.py)
        cdc_table = CONTRACTS[table].cdc
        rows: dict[str, list[Any]] = {name: [] for name in schema.names}
        for line, record in enumerate(records, start=1):
            meta = {
                "_batch_id": batch_id,
                "_ingested_at": ingested_at,
                "_source_file": source_file,
                "_source_line": line,
                "_raw": json.dumps(record, sort_keys=True),
            }
            row = record
            if cdc_table:
                row = record["before"] if record["op"] == "d" else record["after"]
                meta |= {
                    "op": record["op"],
                    "ts_ms": int(record["ts_ms"]),
                    "source_lsn": (record.get("source") or {}).get("lsn"),
                    "row_json": json.dumps(row, sort_keys=True, separators=(",", ":")),
                }
            for name in schema.names:
                rows[name].append(meta[name] if name in meta else _text(row.get(name)))
        table_pa = pa.table(rows, schema=schema)
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
