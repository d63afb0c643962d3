"""The same dbt models on Spark (dbt-spark `session`, Delta Lake) and on DuckDB (docs/models.md "Spark").

One SparkSession for the whole test process (local[2], 2 shuffle partitions, no UI), on one
SENDTIME_HOME that both engines share: the same lake, DuckDB's warehouse.duckdb beside Spark's
warehouse and metastore under spark/. Spark missing (pyspark, Java, the Delta jars) fails the tests
with the reason: CI installs all of it (`./run test`), so a skip would hide a broken install.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dbt.cli.main import dbtRunner

from pipeline.timestamps import parse_timestamp
from tests.helpers.lake_writer import LakeWriter, cdc
from tests.test_timestamps import BATTERY, _mutations

ROOT = Path(__file__).resolve().parents[1]
CYCLE = "20261128T000000000000Z-5a5a5a5a"
ENGINES = ["duckdb", "spark"]
# the models of this part: staging, CDC and deduplication, and the lake bookkeeping they read
MODELS = [
    "int_customers_cdc_applied",
    "int_orders_cdc_applied",
    "int_order_items_cdc_applied",
    "int_events_deduplicated",
    "int_products_deduplicated",
]
COMPARED = [
    "stg_tracking__events",
    "stg_crm__customers",
    "stg_shop__orders",
    "stg_shop__order_items",
    "stg_catalog__products",
    "int_lake_batches_registered",
    "int_events_deduplicated",
    "int_products_deduplicated",
    "int_customer_changes_deduplicated",
    "int_order_changes_deduplicated",
    "int_order_item_changes_deduplicated",
    "int_customers_cdc_applied",
    "int_orders_cdc_applied",
    "int_order_items_cdc_applied",
]


class Dbt:
    """dbt in-process against one home, on either engine; the Spark schema is `sendtime` unless told."""

    def __init__(self, home: Path, project: Path = ROOT, spark_schema: str = "sendtime") -> None:
        self.home, self.project, self.spark_schema = home, project, spark_schema

    def __call__(self, engine: str, *args: str, check: bool = True) -> Any:
        env = {"SENDTIME_HOME": str(self.home), "DO_NOT_TRACK": "1", "SENDTIME_SPARK_SCHEMA": self.spark_schema}
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        folder = self.home / "dbt" / f"{self.project.name}-{engine}"
        try:
            result = dbtRunner().invoke(
                [
                    *args,
                    "--project-dir",
                    str(self.project),
                    "--profiles-dir",
                    str(ROOT),
                    "--target",
                    engine,
                    "--target-path",
                    str(folder / "target"),
                    "--log-path",
                    str(folder / "logs"),
                    "--log-level",
                    "none",
                    "--log-level-file",
                    "info",
                    "--no-use-colors",
                    "--no-send-anonymous-usage-stats",
                    "--no-version-check",
                ]
            )
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if check:
            failed = [
                (r.node.name, r.message)
                for r in getattr(result.result, "results", None) or []
                if str(getattr(r.status, "value", r.status)) not in ("success", "pass")
            ]
            assert result.success and not failed, (result.exception, failed)
        return result

    def show(self, engine: str, sql: str) -> list[tuple]:
        result = self(engine, "show", "--inline", sql, "--limit", "-1")
        return [tuple(row) for row in result.result.results[0].agate_table.rows]

    def compile(self, engine: str, sql: str, variables: dict[str, Any] | None = None) -> str:
        args = ["--vars", json.dumps(variables)] if variables else []
        result = self(engine, "compile", "--inline", sql, *args)
        return result.result.results[0].node.compiled_code


@pytest.fixture(scope="session")
def spark_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("spark") / "home"
    home.mkdir()
    try:
        from pipeline import spark_session

        started = time.perf_counter()
        spark_session.get_session(home)
    except ImportError as exc:
        pytest.fail(f"pyspark is not installed ({exc}): pip install -e '.[spark]' (./run test does)")
    except spark_session.SparkSetupError as exc:
        pytest.fail(f"Spark cannot start: {exc}")
    print(f"\nSpark session started in {time.perf_counter() - started:.1f} s")
    yield home
    spark_session.stop()


@pytest.fixture(scope="session")
def spark(spark_home: Path) -> Any:
    from pipeline import spark_session

    return spark_session.get_session(spark_home)


def _lake_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _parsed(dbt: Dbt, engine: str, inputs: list[Any]) -> list[str | None]:
    """parse_timestamp over the inputs as the lake holds them, through dbt on one engine."""
    sql = (
        f"select i, cast({{{{ parse_timestamp('raw') }}}} as string) as parsed "
        f"from {_values(engine, inputs)} order by i"
    )
    found = dict(dbt.show(engine, sql))
    out: list[str | None] = []
    for i in range(len(inputs)):
        text = found[i]
        out.append(None if text is None else datetime.fromisoformat(text).isoformat())
    return out


def _values(engine: str, inputs: list[Any]) -> str:
    """The inputs as the lake holds them, as an inline table battery(i, raw) (a long union is too deep for Spark)."""
    rows = ", ".join(f"({i}, {_sql_text(engine, _lake_text(v))})" for i, v in enumerate(inputs))
    return f"values {rows} as battery (i, raw)" if engine == "spark" else f"(values {rows}) as battery (i, raw)"


def _sql_text(engine: str, text: str | None) -> str:
    """A string literal of either engine: Spark's literals process backslash escapes, DuckDB's do not."""
    if text is None:
        return "cast(null as string)"
    if engine == "spark":
        return (
            "'"
            + text.replace("\\", "\\\\")
            .replace("'", "\\'")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\t", "\\t")
            + "'"
        )
    return "'" + text.replace("'", "''") + "'"


@pytest.mark.parametrize("engine", ENGINES)
def test_parse_timestamp_macro_matches_the_battery(engine: str, spark_home: Path) -> None:
    got = _parsed(Dbt(spark_home), engine, [case["input"] for case in BATTERY])
    mismatches = [(c["input"], g, c["expected"]) for c, g in zip(BATTERY, got) if g != c["expected"]]
    assert mismatches == []


def test_spark_parse_timestamp_agrees_with_python_on_random_inputs(spark_home: Path) -> None:
    import random

    inputs = _mutations(random.Random(23), 1000)
    got = _parsed(Dbt(spark_home), "spark", inputs)
    python = [None if (p := parse_timestamp(v)) is None else p.isoformat() for v in inputs]
    assert [(v, g, p) for v, g, p in zip(inputs, got, python) if g != p] == []
    assert 100 < sum(p is None for p in python) < len(inputs) - 100


def test_spark_parse_timestamp_holds_in_ansi_mode(spark_home: Path, spark: Any) -> None:
    """dbt-spark turns ANSI mode off; a cluster may not: the expression must not raise, only answer null."""
    inputs = [case["input"] for case in BATTERY] + ["2026-13-45T99:99:99+99:99", "9" * 16, "-", "2026-02-29"]
    compiled = Dbt(spark_home).compile(
        "spark", f"select i, {{{{ parse_timestamp('raw') }}}} as parsed from {_values('spark', inputs)} order by i"
    )
    spark.conf.set("spark.sql.ansi.enabled", "true")
    try:
        parsed = [row[1] for row in spark.sql(compiled).collect()]
    finally:
        spark.conf.set("spark.sql.ansi.enabled", "false")
    expected = [case["expected"] for case in BATTERY] + [None, None, None, None]
    assert [None if p is None else p.isoformat() for p in parsed] == expected


def _write_lake(home: Path) -> None:
    """Small and messy: duplicates, CDC ties (lsn, ingestion order), deletes, aliases, impossible timestamps,
    padded text, numbers in every form ingest accepts (a number ingest rejects never reaches the lake)."""
    lake = LakeWriter(home)
    customer = {
        "customer_id": " K1 ",
        "email": " Ann@Example.COM ",
        "first_name": " Ann ",
        "country": "de",
        "marketing_consent": " TRUE ",
        "created_at": "2026-01-01T10:00:00.123456789+01:00",
        "updated_at": "1767225600123",
    }
    lake.write(
        "customers",
        [
            cdc("c", 1000, customer, lsn=5),
            cdc("u", 2000, {**customer, "first_name": "B"}, lsn=7),
            cdc("u", 2000, {**customer, "first_name": "C"}, lsn=6),
            cdc("c", 1000, {"customer_id": "K2", "email": "k2@example.com", "created_at": "2026-02-30"}),
            cdc("u", 2000, {"customer_id": "K2", "email": "x", "marketing_consent": "maybe"}),
            cdc("d", 3000, {"customer_id": "K3"}),
        ],
    )
    lake.write(
        "customers",
        [
            cdc("u", 2000, {"customer_id": "K2", "email": "later@example.com"}),
            cdc("c", 1000, customer, lsn=5),  # re-ingested: keeps its first position
            cdc("u", 2500, {"customer_id": "K3", "first_name": "old"}),  # older than the delete
        ],
    )
    order = {
        "order_id": "O1",
        "customer_id": "K1",
        "status": " Paid ",
        "currency": " eur ",
        "total_amount": "12.3456789",
        "created_at": "2026-03-01 10:15",
        "updated_at": "2026-03-01Z",
    }
    lake.write(
        "orders",
        [
            cdc("c", 1000, order),
            cdc("u", 2000, {**order, "customer_id": "K2", "total_amount": "1e2"}),
            cdc("c", 1000, {**order, "order_id": "O2", "total_amount": "7"}),
            cdc("d", 2000, {**order, "order_id": "O2"}),
        ],
    )
    lake.write(
        "order_items",
        [
            cdc(
                "c",
                1000,
                {
                    "order_item_id": "I1",
                    "order_id": "O1",
                    "product_id": " sku-5 ",
                    "quantity": "2",
                    "unit_price": "3.5",
                },
            ),
            cdc(
                "u",
                1000,
                {"order_item_id": "I1", "order_id": "O1", "product_id": "p9", "quantity": "2.5", "unit_price": "1e2"},
            ),
        ],
    )
    events = [
        {
            "event_id": " e1 ",
            "event_type": " Product_View ",
            "occurred_at": "2026-11-28T10:15:30.5-03:00",
            "customer_id": "K1",
            "product_id": " sku-10 ",
            "properties": '{"price": 9.5}',
        },
        {
            "event_id": "e2",
            "event_type": "login",
            "occurred_at": "1764288000000",
            "anonymous_id": "a1",
            "customer_id": "K2",
        },
        {
            "event_id": "e3",
            "event_type": "add_to_cart",
            "occurred_at": "2026-11-28",
            "anonymous_id": "a1",
            "product_id": "P1",
        },
    ]
    lake.write("events", events)
    lake.write(
        "events",
        [{**events[0], "event_type": "purchase"}, {**events[2], "occurred_at": "2026-11-29Z"}],
        ingested_at=datetime(2026, 11, 2, 9),
    )
    lake.write(
        "products",
        [
            {
                "product_id": " sku-5 ",
                "name": " Shoe ",
                "category": "shoes",
                "price": "19.999",
                "currency": "usd",
                "in_stock": "true",
            },
            {"product_id": "P1", "name": "Hat", "category": "hats", "price": "7.125", "in_stock": None},
        ],
    )
    lake.write(
        "products",
        [{"product_id": "P00005", "name": "Shoe 2", "category": "shoes", "price": "21", "in_stock": "false"}],
    )
    # a batch still being written: the writer's temporary name is never read
    folder = next((home / "lake" / "events").glob("ingest_date=*"))
    (folder / ".20261101T120000000000Z-deadbeef.parquet.tmp").write_bytes(b"PAR1 half a file")


def _rows(engine: str, home: Path, spark: Any, table: str) -> tuple[list[str], list[tuple]]:
    if engine == "duckdb":
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            result = con.execute(f"select * from {table}")
            names = [d[0] for d in result.description]
            rows = result.fetchall()
    else:
        frame = spark.sql(f"select * from sendtime.{table}")
        names, rows = frame.columns, [tuple(row) for row in frame.collect()]
    return names, sorted(rows, key=lambda row: [(v is None, repr(_normal(v))) for v in row])


def _normal(value: Any) -> Any:
    return value.normalize() if isinstance(value, Decimal) else value


@pytest.fixture(scope="session")
def built(spark_home: Path) -> dict[str, float]:
    """The lake above, built on both engines: staging, CDC and deduplication models and their data tests."""
    _write_lake(spark_home)
    dbt = Dbt(spark_home)
    seconds: dict[str, float] = {}
    for engine in ENGINES:
        started = time.perf_counter()
        dbt(
            engine,
            "build",
            "--vars",
            json.dumps({"cycle_id": CYCLE, "as_of": "2026-11-30 00:00:00"}),
            "--select",
            *[f"+{m}" for m in MODELS],
            "--exclude",
            "int_cycles_registered",
            "test_type:unit",
            "--indirect-selection",
            "cautious",
        )
        seconds[engine] = round(time.perf_counter() - started, 1)
    print(f"\nbuild seconds: {seconds}")
    return seconds


@pytest.mark.parametrize("table", COMPARED)
def test_models_are_equal_on_both_engines(table: str, built: dict[str, float], spark_home: Path, spark: Any) -> None:
    duck_names, duck_rows = _rows("duckdb", spark_home, spark, table)
    spark_names, spark_rows = _rows("spark", spark_home, spark, table)
    assert spark_names == duck_names
    assert len(duck_rows) > 0
    assert [tuple(_normal(v) for v in r) for r in spark_rows] == [tuple(_normal(v) for v in r) for r in duck_rows]


def test_spark_staging_reads_what_the_lake_holds(built: dict[str, float], spark_home: Path, spark: Any) -> None:
    events = spark.sql(
        "select event_id, event_type, product_id, occurred_at from sendtime.stg_tracking__events"
        " order by event_id, event_type"
    ).collect()
    assert [tuple(e) for e in events][:2] == [
        ("e1", "product_view", "SKU-10", datetime(2026, 11, 28, 13, 15, 30, 500000)),
        ("e1", "purchase", "SKU-10", datetime(2026, 11, 28, 13, 15, 30, 500000)),
    ]
    assert spark.sql(
        "select first_name, email from sendtime.int_customers_cdc_applied where customer_id = 'K1'"
    ).collect()[0] == ("B", "ann@example.com")
    # the lake tables are Parquet external tables, the models Delta tables
    detail = spark.sql("describe detail sendtime.int_events_deduplicated").collect()[0].asDict()
    assert detail["format"] == "delta" and str(spark_home / "spark" / "warehouse") in detail["location"]


def test_the_lake_filter_prunes_partitions_on_spark(built: dict[str, float], spark_home: Path, spark: Any) -> None:
    sql = "select event_id from {{ ref('stg_tracking__events') }} where {{ lake_batches_of_this_cycle('events') }}"
    compiled = Dbt(spark_home).compile("spark", sql, {"cycle_id": CYCLE})
    plan = "\n".join(row[0] for row in spark.sql("explain " + compiled).collect())
    assert "PartitionFilters: [" in plan and "ingest_date" in plan.split("PartitionFilters: [", 1)[1].split("]")[0]
    assert len(spark.sql(compiled).collect()) == 5


TOY_PROJECT = """
name: sendtime
version: "1.0.0"
config-version: 2
profile: sendtime
model-paths: ["models"]
macro-paths: ["macros"]
dispatch:
  - macro_namespace: dbt
    search_order: ["sendtime", "dbt"]
