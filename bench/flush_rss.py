"""The Kafka consumer's flush path without Kafka: RSS and DuckDB memory over many flushes
(docs/benchmarks.md "Consumer RSS over 30 minutes").

    .venv/bin/python -m bench.flush_rss [--flushes 1500] [--per-flush 2000] [--every 100]

Generated events (pipeline.generate) are cycled through `pipeline.kafka.batches.BatchWriter.write`,
the code a `sendtime consume` flush runs (prepare, the validator's DuckDB query, the lake file
written and fsynced), one buffer of `--per-flush` messages per flush, in this one process. Every
`--every` flushes it prints the process's RSS and what DuckDB's `duckdb_memory()` holds, so growth
of validation or of the writer shows here apart from librdkafka and the consume loop. The lake
files are deleted as they are written (the disk stays small); the 1,500 x 2,000 default is
3 million records, ~25 minutes of a consumer at 2,000 events a second.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from bench.consume import rss_mb
from pipeline.config import load_settings
from pipeline.generate import generate
from pipeline.kafka.batches import BatchWriter, TopicBuffer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flushes", type=int, default=1500)
    parser.add_argument("--per-flush", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100, help="print a sample every N flushes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sendtime-flush-rss-") as tmp:
        root = Path(tmp)
        files = generate(root / "generated", customers=2000, events=50_000, products=100, seed=3)
        lines = [line for path in files["events"] for line in path.read_bytes().splitlines()]
        settings = load_settings(root / "home", environ={})
        writer = BatchWriter(settings)
        start = datetime(2026, 11, 30)
        samples: list[tuple[int, float]] = []
        offset = 0
        for i in range(args.flushes):
            buf = TopicBuffer("bench.flush", "events")
            for k in range(args.per_flush):
                buf.values.append(lines[(offset + k) % len(lines)])
                buf.partitions.append(0)
                buf.offsets.append(offset + k)
            offset += args.per_flush
            writer.write(buf, f"b{i:06d}", start + timedelta(seconds=i), {})
            for path in (settings.lake_dir / "events").rglob("*.parquet"):
                path.unlink()
            if i % args.every == 0 or i == args.flushes - 1:
                con = writer.validators["events"].con
                duckdb_mb = con.sql("select coalesce(sum(memory_usage_bytes), 0) / 1e6 from duckdb_memory()").fetchone()
                samples.append((i, rss_mb(os.getpid())))
                print(f"flush {i:>5}: RSS {samples[-1][1]:.0f} MB, DuckDB {duckdb_mb[0]:.1f} MB", flush=True)
        writer.close()
    after_first = [mb for i, mb in samples if i >= args.every]
    if after_first:
        print(f"RSS after flush {args.every}: min {min(after_first):.0f} MB, max {max(after_first):.0f} MB")


if __name__ == "__main__":
    main()
