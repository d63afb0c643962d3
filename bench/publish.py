"""Publish of 100,000 changed profiles to SQLite and PostgreSQL, against a bare baseline.

    .venv/bin/python bench/publish.py [--profiles 100000] [--no-postgres] [--out bench/out/publish.json]

The warehouse is a real DuckDB file with the marts of docs/architecture.md, written in SQL. Publish
= serialize every body once (+ etag, email hash) and upsert profiles, recommendations and products
in one transaction (`pipeline.publish.publish`). Baseline, side by side on the same store: a bare
driver executemany of the same already-serialized profile and recommendation rows into empty
tables (plain INSERT: no upsert, no serialization, no version row). Also: a second publish where every row conflicts (the update path), and the
cost of reading the changes (bodies built by DuckDB) and of validating them (GX), for context.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import duckdb
from sqlalchemy import Column, Integer, MetaData, String, Table, Text

from pipeline import publish, store
from pipeline.mart_contract import SERVED_MARTS
from tests.helpers.api_server import project_contracts

AS_OF = datetime(2026, 11, 1, 12, 0, 0)


def build_warehouse(path: Path, n: int, cycle_id: str) -> None:
    """The served marts as their contract declares them (dbt creates the same tables), filled."""
    con = duckdb.connect(str(path))
    contracts = project_contracts()
    for name in SERVED_MARTS:
        columns = ", ".join(f"{c.name} {c.data_type}" for c in contracts[name].columns)
        con.execute(f"create or replace table {name} ({columns})")
    con.execute(f"""
        insert into customer_profiles (
            customer_id, email, first_name, last_name, country, locale, timezone, marketing_consent,
            first_seen_at, last_seen_at, orders_count, lifetime_value, last_order_at, lifecycle_stage,
            recently_viewed, cart, top_categories, recommendations, _cycle_id,
            email_status, email_opens_30d, email_clicks_30d, best_send_hour, best_send_hour_confidence
        )
        select 'c' || i, 'user' || i || '@example.com', 'First' || i, 'Last' || i, 'US', 'en-US', 'America/New_York',
               i % 2 = 0, timestamp '2026-09-01 00:00:00' + to_seconds(i % 86400),
               timestamp '2026-10-30 00:00:00' + to_microseconds(i % 999999),
               case when i % 3 = 0 then 0 else 1 + i % 7 end,
               case when i % 3 = 0 then 0 else ((i % 50000) / 100.0) end::decimal(18,2),
               case when i % 3 = 0 then null else timestamp '2026-10-20 00:00:00' end,
               case when i % 3 = 0 then 'prospect' else 'active' end,
               ['P' || (i % 300), 'P' || ((i + 1) % 300), 'P' || ((i + 2) % 300)],
               case when i % 3 = 0 then [] else ['P' || ((i + 3) % 300)] end,
               ['shoes', 'bags'],
               ['P' || ((i + 10) % 300), 'P' || ((i + 11) % 300), 'P' || ((i + 12) % 300), 'P' || ((i + 13) % 300)],
               '{cycle_id}', 'subscribed', i % 4, i % 2, 6 + i % 12, 0.5
        from range({n}) t(i)
    """)
    con.execute(f"""
        insert into customer_recommendations
        select 'c' || i, r, 'P' || ((i + 9 + r) % 300), 1.0 / r, 'association', '{cycle_id}'
        from range({n}) t(i), range(1, 5) s(r)
    """)
    con.execute(f"""
        insert into products
        select 'P' || i, 'Product ' || i, 'cat' || (i % 12), (i % 90 + 0.5)::decimal(18,2), 'USD',
               'https://shop.example/p/' || i, 'https://shop.example/i/' || i || '.jpg', true, '{cycle_id}'
        from range(300) t(i)
    """)
    con.close()


def baseline(engine, profile_rows: list[dict], rec_rows: list[dict]) -> float:
    """The floor: the same serialized profile and recommendation rows, plain INSERT into empty
    tables through the driver's executemany, one transaction (no upsert, no serialization)."""
    meta = MetaData()
    suffix = secrets.token_hex(3)
    profiles = Table(
        "bench_profiles_" + suffix,
        meta,
        Column("customer_id", String(255), primary_key=True),
        Column("email_hash", String(64)),
        Column("body", Text),
        Column("etag", String(64)),
        Column("cycle_id", String(64)),
        Column("version", Integer),
    )
    recs = Table(
        "bench_recs_" + suffix,
        meta,
        Column("customer_id", String(255), primary_key=True),
        Column("body", Text),
        Column("cycle_id", String(64)),
    )
    meta.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        for table, rows in ((profiles, profile_rows), (recs, rec_rows)):
            compiled = table.insert().compile(dialect=conn.dialect, column_keys=list(rows[0]))
            if compiled.positional:
                conn.exec_driver_sql(str(compiled), [tuple(r[k] for k in compiled.positiontup) for r in rows])
            else:
                conn.exec_driver_sql(str(compiled), rows)
    seconds = time.perf_counter() - started
    meta.drop_all(engine)
    return seconds


