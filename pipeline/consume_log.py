"""The consumer's ingest log: one `kafka_batches` row per lake batch that `sendtime consume` wrote.

`ingest_batches` (pipeline/store.py) gets its usual row too (received = accepted + rejected there,
as for files); this table adds what only a stream has: the topic, the offset ranges, and the
tombstones skipped, so that per topic received = accepted + rejected + skipped.
The table has its own MetaData and is created on first use (CREATE IF NOT EXISTS): no schema
version bump of the shared store for a table only the consumer writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
)

from pipeline.store import record_ingest_batch, upsert_statement

metadata = MetaData()

kafka_batches = Table(
    "kafka_batches",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("source", String(32), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("ranges", Text, nullable=False),  # JSON {"partition": [first_offset, last_offset]}
    Column("received", BigInteger, nullable=False),
    Column("accepted", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("skipped", BigInteger, nullable=False),
    Column("lake_file", String(2048), nullable=False),
    Column("quarantine_path", String(2048)),
    Column("ingested_at", String(40), nullable=False),
)


def ensure_table(engine: Engine) -> None:
    metadata.create_all(engine, checkfirst=True)


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    source: str
    topic: str
    ranges: Mapping[int, tuple[int, int]]
    received: int
    accepted: int
    rejected: int
    skipped: int
    lake_file: str
    quarantine_path: str | None
    ingested_at: str


def record_batch(engine: Engine, batch: BatchRecord) -> None:
    """Both log rows of one batch; idempotent by batch id."""
    record_ingest_batch(
        engine,
        {
            "batch_id": batch.batch_id,
            "source": batch.source,
            "source_file": f"kafka:{batch.topic}",
            "received": batch.accepted + batch.rejected,
            "accepted": batch.accepted,
            "rejected": batch.rejected,
            "quarantine_path": batch.quarantine_path,
            "ingested_at": batch.ingested_at,
        },
    )
    row = {
        "batch_id": batch.batch_id,
        "source": batch.source,
        "topic": batch.topic,
        "ranges": json.dumps({str(p): list(r) for p, r in sorted(batch.ranges.items())}),
        "received": batch.received,
        "accepted": batch.accepted,
        "rejected": batch.rejected,
        "skipped": batch.skipped,
        "lake_file": batch.lake_file,
        "quarantine_path": batch.quarantine_path,
        "ingested_at": batch.ingested_at,
    }
    with engine.begin() as conn:
        conn.execute(upsert_statement(conn, kafka_batches, ["batch_id"]), [row])


@dataclass
class KafkaTopicTotals:
    """Sums of `kafka_batches` for one topic (and the source it feeds): received = accepted +
    rejected + skipped."""

    topic: str
    source: str
    batches: int = 0
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    skipped: int = 0
    last_batch_at: str | None = None  # ISO-8601 with Z

    def add(self, other: KafkaTopicTotals) -> None:
        self.batches += other.batches
        self.received += other.received
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.skipped += other.skipped
        self.last_batch_at = max(filter(None, (self.last_batch_at, other.last_batch_at)), default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def topic_totals_between(
    conn: Connection, after: str | None = None, upto: str | None = None
) -> dict[tuple[str, str], KafkaTopicTotals]:
    """Per (topic, source) sums of the batches with after < batch_id <= upto (a primary-key range;
    batch ids sort by time, so the run log's read model folds old batches once: pipeline/runlog.py)."""
    t = kafka_batches.c
    query = select(
        t.topic,
        t.source,
        func.count(),
        func.sum(t.received),
        func.sum(t.accepted),
        func.sum(t.rejected),
        func.sum(t.skipped),
        func.max(t.ingested_at),
    ).group_by(t.topic, t.source)
    if after:
        query = query.where(t.batch_id > after)
    if upto:
        query = query.where(t.batch_id <= upto)
    return {
        (r[0], r[1]): KafkaTopicTotals(r[0], r[1], *(int(x or 0) for x in r[2:7]), r[7]) for r in conn.execute(query)
    }


def topic_totals(engine: Engine) -> list[dict[str, Any]]:
    """Per topic: batches, received, accepted, rejected, skipped, last batch time (`sendtime runs`)."""
    if not inspect(engine).has_table("kafka_batches"):
        return []
    with engine.connect() as conn:
        totals = topic_totals_between(conn)
    return [totals[k].to_dict() for k in sorted(totals)]


def format_topic_totals(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'kafka topic':32} {'source':12} {'batches':>8} {'received':>10} {'accepted':>10} "
        f"{'rejected':>9} {'skipped':>8}  last batch"
    )
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['topic']:32} {r['source']:12} {r['batches']:>8} {r['received']:>10} {r['accepted']:>10} "
            f"{r['rejected']:>9} {r['skipped']:>8}  {r['last_batch_at']}"
        )
    return "\n".join(lines)
