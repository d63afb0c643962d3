"""What the pipeline knows of a warehouse, whatever its engine (pipeline/warehouse.py): the
`Warehouse` protocol and the records it returns. The engines' implementations import this module
only (pipeline/warehouse.py for DuckDB, pipeline/spark_warehouse.py for Spark), so choosing one
(`warehouse_for`) creates no import cycle."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

# what a cycle wrote, read back for the run log: the table, and whether only the cycle's own rows count
COUNTED: dict[str, tuple[str, bool]] = {
    "lake_batches_read": ("int_lake_batches_registered", True),
    "events_changed": ("int_events_deduplicated", True),
    "customers_touched": ("int_customers_touched", False),
    "profiles_written": ("customer_profiles", True),
    "recommendations_written": ("customer_recommendations", True),
    "products_written": ("products", True),
    "erasures_written": ("customer_erasures", True),
}


@dataclass(frozen=True)
class WarehouseErasure:
    """The rows an erasure removes from every warehouse table, by the identifier columns a table
    has (pipeline/erasure.py): whatever the model, a column of one of these names is enough."""

    customer_ids: frozenset[str]
    anonymous_ids: frozenset[str] = frozenset()
    order_ids: frozenset[str] = frozenset()
    event_ids: frozenset[str] = frozenset()
    emails: frozenset[str] = frozenset()
    email_hashes: frozenset[str] = frozenset()

    def conditions(self, columns: set[str], values: Callable[[frozenset[str]], str] | None = None) -> list[str]:
        """SQL conditions for a table with `columns`: over the temporary tables `erase_<kind>`, or
        with `values`, over the SQL list it makes of a set of values (`in ('a', 'b')`)."""
        out = []
        for column, kind, values_of in (
            ("customer_id", "customer_ids", self.customer_ids),
            ("anonymous_id", "anonymous_ids", self.anonymous_ids),
            ("order_id", "order_ids", self.order_ids),
            ("event_id", "event_ids", self.event_ids),
            ("link_event_id", "event_ids", self.event_ids),
            ("email", "emails", self.emails),
            ("email_hash", "email_hashes", self.email_hashes),
        ):
            if column in columns and values_of:
                expr = f"lower({column})" if column == "email" else column
                listed = values(values_of) if values is not None else f"(select v from erase_{kind})"
                out.append(f"{expr} in {listed}")
        return out


@dataclass(frozen=True)
class CycleState:
    """What the committed cycles have done, to tell whether a cycle has anything to do
    (pipeline/cycle_plan.py): read once per warehouse write, bounded whatever the lake's age."""

    last_cycle_id: str | None
    last_cycle_committed: bool
    last_committed_cycle_id: str | None
    # the last committed cycle's as_of and the next instant after it at which a stored profile
    # changes lifecycle stage (recorded by the commit_cycle hook; None when that cycle recorded
    # nothing, e.g. a warehouse built before the value existed)
    last_as_of: datetime | None
    next_stage_change_at: datetime | None
    last_refresh_at: datetime | None
    # per lake table: the newest committed _ingested_at (the ingestion watermark), and the
    # committed batches no older than the watermark less the overlap (older files are never read
    # incrementally: docs/models.md "Lake watermark")
    watermarks: dict[str, datetime] = field(default_factory=dict)
    recent_batches: frozenset[str] = frozenset()

    @classmethod
    def from_rows(
        cls, last: Any, committed: Any, refreshed: Any, watermarks: dict[str, datetime], recent: frozenset[str]
    ) -> CycleState:
        """From the rows both warehouses query: the last cycle (id, committed), the last committed
        one (id, as_of, next stage change), the last refresh, the watermarks and recent batches."""
        committed_id, as_of, next_change = tuple(committed[0]) if committed else (None, None, None)
        return cls(
            last_cycle_id=last[0][0],
            last_cycle_committed=bool(last[0][1]),
            last_committed_cycle_id=committed_id,
            last_as_of=as_of,
            next_stage_change_at=next_change,
            last_refresh_at=refreshed[0][0] if refreshed else None,
            watermarks=watermarks,
            recent_batches=recent,
        )


@dataclass(frozen=True)
class DbtTarget:
    """How pipeline/transform.py runs dbt for a warehouse: the profiles.yml target and its folder."""

    name: str
    profiles_dir: Path


class Warehouse(Protocol):
    def dbt_target(self, project: Path) -> DbtTarget:
        """The dbt target that builds this warehouse, ready to run (`project`: the dbt project)."""
        ...

    @property
    def env(self) -> dict[str, str]:
        """Environment variables the target's profile reads, set for each dbt invocation."""
        ...

    def release(self) -> None:
        """Let go of what this process holds of the warehouse (Spark: the session, its JVM and the
        home's Derby metastore, which admits one process), so another process can build it."""
        ...

    def exists(self) -> bool: ...

    def fingerprint(self) -> object | None:
        """A value that changes whenever the warehouse is written (None when the engine cannot
        tell): state read for one fingerprint stays valid while it is unchanged."""
        ...

    def marts(self, since: str | None = None, tables: Mapping[str, Sequence[str]] | None = None) -> Any:
        """A context manager yielding a DuckDB connection where the served marts and `tables`
        (name -> columns; all columns when empty) are readable by name: the change reader and
        reconcile build bodies and checks with DuckDB SQL whatever the engine that built them.
        `since` (the last published cycle) lets an engine copy only the rows a cycle's reader can
        need: those written after it and the rows they refer to."""
        ...

    def reading(self) -> Any:
        """A context manager inside which the calls below share one read session."""
        ...

    def cycle_state(self, overlap_seconds: float) -> CycleState | None: ...

    def columns(self, table: str) -> list[str] | None: ...

    def cycle_counts(self, cycle_id: str) -> tuple[bool, dict[str, int]]: ...

    def erase(self, erasure: WarehouseErasure) -> dict[str, int]:
        """Delete the rows of `erasure` from every table in one transaction; rows deleted per table."""
        ...
