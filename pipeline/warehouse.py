"""The warehouse as the pipeline reads it, behind one small interface.

dbt writes the warehouse; the cycle reads it back for three things: the changed rows of the
served marts (validation and publish, pipeline/changes.py), the lake batches committed cycles
have read (to tell a quiet cycle), and what a cycle wrote (the run log's counts). Those reads go
through a `Warehouse`; nothing else in the pipeline opens the warehouse (ingest writes the lake,
not the warehouse). The DuckDB warehouse is a file opened read-only, and closed at once, since
DuckDB allows one writer or many readers and dbt writes it again at the next cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pipeline.config import Settings
from pipeline.errors import StoreError
from pipeline.logs import get_logger

log = get_logger(__name__)

# what a cycle wrote, read back for the run log ($c is the cycle id)
_COUNTS = {
    "lake_batches_read": "select count(*) from int_lake_batches_registered where _cycle_id = $c",
    "events_changed": "select count(*) from int_events_deduplicated where _cycle_id = $c",
    "customers_touched": "select count(*) from int_customers_touched",
    "profiles_written": "select count(*) from customer_profiles where _cycle_id = $c",
    "recommendations_written": "select count(*) from customer_recommendations where _cycle_id = $c",
    "products_written": "select count(*) from products where _cycle_id = $c",
    "erasures_written": "select count(*) from customer_erasures where _cycle_id = $c",
}


@dataclass(frozen=True)
class CycleState:
    """What the committed cycles have done, to tell whether anything is left to do."""

    committed_batches: frozenset[str]
    last_cycle_committed: bool
    last_refresh_at: datetime | None


class Warehouse(Protocol):
    def exists(self) -> bool: ...

    def marts(self) -> Any:
        """A context manager yielding a DuckDB connection where the served marts (and the other
        tables) are readable by name: the changes reader builds bodies and checks with DuckDB SQL
        whatever the engine that built them."""
        ...

    def cycle_state(self) -> CycleState | None: ...

    def columns(self, table: str) -> list[str] | None: ...

    def cycle_counts(self, cycle_id: str) -> tuple[bool, dict[str, int]]: ...


class DuckDBWarehouse:
    """The embedded default: `$SENDTIME_HOME/warehouse.duckdb`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def marts(self) -> Iterator[Any]:
        import duckdb  # the pipeline's process only; the API never opens the warehouse

        if not self.exists():
            raise StoreError(f"no warehouse at {self.path}: run a cycle (dbt build) first")
        con = duckdb.connect(str(self.path), read_only=True)
        try:
            yield con
        finally:
            con.close()

    def cycle_state(self) -> CycleState | None:
        """None when unknown (no warehouse yet, or one that no cycle has registered in)."""
        import duckdb

        if not self.exists():
            return None
        try:
            with duckdb.connect(str(self.path), read_only=True) as con:
                committed = frozenset(
                    row[0]
                    for row in con.execute(
                        "select b._batch_id from int_lake_batches_registered as b"
                        " inner join int_cycles_registered as c on b._cycle_id = c.cycle_id where c.is_committed"
                    ).fetchall()
                )
                last = con.execute(
                    "select is_committed from int_cycles_registered order by cycle_id desc limit 1"
                ).fetchall()
                refreshed = con.execute(
                    "select max(started_at) from int_cycles_registered where refreshes_associations and is_committed"
                ).fetchall()
        except duckdb.Error:
            return None
        return CycleState(committed, bool(last and last[0][0]), refreshed[0][0] if refreshed else None)

    def columns(self, table: str) -> list[str] | None:
        """A table's columns in order; None when the table (or the warehouse) does not exist."""
        import duckdb

        if not self.exists():
            return None
        try:
            with duckdb.connect(str(self.path), read_only=True) as con:
                rows = con.execute(
                    "select column_name from information_schema.columns where table_schema = 'main'"
                    " and table_name = ? order by ordinal_position", [table]).fetchall()
        except duckdb.Error:
            return None
        return [r[0] for r in rows] or None

    def cycle_counts(self, cycle_id: str) -> tuple[bool, dict[str, int]]:
        """(did the cycle refresh the associations, rows it wrote per kind)."""
        import duckdb

        rows: dict[str, int] = {}
        refreshed = False
        try:
            with duckdb.connect(str(self.path), read_only=True) as con:
                for name, sql in _COUNTS.items():
                    try:
                        params = {"c": cycle_id} if "$c" in sql else None
                        rows[name] = int(con.execute(sql, params).fetchall()[0][0])
                    except duckdb.Error:
                        pass  # a model that failed to build has nothing to count
                try:
                    found = con.execute(
                        "select refreshes_associations from int_cycles_registered where cycle_id = $c", {"c": cycle_id}
                    ).fetchall()
                    refreshed = bool(found and found[0][0])
                except duckdb.Error:
                    pass
        except duckdb.Error as exc:
            log.warning("cannot read the cycle's counts", extra={"error": type(exc).__name__})
        return refreshed, rows


def warehouse_for(settings: Settings) -> Warehouse:
    return DuckDBWarehouse(settings.warehouse_path)
