"""Reconcile of the 10M-event home's ~200,000 profiles against reading the tables once
(docs/benchmarks.md, "Reconcile").

    .venv/bin/python -m bench.reconcile [--rounds 5]

On the published home of bench/large_home.py (10,000,000 events, ~198,000 profiles, ~2,000,000
recommendation rows, 5,000 products), alternating, `--rounds` times:
- `reconcile(settings)` (pipeline/reconcile.py): every comparison, with its per-area timings;
- the baseline: every column of every row of the three served marts read from the warehouse
  (DuckDB) and of the three served tables read from the store (SQLite), once, into Python.
The store comparison (every published row, field for field by checksum) against the baseline is
the ratio of issue 14 (target: <= 2, and reconcile of 200k profiles <= 10 s). Prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench.large_home import published_home
from pipeline import store
from pipeline.mart_contract import PRODUCTS, PROFILES, RECOMMENDATIONS
from pipeline.reconcile import reconcile
from pipeline.warehouse import warehouse_for


def read_both_once(settings) -> tuple[float, int]:
    started = time.perf_counter()
    rows = 0
    with warehouse_for(settings).marts() as con:
        for mart in (PROFILES, RECOMMENDATIONS, PRODUCTS):
            rows += len(con.execute(f"select * from {mart}").fetchall())
    engine = store.engine_for(settings)
    try:
        with engine.connect() as conn:
            for table in (store.profiles, store.recommendations, store.products):
                rows += len(conn.execute(table.select()).all())
    finally:
        engine.dispose()
    return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = published_home()
    first = reconcile(settings)
    assert first.clean, first.summary()
    print(first.summary(), flush=True)
    totals, stores, lakes, bases = [], [], [], []
    for _ in range(args.rounds):
        report = reconcile(settings)
        totals.append(report.seconds)
        stores.append(report.timings["store"])
        lakes.append(report.timings.get("lake", 0.0))
        seconds, rows = read_both_once(settings)
        bases.append(seconds)
        print(
            f"reconcile {report.seconds:.2f}s {report.timings}; read once {seconds:.2f}s ({rows:,} rows); "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    med = statistics.median
    checked = first.checked
    print(
        f"\nload average {os.getloadavg()}; profiles compared {checked['store.profiles']:,}, recommendation lists "
        f"{checked['store.recommendations']:,}, products {checked['store.products']:,}, "
        f"lake events {checked.get('lake.events', 0):,}"
    )
    print("\n| measure | reconcile | baseline: read both once | ratio | target |")
    print("|---|---|---|---|---|")
    print(
        f"| warehouse vs store, every published row (median of {args.rounds}) | {med(stores):.2f} s "
        f"({min(stores):.2f}-{max(stores):.2f}) | {med(bases):.2f} s ({min(bases):.2f}-{max(bases):.2f}) "
        f"| {med(stores) / med(bases):.2f} | <= 2, <= 10 s |"
    )
    print(f"| whole reconcile (lake of 10M events, warehouse, store) | {med(totals):.2f} s | - | - | - |")
    print(f"| of which lake vs warehouse | {med(lakes):.2f} s | - | - | - |")


if __name__ == "__main__":
    main()
