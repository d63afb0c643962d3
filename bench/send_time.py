"""Send-time quality: does best_send_hour predict when each customer engages next? (docs/benchmarks.md,
"Send-time quality"; issue 15).

    .venv/bin/python -m bench.send_time [--customers 3000] [--events 400000] [--seed 15] [--json]

1. Generates data with planted per-customer local hours (`pipeline.generate`: strong, weak, no and
   no email habits), ingests it and builds the marts.
2. Holds out each customer's last 20% of opens and clicks (at least one: ceil(20%)), by occurred_at,
   customers as the warehouse attributes them (email hashes resolved): a second lake is written
   without those events, and the marts are rebuilt on it (a full rebuild).
3. Scores the share of held-out engagements whose local hour (in the customer's timezone, UTC when
   unknown, daylight saving by the zone) is within one hour (circularly: 23 and 0 are neighbours)
   of the prediction, for best_send_hour and two baselines side by side:
   - global hour: the single most common local hour of every customer's training opens and clicks;
   - recent hour: the customer's own most recent training engagement's local hour (the global hour
     for a customer with none);
   by the customer's training history size (0, 1-5, 6+ opens and clicks). Target: >= 1.5x the
   global hour and above the recent hour.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipeline.config import load_settings
from pipeline.generate import GENERATOR_END, generate
from pipeline.ids import new_cycle_id
from pipeline.ingest import ingest_files
from pipeline.send_time import zone_of
from pipeline.transform import build

HELD_OUT_SHARE = 0.2
BUCKETS = (("0", 0, 0), ("1-5", 1, 5), ("6+", 6, 10**9))
ENGAGEMENTS = "('email_open', 'email_click')"
CLEAN_ID = "nullif(regexp_replace(event_id, '^\\s+|\\s+$', '', 'g'), '')"


@dataclass
class Score:
    customers: int = 0
    held_out: int = 0
    hits: dict[str, int] = field(default_factory=lambda: {"best_send_hour": 0, "global_hour": 0, "recent_hour": 0})

    def rate(self, name: str) -> float:
        return self.hits[name] / self.held_out if self.held_out else float("nan")


def within_an_hour(a: int, b: int) -> bool:
    return (a - b) % 24 in (0, 1, 23)


def local_hour(at: datetime, zone_name: str | None) -> int:
    _, zone = zone_of(zone_name)
    return at.replace(tzinfo=UTC).astimezone(zone).hour


def hold_out(settings) -> tuple[dict[str, list[tuple[datetime, str]]], set[str]]:
    """customer -> their opens and clicks in time order; the event ids of the held-out last 20%."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        rows = con.execute(f"""
            select e.customer_id, e.occurred_at, e.event_id from int_events_attributed as e
            where e.event_type in {ENGAGEMENTS}
                and e.customer_id in (select customer_id from customer_profiles)
            order by e.customer_id, e.occurred_at, e.event_id
        """).fetchall()
    by_customer: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for customer_id, occurred_at, event_id in rows:
        by_customer[customer_id].append((occurred_at, event_id))
    held: set[str] = set()
    for events in by_customer.values():
        count = math.ceil(HELD_OUT_SHARE * len(events))
        held.update(event_id for _, event_id in events[len(events) - count :])
    return by_customer, held


def write_training_lake(source, target, held: set[str]) -> None:
    """The lake without the held-out events (every copy of their ids); other tables as they are."""
    con = duckdb.connect()
    con.execute("create table held (event_id varchar primary key)")
    con.executemany("insert into held values (?)", [(e,) for e in sorted(held)])
    for path in sorted(source.lake_dir.glob("*/ingest_date=*/*.parquet")):
        out = target.lake_dir / path.relative_to(source.lake_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        where = (
            f"{CLEAN_ID} is null or {CLEAN_ID} not in (select event_id from held)"
            if path.parent.parent.name == "events"
            else "true"
        )
        con.execute(f"copy (select * from read_parquet('{path}') where {where}) to '{out}' (format parquet)")
    con.close()


def evaluate(settings, by_customer: dict[str, list[tuple[datetime, str]]], held: set[str]) -> dict[str, Score]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        profiles = {
            cid: (tz, hour)
            for cid, tz, hour in con.execute(
                "select customer_id, timezone, best_send_hour from customer_profiles"
            ).fetchall()
        }
    training: dict[str, list[int]] = {}  # customer -> local hours of their training engagements, in time order
    testing: dict[str, list[int]] = {}
    for customer_id, events in by_customer.items():
        if customer_id not in profiles:
            continue
        zone = profiles[customer_id][0]
        training[customer_id] = [local_hour(at, zone) for at, event_id in events if event_id not in held]
        testing[customer_id] = [local_hour(at, zone) for at, event_id in events if event_id in held]
    everyone = Counter(hour for hours in training.values() for hour in hours)
    global_hour = min(everyone, key=lambda h: (-everyone[h], h)) if everyone else 0
    scores = {name: Score() for name, _, _ in [("all", 0, 0), *BUCKETS]}
    for customer_id, hours in testing.items():
        if not hours:
            continue
        history = len(training[customer_id])
        predictions = {
            "best_send_hour": profiles[customer_id][1],
            "global_hour": global_hour,
            "recent_hour": training[customer_id][-1] if history else global_hour,
        }
        bucket = next(name for name, low, high in BUCKETS if low <= history <= high)
        for name in ("all", bucket):
            score = scores[name]
            score.customers += 1
            score.held_out += len(hours)
            for predictor, predicted in predictions.items():
                score.hits[predictor] += sum(within_an_hour(hour, predicted) for hour in hours)
    scores["all"].hits["global_hour_value"] = global_hour
    return scores


def table(scores: dict[str, Score]) -> str:
    lines = [
        (
            "| history (training opens + clicks) | customers | held-out engagements | best_send_hour | "
            "global hour | recent hour | best / global | best / recent |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in (*[b[0] for b in BUCKETS], "all"):
        s = scores[name]
        best, glob, recent = (s.rate(k) for k in ("best_send_hour", "global_hour", "recent_hour"))
        lines.append(
            f"| {name} | {s.customers:,} | {s.held_out:,} | {best:.3f} | {glob:.3f} | {recent:.3f} | "
            f"{best / glob:.2f}x | {best / recent:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sendtime-bench-send-time"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    full = load_settings(args.workdir / "home-full", environ={})
    train = load_settings(args.workdir / "home-train", environ={})
    full.home.mkdir(parents=True)
    train.home.mkdir(parents=True)

    started = time.perf_counter()
    files = generate(
        args.workdir / "data", customers=args.customers, events=args.events, products=args.products, seed=args.seed
    )
    for source in ("products", "customers", "orders", "order_items", "events"):
        ingest_files(full, source, files[source])
    result = build(full, as_of=GENERATOR_END, cycle_id=new_cycle_id())
    assert result.ok, result.error
    by_customer, held = hold_out(full)
    write_training_lake(full, train, held)
    result = build(train, as_of=GENERATOR_END, cycle_id=new_cycle_id(), full_refresh=True)
    assert result.ok, result.error
    scores = evaluate(train, by_customer, held)
    seconds = time.perf_counter() - started

    if args.json:
        print(json.dumps({name: asdict(score) for name, score in scores.items()}, indent=2))
        return
    glob = scores["all"].hits["global_hour_value"]
    print(
        f"\n{args.customers:,} customers, {args.events:,} events, seed {args.seed} ({seconds:.0f} s); "
        f"{len(held):,} held-out opens and clicks; global hour {glob}:00 local\n"
    )
    print(table(scores))


if __name__ == "__main__":
    main()
