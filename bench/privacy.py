"""What privacy costs (docs/benchmarks.md, "Privacy"), each against a baseline run side by side.

    .venv/bin/python -m bench.privacy [--events 10000000] [--enc-events 1000000] [--new 10000]
                                      [--workdir DIR] [--reuse] [--skip-erasure] [--skip-encryption]

1. Erasure on a lake of --events events (pipeline.generate, seed 3, ingested through the real
   ingest; bench/pipeline.py's large lake): the first cycle indexes the whole lake once (reported);
   then, alternating, cycles after a file of --new fresh events (the baseline) and cycles that
   also erase one customer: a heavy one (events in every lake file) and a light one (a customer
   who appears in one small recent batch only). Reported: cycle seconds, the erase phase, files
   read and rewritten, records erased and moved; ratio erasure cycle / baseline cycle.
2. Encryption at rest: the same --enc-events events ingested into a plaintext home and an
   encrypted one (alternating, median of 3 ingests of the same file), then cycles after the same
   --new events files in both (alternating, median of 3). Ratios encrypted / plaintext.
Prints Markdown rows for docs/benchmarks.md, with the machine's load (`uptime`) before and after.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from bench.cycles import AS_OF, _customers_for, _products_for, fresh_events, prepare
from pipeline import erasure
from pipeline.config import load_settings
from pipeline.cycle import run_cycle
from pipeline.generate import generate
from pipeline.ingest import ingest_files


def uptime() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def cycle(settings) -> dict:
    result = run_cycle(settings, as_of=AS_OF)
    assert result.ok, result.error
    return {
        "seconds": result.seconds,
        "erase": result.phases.get("erase", 0.0),
        "erasure": result.erasure or {},
        "transform": result.phases.get("transform", 0.0),
    }


def heavy_customer(settings) -> str:
    import duckdb

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(
            "select customer_id from int_events_attributed where customer_id is not null "
            "group by 1 order by count(*) desc limit 1"
        ).fetchall()[0][0]


def light_file(workdir: Path, tag: str) -> tuple[Path, str]:
    """A small batch whose events all belong to one customer nobody else's file mentions."""
    customer = f"light-{tag}"
    path = workdir / f"light-{tag}.jsonl"
    with open(path, "w") as fh:
        fh.writelines(
            json.dumps(
                {
                    "event_id": f"{tag}-light-{i}",
                    "event_type": "product_view",
                    "occurred_at": f"2026-11-2{i % 5}T10:00:{i % 60:02d}Z",
                    "customer_id": customer,
                    "anonymous_id": f"{customer}-device",
                    "product_id": "P00001",
                }
            )
            + "\n"
            for i in range(50)
        )
    return path, customer


