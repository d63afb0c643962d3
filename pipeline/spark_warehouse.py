"""The Spark warehouse (`warehouse = "spark"`): Delta tables built by dbt-spark, read through this
process's Spark session (pipeline/spark_session.py; docs/models.md "Spark").

The cycle reads what dbt wrote through the `Warehouse` interface of pipeline/warehouse.py, as on
DuckDB. The change reader (pipeline/changes.py) and reconcile build bodies and checks with DuckDB
SQL whatever the engine, so `marts()` copies the rows they can need into an in-memory DuckDB, moved
as Arrow: for a cycle, the rows written after the last published cycle and the rows they refer to
(a changed list's profile, a changed profile's list, the catalog), so the copy follows what the
cycle changed, not the size of the marts.

One process holds one Spark session (one JVM, one Derby metastore), started on first use and kept
for the process's life: `sendtime schedule` pays the JVM start once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Settings
from pipeline.errors import StoreError
from pipeline.logs import get_logger
from pipeline.mart_contract import ERASURES, PRODUCTS, PROFILES, RECOMMENDATIONS
from pipeline.warehouse_protocol import COUNTED, CycleState, DbtTarget, WarehouseErasure

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = get_logger(__name__)

TARGET = "spark"
_CYCLES = "int_cycles_registered"
_BATCHES = "int_lake_batches_registered"


def literal(text: str) -> str:
    """A Spark SQL string literal (Spark's literals process backslash escapes)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class SparkWarehouse:
    """Delta tables in the spark target's schema, read through Spark."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # ------------------------------------------------------------------ the session and dbt's target

    @property
    def env(self) -> dict[str, str]:
        """The variables the spark target of profiles.yml reads, from the settings."""
        return {
            "SENDTIME_SPARK_MASTER": self.settings.spark_master,
            "SENDTIME_SPARK_WAREHOUSE_DIR": self.settings.spark_warehouse_location,
        }

    @cached_property
    def target(self) -> dict[str, Any]:
        from pipeline import spark_session

        return spark_session.spark_target(self.settings.home, self.settings.spark_conf, self.env)

    def session(self) -> SparkSession:
        from pipeline import spark_session

        try:
            return spark_session.get_session(self.settings.home, self.settings.spark_conf, self.env)
        except spark_session.SparkSetupError as exc:
            raise StoreError(f"the Spark warehouse cannot start: {exc}") from None

    def dbt_target(self, project: Path) -> DbtTarget:
        """The spark target with the spark_conf settings among its server_side_parameters, in a
        profiles.yml under the home (pipeline/spark_session.py `write_profile`), and the session
        started from the same values before dbt asks for it."""
        from pipeline import spark_session

        folder = spark_session.write_profile(self.settings.dbt_target_dir.parent / "profiles", self.target)
        self.session()
        return DbtTarget(TARGET, folder)

    def release(self) -> None:
        """Stops this process's Spark session (its JVM and the metastore it holds)."""
        from pipeline import spark_session

        spark_session.stop()

    @property
    def schema(self) -> str:
        return str(self.target["schema"])

    def _table(self, name: str) -> str:
        return f"{self.schema}.{name}"

    def _tables(self, spark: SparkSession) -> dict[str, str]:
        """The schema's tables and views: name -> type (MANAGED, EXTERNAL, VIEW)."""
        if not spark.catalog.databaseExists(self.schema):
            return {}
        return {t.name: str(t.tableType) for t in spark.catalog.listTables(self.schema)}

    def _has(self, spark: SparkSession, *tables: str) -> bool:
        return all(spark.catalog.tableExists(self._table(t)) for t in tables)

    # ------------------------------------------------------------------ the Warehouse protocol

    def exists(self) -> bool:
        return self._has(self.session(), _CYCLES)

    def fingerprint(self) -> object | None:
        """The cycle table's Delta log: every dbt build writes a commit to it (the cycle registers,
        then commits), so the listing moves with every build; None for a remote warehouse."""
        location = self.settings.spark_warehouse_location
        if "://" in location and not location.startswith("file:"):
            return None
        log_dir = Path(location.removeprefix("file:")) / f"{self.schema}.db" / _CYCLES / "_delta_log"
        try:
            return tuple(sorted((p.name, p.stat().st_size) for p in log_dir.iterdir() if p.suffix == ".json"))
        except OSError:
            return None

    def reading(self) -> Any:
        return nullcontext()  # one session serves every read

    def _mart_reads(self, since: str | None) -> dict[str, str]:
        """Per served mart, the Spark query of the rows the change reader can need after `since`
        (every row when None)."""
        t = {name: self._table(name) for name in (PROFILES, RECOMMENDATIONS, PRODUCTS, ERASURES)}
        if since is None:
            return {name: f"select * from {table}" for name, table in t.items()}
        after = f"_cycle_id > {literal(since)}"
        return {
            # changed profiles, and the profiles of changed lists and erasures (whether they exist)
            PROFILES: f"select * from {t[PROFILES]} where {after}"
            f" or customer_id in (select customer_id from {t[RECOMMENDATIONS]} where {after})"
            f" or customer_id in (select customer_id from {t[ERASURES]} where {after})",
            # the whole list of every customer whose profile or list changed
            RECOMMENDATIONS: f"select * from {t[RECOMMENDATIONS]} where customer_id in ("
            f"select customer_id from {t[RECOMMENDATIONS]} where {after}"
            f" union select customer_id from {t[PROFILES]} where {after})",
            # the catalog is small, and checks may read all of it
            PRODUCTS: f"select * from {t[PRODUCTS]}",
            ERASURES: f"select * from {t[ERASURES]} where {after}",
        }

    @contextmanager
    def marts(self, since: str | None = None, tables: Mapping[str, Sequence[str]] | None = None) -> Iterator[Any]:
        """An in-memory DuckDB holding the served marts (the rows written after `since` and what they
        refer to; all rows when None) and the `tables` asked for (name -> columns, all when empty)."""
        import duckdb  # the change reader's SQL engine, over a copy

        spark = self.session()
        if not self._has(spark, _CYCLES):
            raise StoreError("no Spark warehouse yet: run a cycle (dbt build) first")
        reads = self._mart_reads(since)
        for name, columns in (tables or {}).items():
            reads[name] = f"select {', '.join(columns) or '*'} from {self._table(name)}"
        con = duckdb.connect()
        try:
            for name, sql in reads.items():
                if not self._has(spark, name):
                    continue  # the reader says which table is missing
                rows = spark.sql(sql).toArrow()
                con.register("spark_rows", rows)
                con.execute(f'create table "{name}" as select * from spark_rows')
                con.unregister("spark_rows")
            yield con
        finally:
            con.close()

    def cycle_state(self, overlap_seconds: float) -> CycleState | None:
        """None when unknown (no table yet, or none that a cycle has registered in)."""
        spark = self.session()
        if not self._has(spark, _CYCLES, _BATCHES):
            return None
        cycles, batches = self._table(_CYCLES), self._table(_BATCHES)
        columns = set(spark.table(cycles).columns)
        stage_change = "next_stage_change_at" if "next_stage_change_at" in columns else "cast(null as timestamp)"
        last = spark.sql(f"select cycle_id, is_committed from {cycles} order by cycle_id desc limit 1").collect()
        if not last:
            return None
        committed = spark.sql(
            f"select cycle_id, as_of, {stage_change} from {cycles} where is_committed order by cycle_id desc limit 1"
        ).collect()
        refreshed = spark.sql(
            f"select max(started_at) from {cycles} where refreshes_associations and is_committed"
        ).collect()
        marks = (
            f"select b.lake_table, max(b._ingested_at) as newest from {batches} as b"
            f" inner join {cycles} as c on b._cycle_id = c.cycle_id where c.is_committed group by b.lake_table"
        )
        watermarks = {r[0]: r[1] for r in spark.sql(marks).collect()}
        overlap = int(overlap_seconds * 1_000_000)
        recent = frozenset(
            r[0]
            for r in spark.sql(
                f"with marks as ({marks})"
                f" select b._batch_id from {batches} as b"
                " inner join marks on b.lake_table = marks.lake_table"
                f" inner join {cycles} as c on b._cycle_id = c.cycle_id"
                f" where c.is_committed and b._ingested_at >= timestampadd(MICROSECOND, -{overlap}, marks.newest)"
            ).collect()
        )
        return CycleState.from_rows(last, committed, refreshed, watermarks, recent)

    def columns(self, table: str) -> list[str] | None:
        spark = self.session()
        if not self._has(spark, table):
            return None
        return list(spark.table(self._table(table)).columns) or None

    def cycle_counts(self, cycle_id: str) -> tuple[bool, dict[str, int]]:
        """(did the cycle refresh the associations, rows it wrote per kind), in one Spark query."""
        spark = self.session()
        cycle = literal(cycle_id)
        parts = [
            f"select {literal(name)} as kind, count(*) as n from {self._table(table)}"
            + (f" where _cycle_id = {cycle}" if by_cycle else "")
            for name, (table, by_cycle) in COUNTED.items()
            if self._has(spark, table)
        ]
        rows: dict[str, int] = {}
        if parts:
            rows = {kind: int(n) for kind, n in spark.sql(" union all ".join(parts)).collect()}
        refreshed = False
        if self._has(spark, _CYCLES):
            found = spark.sql(f"select refreshes_associations from {self._table(_CYCLES)} where cycle_id = {cycle}")
            rows_found = found.collect()
            refreshed = bool(rows_found and rows_found[0][0])
        return refreshed, rows

    def erase(self, erasure: WarehouseErasure) -> dict[str, int]:
        """Delete the erased rows from every Delta table of the schema (views hold nothing; the lake
        tables are the lake's files, which the erasure rewrites itself). Delta has no multi-table
        transaction: each table's DELETE is atomic, and an erasure that stops half-way is redone by
        the next cycle (pipeline/erasure.py keeps the request pending until it completes)."""
        spark = self.session()
        deleted: dict[str, int] = {}
        for table, kind in sorted(self._tables(spark).items()):
            if kind == "VIEW":
                continue
            name = self._table(table)
            columns = set(spark.table(name).columns)
            conditions = erasure.conditions(columns, values=_in_list)
            if conditions:
                where = " or ".join(conditions)
                found = spark.sql(f"select count(*) from {name} where {where}").collect()[0][0]
                if found:
                    spark.sql(f"delete from {name} where {where}")
                    deleted[table] = int(found)
            if "previous_customer_id" in columns and erasure.customer_ids:
                ids = _in_list(erasure.customer_ids)
                if spark.sql(f"select 1 from {name} where previous_customer_id in {ids} limit 1").collect():
                    spark.sql(f"update {name} set previous_customer_id = null where previous_customer_id in {ids}")
                    deleted.setdefault(table, 0)
        if deleted:
            # a Delta DELETE leaves the old files for time travel: the erased rows leave the disk only
            # when they are vacuumed (docs/privacy.md "Spark")
            spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
            # VACUUM lists the table's files in a job of this many tasks (default 10,000: minutes of
            # task overhead per table on a small machine); the cluster's parallelism is enough
            spark.conf.set(
                "spark.sql.sources.parallelPartitionDiscovery.parallelism",
                str(max(2, spark.sparkContext.defaultParallelism)),
            )
            for table in deleted:
                spark.sql(f"vacuum {self._table(table)} retain 0 hours")
        return deleted


def _in_list(values: frozenset[str]) -> str:
    return "(" + ", ".join(literal(v) for v in sorted(values)) + ")"
