"""The warehouse as the pipeline reads it, behind one small interface.

dbt writes the warehouse; the cycle reads it back for three things: the changed rows of the
served marts (validation and publish, pipeline/changes.py), the lake batches committed cycles
have read (to tell a quiet cycle), and what a cycle wrote (the run log's counts). Those reads go
through a `Warehouse`; nothing else in the pipeline opens the warehouse (ingest writes the lake,
not the warehouse). A warehouse also says which dbt target builds it (`dbt_target`).

Two engines (setting `warehouse`, DESIGN.md "Warehouses"): `DuckDBWarehouse` here, the embedded
default, a file opened read-only and closed at once, since DuckDB allows one writer or many readers
and dbt writes it again at the next cycle; and `SparkWarehouse` (pipeline/spark_warehouse.py),
Delta tables read through this process's Spark session.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.encryption import AtRest, at_rest, attach_sql, load_writable_crypto
from pipeline.errors import StoreError
from pipeline.logs import get_logger
from pipeline.warehouse_protocol import COUNTED, CycleState, DbtTarget, Warehouse, WarehouseErasure

__all__ = ["COUNTED", "CycleState", "DbtTarget", "DuckDBWarehouse", "Warehouse", "WarehouseErasure", "warehouse_for"]

log = get_logger(__name__)

# DuckDB's statements ($c is the cycle id)
_COUNTS = {
    name: f"select count(*) from {table}" + (" where _cycle_id = $c" if by_cycle else "")
    for name, (table, by_cycle) in COUNTED.items()
}


class DuckDBWarehouse:
    """The embedded default: `$SENDTIME_HOME/warehouse.duckdb`, an encrypted database when the home
    has a key (pipeline/encryption.py): then it is ATTACHed with the key and made the default."""

    def __init__(self, path: Path, key: AtRest | None = None) -> None:
        self.path = Path(path)
        self._con: Any = None
        self.key = key

    def dbt_target(self, project: Path) -> DbtTarget:
        # profiles.yml's in_process target (the same file kept open for the whole build), or its
        # encrypted twin when the home has a key
        return DbtTarget("in_process" if self.key is None else "in_process_encrypted", project)

    @property
    def env(self) -> dict[str, str]:
        return {}

    def release(self) -> None:
        pass  # every read closes the file; pipeline/transform.py closes dbt's handle after a build

    def exists(self) -> bool:
        return self.path.exists()

    def fingerprint(self) -> object | None:
        """dbt closes the file after every build (with a checkpoint), so its size and mtime move
        with every write; a read-only connection changes neither."""
        stamps = []
        for path in (self.path, self.path.with_name(self.path.name + ".wal")):
            try:
                stat = path.stat()
            except OSError:
                stamps.append(None)
                continue
            stamps.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return None if stamps[0] is None else tuple(stamps)

    def connect(self, read_only: bool = True) -> Any:
        """A DuckDB connection whose default database is the warehouse."""
        import duckdb  # the pipeline's process only; the API never opens the warehouse

        if self.key is None:
            return duckdb.connect(str(self.path), read_only=read_only)
        con = duckdb.connect()
        try:
            if not read_only:
                load_writable_crypto(con)
            con.execute(attach_sql(self.path, self.key, "warehouse", read_only))
            con.execute("USE warehouse")
        except BaseException:
            con.close()
            raise
        return con

    @contextmanager
    def marts(self, since: str | None = None, tables: Mapping[str, Sequence[str]] | None = None) -> Iterator[Any]:
        # every table is readable in the file itself: nothing to copy, whatever `since` and `tables`
        if not self.exists():
            raise StoreError(f"no warehouse at {self.path}: run a cycle (dbt build) first")
        con = self.connect(read_only=True)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One read-only connection for the calls inside (opening the file costs more than the
        small reads a cycle makes)."""
        import duckdb

        if self._con is not None or not self.exists():
            yield
            return
        try:
            self._con = self.connect(read_only=True)
        except duckdb.Error:
            yield  # each call then reports the file as unreadable in its own way
            return
        try:
            yield
        finally:
            con, self._con = self._con, None
            con.close()

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        if self._con is not None:
            yield self._con
            return
        with self.connect(read_only=True) as con:
            yield con

    def erase(self, erasure: WarehouseErasure) -> dict[str, int]:
        import pyarrow as pa

        if not self.exists():
            return {}
        deleted: dict[str, int] = {}
        con = self.connect(read_only=False)
        try:
            for kind in ("customer_ids", "anonymous_ids", "order_ids", "event_ids", "emails", "email_hashes"):
                values = sorted(getattr(erasure, kind))
                con.register(f"erase_{kind}", pa.table({"v": pa.array(values, pa.string())}))
            columns: dict[str, set[str]] = {}
            for table, column in con.execute(
                "select c.table_name, c.column_name from information_schema.columns as c"
                " inner join information_schema.tables as t"
                " on c.table_schema = t.table_schema and c.table_name = t.table_name"
                " where c.table_schema = 'main' and t.table_type = 'BASE TABLE'"
            ).fetchall():
                columns.setdefault(table, set()).add(column)
            con.execute("begin transaction")
            for table in sorted(columns):
                conditions = erasure.conditions(columns[table])
                if conditions:
                    found = con.execute(f'delete from "{table}" where ' + " or ".join(conditions)).fetchall()
                    if found and found[0][0]:
                        deleted[table] = int(found[0][0])
                if "previous_customer_id" in columns[table] and erasure.customer_ids:
                    # another customer's row that remembers it came from the erased one
                    con.execute(
                        f'update "{table}" set previous_customer_id = null'
                        " where previous_customer_id in (select v from erase_customer_ids)"
                    )
            con.execute("commit")
            con.execute("checkpoint")  # deleted rows leave the write-ahead log now
        finally:
            con.close()
        return deleted

    def cycle_state(self, overlap_seconds: float) -> CycleState | None:
        """None when unknown (no warehouse yet, or one that no cycle has registered in)."""
        import duckdb

        if not self.exists():
            return None
        try:
            with self._connection() as con:
                cycle_columns = {
                    r[0]
                    for r in con.execute(
                        "select column_name from information_schema.columns"
                        " where table_schema = 'main' and table_name = 'int_cycles_registered'"
                    ).fetchall()
                }
                stage_change = (
                    "next_stage_change_at" if "next_stage_change_at" in cycle_columns else "cast(null as timestamp)"
                )
                last = con.execute(
                    "select cycle_id, is_committed from int_cycles_registered order by cycle_id desc limit 1"
                ).fetchall()
                committed = con.execute(
                    f"select cycle_id, as_of, {stage_change} from int_cycles_registered where is_committed"
                    " order by cycle_id desc limit 1"
                ).fetchall()
                refreshed = con.execute(
                    "select max(started_at) from int_cycles_registered where refreshes_associations and is_committed"
                ).fetchall()
                watermarks = dict(
                    con.execute(
                        "select b.lake_table, max(b._ingested_at) from int_lake_batches_registered as b"
                        " inner join int_cycles_registered as c on b._cycle_id = c.cycle_id"
                        " where c.is_committed group by b.lake_table"
                    ).fetchall()
                )
                recent = frozenset(
                    r[0]
                    for r in con.execute(
                        "with marks as (select b.lake_table, max(b._ingested_at) as newest"
                        "   from int_lake_batches_registered as b"
                        "   inner join int_cycles_registered as c on b._cycle_id = c.cycle_id"
                        "   where c.is_committed group by b.lake_table)"
                        " select b._batch_id from int_lake_batches_registered as b"
                        " inner join marks on b.lake_table = marks.lake_table"
                        " inner join int_cycles_registered as c on b._cycle_id = c.cycle_id"
                        " where c.is_committed and b._ingested_at >= marks.newest - to_microseconds($overlap)",
                        {"overlap": int(overlap_seconds * 1_000_000)},
                    ).fetchall()
                )
        except duckdb.Error:
            return None
        if not last:
            return None
        return CycleState.from_rows(last, committed, refreshed, watermarks, recent)

    def columns(self, table: str) -> list[str] | None:
        """A table's columns in order; None when the table (or the warehouse) does not exist."""
        import duckdb

        if not self.exists():
            return None
        try:
            with self._connection() as con:
                rows = con.execute(
                    "select column_name from information_schema.columns where table_schema = 'main'"
                    " and table_name = ? order by ordinal_position",
                    [table],
                ).fetchall()
        except duckdb.Error:
            return None
        return [r[0] for r in rows] or None

    def cycle_counts(self, cycle_id: str) -> tuple[bool, dict[str, int]]:
        """(did the cycle refresh the associations, rows it wrote per kind)."""
        import duckdb

        rows: dict[str, int] = {}
        refreshed = False
        try:
            with self._connection() as con:
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
    """The warehouse of the `warehouse` setting (DESIGN.md "Warehouses")."""
    if settings.warehouse == "spark":
        from pipeline.spark_warehouse import SparkWarehouse  # pyspark only where Spark is the warehouse

        return SparkWarehouse(settings)
    return DuckDBWarehouse(settings.warehouse_path, at_rest(settings))