def erasure_bench(args) -> list[str]:
    settings = prepare(args.workdir, args.events, "large", args.reuse)
    started = time.perf_counter()
    first = cycle(settings)
    print(
        f"first cycle after the build (indexes the whole lake): {first['erase']:.1f}s of {first['seconds']:.1f}s "
        f"({first['erasure'].get('indexed_files', 'n/a')} files)",
        flush=True,
    )
    first_total = time.perf_counter() - started
    stamp = str(int(time.time()))
    rows = []
    base, heavy, light = [], [], []
    for i in range(3):
        new = fresh_events(
            args.workdir, args.new, f"p{stamp}-{i}", customers=_customers_for(100_000), products=_products_for(100_000)
        )
        ingest_files(settings, "events", [new])
        base.append(cycle(settings))
        # a light customer: present in one small batch only
        path, customer = light_file(args.workdir, f"{stamp}{i}")
        ingest_files(settings, "events", [path])
        cycle(settings)
        new = fresh_events(
            args.workdir, args.new, f"q{stamp}-{i}", customers=_customers_for(100_000), products=_products_for(100_000)
        )
        ingest_files(settings, "events", [new])
        erasure.request_forget(settings, [customer])
        light.append(cycle(settings))
    new = fresh_events(
        args.workdir, args.new, f"h{stamp}", customers=_customers_for(100_000), products=_products_for(100_000)
    )
    ingest_files(settings, "events", [new])
    erasure.request_forget(settings, [heavy_customer(settings)])
    heavy.append(cycle(settings))
    median = statistics.median(r["seconds"] for r in base)
    for label, runs in (("light (one file)", light), ("heavy (every file)", heavy)):
        seconds = statistics.median(r["seconds"] for r in runs)
        erase = statistics.median(r["erase"] for r in runs)
        info = runs[len(runs) // 2]["erasure"]
        print(
            f"{label}: {[round(r['seconds'], 2) for r in runs]} erase {[round(r['erase'], 2) for r in runs]} {info}",
            flush=True,
        )
        rows.append(
            f"| cycle with {args.new:,} new events + erasing one {label} customer, lake of {args.events:,} "
            f"| {seconds:.2f} s (erase phase {erase:.2f} s; {info.get('files_read')} files read, "
            f"{info.get('files_rewritten')} rewritten, {info.get('records_erased')} records erased, "
            f"{info.get('records_moved')} moved) | {median:.2f} s | {seconds / median:.2f} |"
        )
    rows.append(
        f"| first cycle of an existing lake of {args.events:,} (indexes every file once) "
        f"| {first['erase']:.1f} s index of {first_total:.1f} s | - | - |"
    )
    return rows


def _key(path: Path) -> Path:
    path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    path.chmod(0o600)
    return path


def encryption_bench(args) -> list[str]:
    root = args.workdir / "encryption"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    key = _key(root / "sendtime.key")
    homes = {
        "plain": load_settings(root / "plain", environ={}),
        "encrypted": load_settings(root / "encrypted", environ={"SENDTIME_ENCRYPTION_KEY_FILE": str(key)}),
    }
    files = generate(
        root / "data",
        customers=_customers_for(args.enc_events),
        events=args.enc_events,
        products=_products_for(args.enc_events),
        seed=3,
    )
    for settings in homes.values():
        for source in ("products", "customers", "orders", "order_items"):
            for path in files[source]:
                ingest_files(settings, source, [path])
    events = files["events"][0]
    ingest_times: dict[str, list[float]] = {label: [] for label in homes}
    for _round in range(3):  # the same file three times: duplicates downstream, the same work at ingest
        for label, settings in homes.items():
            started = time.process_time()
            report = ingest_files(settings, "events", [events])
            ingest_times[label].append(time.process_time() - started)
            records = report.received
    for settings in homes.values():
        for path in files["events"][1:]:
            ingest_files(settings, "events", [path])
        assert run_cycle(settings, as_of=AS_OF).ok
    cycle_times: dict[str, list[float]] = {label: [] for label in homes}
    stamp = str(int(time.time()))
    for i in range(3):
        new = fresh_events(
            root,
            args.new,
            f"e{stamp}-{i}",
            customers=_customers_for(args.enc_events),
            products=_products_for(args.enc_events),
        )
        for label, settings in homes.items():
            ingest_files(settings, "events", [new])
            cycle_times[label].append(cycle(settings)["seconds"])
    print(f"ingest CPU s: {ingest_times}\ncycles s: {cycle_times}", flush=True)
    ingest = {label: statistics.median(t) for label, t in ingest_times.items()}
    cycles = {label: statistics.median(t) for label, t in cycle_times.items()}
    return [
        f"| ingest of a {records:,}-record JSONL file (CPU s, median of 3) | {ingest['encrypted']:.2f} s "
        f"({records / ingest['encrypted']:,.0f} records/CPU-s) | {ingest['plain']:.2f} s "
        f"({records / ingest['plain']:,.0f}) | {ingest['encrypted'] / ingest['plain']:.2f} |",
        f"| cycle with {args.new:,} new events, lake of {args.enc_events:,} (median of 3) | {cycles['encrypted']:.2f} s "
        f"| {cycles['plain']:.2f} s | {cycles['encrypted'] / cycles['plain']:.2f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--enc-events", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sendtime-bench-privacy"))
    parser.add_argument("--reuse", action="store_true", help="keep the lake of an earlier run")
    parser.add_argument("--skip-erasure", action="store_true")
    parser.add_argument("--skip-encryption", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SENDTIME_HOME", str(args.workdir))
    print("load before:", uptime(), flush=True)
    rows = ["| measure | measured | baseline | ratio |", "|---|---|---|---|"]
    if not args.skip_erasure:
        rows += erasure_bench(args)
    if not args.skip_encryption:
        rows += encryption_bench(args)
    print("load after:", uptime())
    print("\n".join(rows))


if __name__ == "__main__":
    main()
