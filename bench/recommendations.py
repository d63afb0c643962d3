"""Recommendation quality: hit rate@10 on each customer's held-out last purchase, against a
popularity baseline (docs/benchmarks.md, "Recommendations quality").

    .venv/bin/python bench/recommendations.py [--customers 3000] [--events 400000] [--products 300]

1. Generates data with planted preferences (`pipeline.generate`), ingests it, builds the marts.
2. Holds out each customer's last counted order: a second lake is written without that order, its
   items, and every event of that customer (stitched ones included) at or after its created_at.
3. Builds the marts on the held-out lake (a full rebuild) and counts, over the customers with a
   held-out order, how often one of its products is among their 10 recommendations, against the
   10 most popular in-stock products they never ordered (the same popularity the fallback uses).
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import duckdb

from pipeline.config import load_settings
from pipeline.generate import GENERATOR_END, generate
from pipeline.ids import new_cycle_id
from pipeline.ingest import ingest_files
from pipeline.transform import build

CLEAN = "nullif(regexp_replace({}, '^\\s+|\\s+$', '', 'g'), '')"


def held_out(settings) -> duckdb.DuckDBPyConnection:
    """An in-memory connection holding the held-out orders, their products and the events to drop."""
    con = duckdb.connect()
    con.execute(f"attach '{settings.warehouse_path}' as wh (read_only)")
    con.execute("""
        create table heldout as
        select o.order_id, o.customer_id, o.created_at
        from wh.int_orders_cdc_applied as o
        where not o.is_deleted and o.status not in ('cancelled', 'refunded') and o.customer_id is not null
            and o.customer_id in (select customer_id from wh.customer_profiles)
        qualify row_number() over (partition by o.customer_id order by o.created_at desc, o.order_id desc) = 1
    """)
    con.execute("""
        create table heldout_products as
        select distinct h.customer_id, i.product_id
        from heldout as h join wh.int_order_items_cdc_applied as i on h.order_id = i.order_id
        where not i.is_deleted and i.product_id is not null
    """)
    con.execute("""
        create table dropped_events as
        select e.event_id from wh.int_events_attributed as e join heldout as h on e.customer_id = h.customer_id
        where e.occurred_at >= h.created_at
    """)
    return con


def write_training_lake(con, source, target) -> None:
    drops = {
        "events": f"{CLEAN.format('event_id')} not in (select event_id from dropped_events)",
        "orders": f"{CLEAN.format('order_id')} not in (select order_id from heldout)",
        "order_items": f"{CLEAN.format('order_id')} is null or {CLEAN.format('order_id')} not in (select order_id from heldout)",
    }
    for path in sorted(source.lake_dir.glob("*/ingest_date=*/*.parquet")):
        table = path.parent.parent.name
        out = target.lake_dir / path.relative_to(source.lake_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        where = drops.get(table, "true")
        con.execute(f"copy (select * from read_parquet('{path}') where {where}) to '{out}' (format parquet)")


def evaluate(con, settings) -> dict[str, float]:
    con.execute(f"attach '{settings.warehouse_path}' as train (read_only)")
    con.execute("""
        create table popular as
        select r.product_id, r.popularity_score
        from train.int_products_ranked as r join train.products as p on r.product_id = p.product_id
        where p.in_stock
    """)
    row = con.execute("""
        with evaluated as (
            select h.customer_id from heldout as h
            where h.customer_id in (select customer_id from heldout_products)
                and h.customer_id in (select customer_id from train.customer_profiles)
        ),
        recommended as (
            select r.customer_id, r.product_id from train.customer_recommendations as r
            where r.customer_id in (select customer_id from evaluated)
        ),
        ordered as (
            select customer_id, product_id from train.int_product_interactions_aggregated where is_ordered
        ),
        baseline as (
            select e.customer_id, p.product_id from evaluated as e cross join popular as p
            where not exists (select 1 from ordered as o where o.customer_id = e.customer_id and o.product_id = p.product_id)
            qualify row_number() over (partition by e.customer_id order by p.popularity_score desc, p.product_id) <= 10
        ),
        hits as (
            select
                e.customer_id,
                exists (select 1 from recommended as r join heldout_products as h using (customer_id, product_id)
                        where r.customer_id = e.customer_id) as model_hit,
                exists (select 1 from baseline as b join heldout_products as h using (customer_id, product_id)
                        where b.customer_id = e.customer_id) as baseline_hit,
                (select count(*) from recommended as r where r.customer_id = e.customer_id) as recommended
            from evaluated as e
        )
        select count(*), avg(model_hit::int), avg(baseline_hit::int), avg(recommended) from hits
    """).fetchall()[0]
    return {"customers": row[0], "model": row[1], "baseline": row[2], "avg_recommended": row[3]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sendtime-bench-recommendations"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    full = load_settings(args.workdir / "home-full", environ={})
    train = load_settings(args.workdir / "home-train", environ={})
    full.home.mkdir(parents=True)
    train.home.mkdir(parents=True)

    started = time.perf_counter()
    files = generate(
        args.workdir / "data", customers=args.customers, events=args.events, products=args.products, seed=21
    )
    for source in ("products", "customers", "orders", "order_items", "events"):
        for path in files[source]:
            ingest_files(full, source, [path])
    result = build(full, as_of=GENERATOR_END, cycle_id=new_cycle_id())
    assert result.ok, result.error
    con = held_out(full)
    write_training_lake(con, full, train)
    result = build(train, as_of=GENERATOR_END, cycle_id=new_cycle_id(), full_refresh=True)
    assert result.ok, result.error
    scores = evaluate(con, train)
    seconds = time.perf_counter() - started

    print(
        f"\n{args.customers:,} customers, {args.events:,} events, {args.products:,} products "
        f"({seconds:.0f} s); {scores['customers']:,} customers with a held-out purchase, "
        f"{scores['avg_recommended']:.1f} recommendations each on average\n"
    )
    print("| recommender | hit rate@10 on the held-out last purchase |")
    print("|---|---|")
    print(f"| sendtime (associations + category fallback) | {scores['model']:.3f} |")
    print(f"| popularity baseline (10 most popular in-stock, never ordered) | {scores['baseline']:.3f} |")
    print(f"\nlift: {scores['model'] / scores['baseline']:.2f}x" if scores["baseline"] else "")


if __name__ == "__main__":
    main()