def measure(url: str, warehouse: Path, n: int) -> dict:
    engine = store.make_engine(url)
    store.migrate(engine)
    started = time.perf_counter()
    changes = publish.read_changes(warehouse, None, AS_OF)
    read_seconds = time.perf_counter() - started
    assert len(changes.profile_bodies) == n
    from pipeline.validate import validate_changes

    started = time.perf_counter()
    first_report = validate_changes(changes, AS_OF)  # includes GX's one-time import and context
    validate_first = time.perf_counter() - started
    started = time.perf_counter()
    assert validate_changes(changes, AS_OF).success and first_report.success
    validate_warm = time.perf_counter() - started

    started = time.perf_counter()
    first = publish.publish(engine, changes, cycle_id="c1", as_of=AS_OF, newest_ingested_at=None)
    insert_seconds = time.perf_counter() - started
    started = time.perf_counter()
    second = publish.publish(engine, changes, cycle_id="c2", as_of=AS_OF, newest_ingested_at=None)
    update_seconds = time.perf_counter() - started
    assert first.profiles_upserted == second.profiles_upserted == n

    rows = publish.profile_rows(changes.profile_bodies, "c0", 0)
    rec_rows = [{"customer_id": cid, "body": body, "cycle_id": "c0"} for cid, body in changes.recommendation_bodies]
    base = baseline(engine, rows, rec_rows)
    engine.dispose()
    return {
        "read_changes_s": round(read_seconds, 3),
        "validate_first_s": round(validate_first, 3),
        "validate_warm_s": round(validate_warm, 3),
        "publish_new_s": round(insert_seconds, 3),
        "publish_new_serialize_s": round(first.serialize_seconds, 3),
        "publish_new_write_s": round(first.write_seconds, 3),
        "publish_update_s": round(update_seconds, 3),
        "baseline_bare_executemany_s": round(base, 3),
        "ratio_publish_new_vs_baseline": round(insert_seconds / base, 2),
        "ratio_publish_update_vs_baseline": round(update_seconds / base, 2),
        "recommendations_rows": first.recommendations_upserted,
    }


def postgres_url() -> str:
    subprocess.run(["pg_ctlcluster", "15", "main", "start"], capture_output=True)
    for _ in range(60):
        if subprocess.run(["pg_isready", "-h", "127.0.0.1"], capture_output=True).returncode == 0:
            break
        time.sleep(0.5)
    name, password = "sendtime_bench_" + secrets.token_hex(3), secrets.token_hex(8)
    for sql in (f"CREATE ROLE {name} LOGIN PASSWORD '{password}'", f"CREATE DATABASE {name} OWNER {name}"):
        subprocess.run(["su", "postgres", "-c", f'psql -q -c "{sql}"'], check=True, capture_output=True)
    return f"postgresql+psycopg://{name}:{password}@127.0.0.1:5432/{name}"


def drop_postgres(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"DROP ROLE IF EXISTS {name}"):
        subprocess.run(["su", "postgres", "-c", f'psql -q -c "{sql}"'], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the JSON here (bench/plots.py reads bench/out/)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Path(tmp) / "warehouse.duckdb"
        build_warehouse(warehouse, args.profiles, "20261101T000000000000Z-00000001")
        out = {"profiles": args.profiles, "sqlite": measure(f"sqlite:///{tmp}/online.sqlite", warehouse, args.profiles)}
        if not args.no_postgres:
            url = postgres_url()
            try:
                out["postgresql"] = measure(url, warehouse, args.profiles)
            finally:
                drop_postgres(url)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