models:
  sendtime:
    +file_format: "{{ 'delta' if target.type == 'spark' else none }}"
    +materialized: incremental
    +incremental_strategy: delete+insert
    +on_schema_change: fail
"""

# delete+insert on a key with several rows per key; a pre-hook deleting through a subquery
# (delete_matching), a `delete from {{ this }} where ...` post-hook, and reads of {{ this }}
TOY_MODEL = """
{{ config(
    unique_key='customer_id',
    pre_hook="{{ delete_matching(this, 'stored', \\"select 'C3' as customer_id\\", 'erased', 'erased.customer_id = stored.customer_id') if is_incremental() else '' }}",
    post_hook="delete from {{ this }} where status = 'gone'",
) }}

with

arrived as (

    {%- for row in var('rows') %}
    select '{{ row[0] }}' as customer_id, '{{ row[1] }}' as order_id, {{ row[2] }} as amount, '{{ row[3] }}' as status
    {{- ' union all' if not loop.last }}
    {%- endfor %}

),

{% if is_incremental() %}
stored as (

    select * from {{ this }}

),

stored_rows_per_customer as (

    select
        customer_id,
        count(*) as stored_rows
    from stored
    group by customer_id

),

last_run as (

    select max(run) as run from stored

),
{% endif %}

final as (

    select
        arrived.customer_id,
        arrived.order_id,
        arrived.amount,
        arrived.status,
        {%- if is_incremental() %}
        coalesce(last_run.run, 0) + 1 as run,
        coalesce(stored_rows_per_customer.stored_rows, 0) as stored_rows
    from arrived
    cross join last_run
    left join stored_rows_per_customer
        on arrived.customer_id = stored_rows_per_customer.customer_id
        {%- else %}
        1 as run,
        cast(0 as bigint) as stored_rows
    from arrived
        {%- endif %}

)

