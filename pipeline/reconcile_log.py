"""The reconcile log: one `reconciliations` row per `sendtime reconcile` (CLI or scheduler).

Written by pipeline/reconcile.py, read by the API's pipeline metrics (serving/pipeline_metrics.py:
the drift of the latest reconcile, when it ran, how many ran by status). The table has its own
MetaData and is created on first use (CREATE IF NOT EXISTS), like the consumer's `kafka_batches`:
no schema version bump of the shared store for a table only reconcile writes. A backup copies it
with the rest of the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, Text, func, inspect, select

metadata = MetaData()

reconciliations = Table(
    "reconciliations",
    metadata,
    Column("started_at", String(40), primary_key=True),
    Column("ended_at", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # clean, drift, repaired, failed
    Column("version", Integer),  # the published version compared
    Column("seconds", Float, nullable=False),
    Column("drift", Text, nullable=False),  # JSON {check: rows found drifted}
    Column("repaired", Text),  # JSON {check: rows republished or deleted}, when --repair ran
    Column("error", Text),
)

STATUSES = ("clean", "drift", "repaired", "failed")

# lake source -> (key, the warehouse model of its deduplicated records, its version column or None)
LAKE_SOURCES: dict[str, tuple[str, str, str | None]] = {
    "events": ("event_id", "int_events_deduplicated", None),
    "customers": ("customer_id", "int_customers_cdc_applied", "change_ts_ms"),
    "orders": ("order_id", "int_orders_cdc_applied", "change_ts_ms"),
    "order_items": ("order_item_id", "int_order_items_cdc_applied", "change_ts_ms"),
    "products": ("product_id", "int_products_deduplicated", None),
}
# every check pipeline/reconcile.py reports (a clean run reports them all at 0: the metrics' label set)
CHECKS = tuple(
    [f"lake.{s}.{k}" for s in LAKE_SOURCES for k in ("lost_batches", "missing", "extra")]
    + ["lake.events.doubled"]
    + [f"lake.{s}.stale" for s, (_, _, v) in LAKE_SOURCES.items() if v]
    + ["warehouse.missing", "warehouse.profiles.missing", "warehouse.profiles.deleted", "store.contract.changed"]
    + [f"store.{t}.{k}" for t in ("profiles", "recommendations", "products") for k in ("missing", "extra", "changed")]
)


@dataclass(frozen=True)
class ReconcileRecord:
    started_at: str
    ended_at: str
    status: str
    version: int | None
    seconds: float
    drift: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] | None = None
    error: str | None = None


def record(engine: Engine, rec: ReconcileRecord) -> None:
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        conn.execute(
            reconciliations.insert().values(
                started_at=rec.started_at,
                ended_at=rec.ended_at,
                status=rec.status,
                version=rec.version,
                seconds=rec.seconds,
                drift=json.dumps(rec.drift, sort_keys=True),
                repaired=None if rec.repaired is None else json.dumps(rec.repaired, sort_keys=True),
                error=rec.error,
            )
        )


def _decoded(text: Any) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def latest(engine: Engine) -> tuple[ReconcileRecord | None, dict[str, int]]:
    """(the latest reconcile or None, how many ran by status); nothing when none ever ran."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("reconciliations"):
            return None, {}
        table = reconciliations
        row = conn.execute(select(table).order_by(table.c.started_at.desc()).limit(1)).mappings().first()
        counts = dict(conn.execute(select(table.c.status, func.count()).group_by(table.c.status)).all())
    if row is None:
        return None, counts
    return ReconcileRecord(
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        status=row["status"],
        version=row["version"],
        seconds=float(row["seconds"]),
        drift=_decoded(row["drift"]) or {},
        repaired=_decoded(row["repaired"]),
        error=row["error"],
    ), {str(k): int(v) for k, v in counts.items()}
