"""One batch: a topic's buffered messages -> one validated lake file (+ its quarantine), durable.

Validation is file ingest's (`pipeline.ingest.Validator`, one DuckDB connection per source); the
write order makes the lake file's rename the batch's commit point (pipeline/kafka/__init__.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import Settings
from pipeline.contracts import lake_schema
from pipeline.ingest import Chunk, Validator, _lake_table
from pipeline.kafka.failpoints import failpoint
from pipeline.kafka.messages import prepare
from pipeline.kafka.offsets import (
    LAKE_TMP_SUFFIX,
    META_KEY,
    QUARANTINE_PENDING_SUFFIX,
    Ranges,
    batch_metadata,
)
from pipeline.lake_writer import _fsync_dir
from pipeline.logs import get_logger

log = get_logger(__name__)


@dataclass
class TopicBuffer:
    """Messages of one topic read since the last flush, in consumption order."""

    topic: str
    source: str
    values: list[bytes | None] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    def clear(self) -> None:
        self.values, self.partitions, self.offsets = [], [], []


@dataclass
class BatchResult:
    batch_id: str
    source: str
    topic: str
    ranges: Ranges
    received: int
    accepted: int
    rejected: int
    skipped: int
    lake_file: Path
    quarantine_path: Path | None
    ingested_at: datetime


class BatchWriter:
    """Writes one buffer as one lake batch; one Validator (one DuckDB connection) per source."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.validators: dict[str, Validator] = {}

    def close(self) -> None:
        for v in self.validators.values():
            v.close()

    def _validator(self, source: str, ingested_at: datetime) -> Validator:
        validator = self.validators.get(source)
        if validator is None:
            validator = self.validators[source] = Validator(source, ingested_at, settings=self.settings)
        validator.ingested_at = ingested_at  # the future-timestamp bound counts from this batch
        return validator

    def write(
        self, buf: TopicBuffer, batch_id: str, ingested_at: datetime, already: Mapping[int, int]
    ) -> BatchResult | None:
        """`already`: partition -> next offset the lake holds; older messages (a redelivery) are dropped."""
        parts = np.asarray(buf.partitions, dtype=np.int64)
        offs = np.asarray(buf.offsets, dtype=np.int64)
        values = buf.values
        fresh = _fresh(parts, offs, already)
        if not fresh.all():
            log.warning(
                "dropped messages the lake already holds", extra={"topic": buf.topic, "messages": int((~fresh).sum())}
            )
            keep = np.flatnonzero(fresh)
            parts, offs, values = parts[keep], offs[keep], [values[i] for i in keep]
        if len(values) == 0:
            return None
        source, topic = buf.source, buf.topic
        prepared = prepare(values)
        validator = self._validator(source, ingested_at)
        accepted, rejected = validator.run(Chunk(prepared.lines, prepared.raw, pre_rejected=prepared.rejected))
        rows = accepted.num_rows
        table = _lake_table(accepted, source, batch_id, ingested_at, f"kafka:{topic}")
        if rows:
            at = accepted.column("line").to_numpy() - 1  # the `_source_file` of a row names its message
            names = pc.binary_join_element_wise(
                pa.scalar(f"kafka:{topic}"),
                pa.array(parts[at]).cast(pa.string()),
                pa.array(offs[at]).cast(pa.string()),
                ":",
            )
            table = table.set_column(table.schema.get_field_index("_source_file"), "_source_file", names)
        ranges: Ranges = {}
        for p in np.unique(parts):
            sel = offs[parts == p]
            ranges[int(p)] = (int(sel.min()), int(sel.max()))
        counts = {"received": len(values), "accepted": rows, "rejected": len(rejected), "skipped": prepared.skipped}
        assert counts["received"] == rows + len(rejected) + prepared.skipped, counts

        day = f"ingest_date={ingested_at:%Y-%m-%d}"
        lake_dir, quarantine_dir = self.settings.lake_dir / source / day, self.settings.quarantine_dir / source / day
        lake_dir.mkdir(parents=True, exist_ok=True)
        final = lake_dir / f"{batch_id}.parquet"
        pending = quarantine_final = None
        if rejected:
            quarantine_dir.mkdir(parents=True, exist_ok=True)
            quarantine_final = quarantine_dir / f"{batch_id}.jsonl"
            pending = quarantine_dir / f".{batch_id}.jsonl{QUARANTINE_PENDING_SUFFIX}"
            with open(pending, "wb") as fh:
                for r in rejected:
                    i = r["line"] - 1
                    r.update(source_file=f"kafka:{topic}", topic=topic, partition=int(parts[i]), offset=int(offs[i]))
                    fh.write(orjson.dumps(r) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        tmp = lake_dir / f".{batch_id}.parquet{LAKE_TMP_SUFFIX}"
        schema = lake_schema(source).with_metadata({META_KEY: batch_metadata(batch_id, source, topic, ranges, counts)})
        pq.write_table(table.cast(schema), tmp, compression="zstd", row_group_size=128 * 1024)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        failpoint("before-lake-rename")
        os.replace(tmp, final)  # the commit point of the batch
        _fsync_dir(lake_dir)
        failpoint("after-lake-rename")
        if pending is not None and quarantine_final is not None:
            os.replace(pending, quarantine_final)
            _fsync_dir(quarantine_dir)
        return BatchResult(
            batch_id,
            source,
            topic,
            ranges,
            counts["received"],
            rows,
            len(rejected),
            prepared.skipped,
            final,
            quarantine_final,
            ingested_at,
        )


def _fresh(parts: np.ndarray, offs: np.ndarray, already: Mapping[int, int]) -> np.ndarray:
    """Messages not yet in the lake, and each (partition, offset) once."""
    keep = np.ones(len(offs), dtype=bool)
    for p, nxt in already.items():
        keep &= ~((parts == p) & (offs < nxt))
    if len(offs) > 1:
        key = parts * (1 << 40) + offs
        _, first = np.unique(key, return_index=True)
        once = np.zeros(len(offs), dtype=bool)
        once[first] = True
        keep &= once
    return keep