select * from final
"""


def test_incremental_patterns_on_delta_match_duckdb(spark_home: Path, spark: Any, tmp_path: Path) -> None:
    project = tmp_path / "toy"
    (project / "models").mkdir(parents=True)
    shutil.copytree(ROOT / "macros", project / "macros")
    (project / "dbt_project.yml").write_text(TOY_PROJECT)
    (project / "models" / "toy_orders.sql").write_text(TOY_MODEL)
    dbt = Dbt(spark_home, project=project, spark_schema="toy")
    first = [
        ["C1", "O1", 10, "ok"],
        ["C1", "O2", 20, "ok"],
        ["C2", "O3", 30, "ok"],
        ["C3", "O4", 40, "ok"],
        ["C4", "O5", 50, "ok"],
    ]
    second = [["C1", "O6", 60, "ok"], ["C2", "O7", 70, "gone"], ["C5", "O8", 80, "ok"]]
    found: dict[str, list[tuple]] = {}
    for engine in ENGINES:
        for rows in (first, second):
            dbt(engine, "run", "--vars", json.dumps({"rows": rows}))
        if engine == "duckdb":
            with duckdb.connect(str(spark_home / "warehouse.duckdb"), read_only=True) as con:
                found[engine] = con.execute("select * from toy_orders order by order_id").fetchall()
        else:
            found[engine] = [tuple(r) for r in spark.sql("select * from toy.toy_orders order by order_id").collect()]
    # C1's two old rows replaced by its one new row; C2's new row removed by the post-hook (its old one by the
    # delete+insert); C3 erased by the pre-hook; C4 untouched; each new row saw the stored state before the run
    assert (
        found["spark"]
        == found["duckdb"]
        == [
            ("C4", "O5", 50, "ok", 1, 0),
            ("C1", "O6", 60, "ok", 2, 2),
            ("C5", "O8", 80, "ok", 2, 0),
        ]
    )
    assert spark.sql("describe detail toy.toy_orders").collect()[0]["format"] == "delta"


PORTABLE_SQL = """
with

input_rows as (

    select 'C1' as k, 'b' as v, 2 as o, cast(null as int) as n
    union all select 'C1' as k, 'a' as v, 1 as o, 5 as n
    union all select 'C1' as k, 'c' as v, 2 as o, cast(null as int) as n
    union all select 'C2' as k, 'd' as v, 1 as o, 1 as n

),

firsts as (

    {{ deduplicate('input_rows', partition_by='k', order_by='o desc, n desc nulls last, v') }}

),

trimmed as (

    select {{ star_except(['n', 'o']) }} from firsts

),

aggregated as (

    select
        k,
        {{ array_agg_ordered('v', 'o desc, n asc nulls first, v desc') }} as ordered,
        {{ array_agg_ordered('v', 'n nulls first, v', limit=2) }} as first_two,
        {{ dbt.listagg('v', "'|'", 'order by o, v desc') }} as listed
    from input_rows
    group by k

)

select
    (select cast(ordered as string) from aggregated where k = 'C1') as ordered,
    (select cast(first_two as string) from aggregated where k = 'C1') as first_two,
    (select cast({{ array_first_n('ordered', 1) }} as string) from aggregated where k = 'C1') as first_one,
    (select listed from aggregated where k = 'C1') as listed,
    (select {{ dbt.listagg("k || ':' || v", "','", 'order by k') }} from trimmed) as deduplicated,
    cast({{ empty_array() }} as string) as empty,
    {{ epoch_ms(timestamp_literal('2026-01-01 00:00:01.501500')) }} as ms,
    cast({{ epoch_ms_to_timestamp('cast(1767225601501 as bigint)') }} as string) as from_ms,
    cast({{ add_seconds(timestamp_literal('2026-01-01 00:00:01.501500'), '1.5') }} as string) as plus_seconds,
    cast({{ dbt.dateadd('hour', -90 * 24, timestamp_literal('2026-06-01 00:00:00.000001')) }} as string) as minus_hours,
    {{ regexp_full_match("'2026-11-28'", iso_timestamp_pattern()) }} as iso_matches,
    {{ regexp_full_match("'2026-11-28x'", iso_timestamp_pattern()) }} as iso_rejects,
    {{ regexp_extract_group("'ab12cd34'", '([a-z]+)([0-9]+)', 2) }} as group_two,
    {{ regexp_replace_all("'a1b22c'", '[0-9]+', '') }} as replaced,
    {{ tuple_less_than(['1', '2'], ['1', '3']) }} as tuple_less,
    {{ tuple_less_than(['2', '0'], ['1', '9']) }} as tuple_not_less,
    {{ log2('8.0') }} as log_two,
    {{ pow('2.0', '10') }} as power,
    {{ md5_hex("'abc'") }} as md5,
    {{ bind('41', 'x', 'x + 1') }} as bound,
    {{ dbt.safe_cast("'2.5'", 'bigint') }} as rounded,
    {{ dbt.safe_cast("'12.345'", 'decimal(18, 2)') }} as money,
    {{ current_timestamp_utc() }} is not null as has_now,
    cast({{ local_timestamp(timestamp_literal('2026-03-08 06:30:00'), "'America/New_York'") }} as string) as ny_before_jump,
    cast({{ local_timestamp(timestamp_literal('2026-03-08 07:30:00'), "'America/New_York'") }} as string) as ny_after_jump,
    cast({{ local_timestamp(timestamp_literal('2026-10-25 00:30:00.000001'), "'Europe/Paris'") }} as string) as paris_first,
    cast({{ local_timestamp(timestamp_literal('2026-10-25 01:30:00'), "'Europe/Paris'") }} as string) as paris_again,
    {{ sha256_hex("'x@example.com'") }} as sha256
"""

PORTABLE_EXPECTED = {
    "ordered": "[c, b, a]",
    "first_two": "[b, c]",
    "first_one": "[c]",
    "listed": "a|c|b",
    "deduplicated": "C1:b,C2:d",
    "empty": "[]",
    "ms": 1767225601501,
    "from_ms": datetime(2026, 1, 1, 0, 0, 1, 501000),
    "plus_seconds": datetime(2026, 1, 1, 0, 0, 3, 1500),
    "minus_hours": datetime(2026, 3, 3, 0, 0, 0, 1),
    "iso_matches": True,
    "iso_rejects": False,
    "group_two": "12",
    "replaced": "abc",
    "tuple_less": True,
    "tuple_not_less": False,
    "log_two": 3.0,
    "power": 1024.0,
    "md5": "900150983cd24fb0d6963f7d28e17f72",
    "bound": 42,
    "rounded": 3,
    "money": Decimal("12.35"),
    "has_now": True,
    # engagement (macros/portable/timezones.sql, hashing.sql): DST by the zone, both ways
    "ny_before_jump": datetime(2026, 3, 8, 1, 30),
    "ny_after_jump": datetime(2026, 3, 8, 3, 30),
    "paris_first": datetime(2026, 10, 25, 2, 30, 0, 1),
    "paris_again": datetime(2026, 10, 25, 2, 30),
    "sha256": "106ab2de3ae32f0e429961a20307e3a5e05d7b4dd6f25e8c2e5282de58208f00",
}


@pytest.mark.parametrize("engine", ENGINES)
def test_portable_macros_give_the_same_answers(engine: str, spark_home: Path) -> None:
    row = Dbt(spark_home).show(engine, PORTABLE_SQL)[0]
    got = dict(zip(PORTABLE_EXPECTED, row))
    for name in (
        "from_ms",
        "plus_seconds",
        "minus_hours",
        "ny_before_jump",
        "ny_after_jump",
        "paris_first",
        "paris_again",
    ):
        got[name] = datetime.fromisoformat(got[name])
    for name in ("ms", "bound", "rounded"):
        got[name] = int(got[name])
    for name in ("log_two", "power"):
        got[name] = float(got[name])
    got["money"] = Decimal(got["money"])
    assert got == PORTABLE_EXPECTED
