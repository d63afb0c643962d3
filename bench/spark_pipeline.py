"""The whole pipeline on Spark local[2] against DuckDB, side by side (docs/benchmarks.md "Spark").

    .venv/bin/python -m bench.spark_pipeline [--customers 300] [--events 20000] [--cycle-events 1000]

One generated lake ingested into two homes; per engine, in this one process: the full build (the
first cycle: every seed and model), then a cycle after a small batch of new events. The Spark
session starts once (its start is measured on its own, before the Spark builds); the driver JVM's
peak RSS is read from /proc at the end. The machine's load (`uptime`) is printed before and after:
the machine is shared, so compare the ratios of runs made side by side, not absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.config import load_settings
from pipeline.generate import generate
from pipeline.ingest import ingest_files

AS_OF = [datetime(2026, 11, 26, 0, 0, 0), datetime(2026, 11, 26, 1, 0, 0)]
ORDER = ("products", "customers", "orders", "order_items", "events")


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def _ingest(home: Path, files: dict[str, list[Path]], sources: tuple[str, ...] = ORDER) -> None:
    settings = load_settings(home, environ={})
    for source in sources:
        if files.get(source):
            ingest_files(settings, source, files[source])


def _cycle(home: Path, warehouse: str, as_of: datetime) -> dict[str, Any]:
    from pipeline.cycle import run_cycle

    settings = load_settings(home, environ={"SENDTIME_WAREHOUSE": warehouse})
    started = time.perf_counter()
    result = run_cycle(settings, as_of=as_of)
    seconds = time.perf_counter() - started
    assert result.ok, result.error
    transform = result.transform or {}
    return {
        "seconds": round(seconds, 1),
        "transform_s": round(result.phases.get("transform", 0.0), 1),
        "read_s": round(result.phases.get("read", 0.0), 1),
        "nodes": transform.get("nodes"),  # how many dbt nodes the cycle built
        "rows_published": result.rows_published,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--cycle-events", type=int, default=1_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sendtime-bench-spark-pipeline-"))
    lake = generate(root / "lake-files", customers=args.customers, events=args.events, products=100, seed=5)
    batch = generate(root / "batch-files", customers=args.customers, events=args.cycle_events, products=100, seed=6)
    homes = {engine: root / engine for engine in ("duckdb", "spark")}
    for home in homes.values():
        _ingest(home, lake)
    out: dict[str, Any] = {"events": args.events, "cycle_events": args.cycle_events, "load_before": _load()}

    from pipeline import spark_session
    from pipeline.spark_warehouse import SparkWarehouse

    started = time.perf_counter()
    SparkWarehouse(load_settings(homes["spark"], environ={"SENDTIME_WAREHOUSE": "spark"})).session()
    out["spark_session_start_s"] = round(time.perf_counter() - started, 1)

    for step, as_of in (("full_build", AS_OF[0]), ("cycle", AS_OF[1])):
        if step == "cycle":
            for home in homes.values():
                _ingest(home, batch, ("events",))
        for engine, home in homes.items():
            out[f"{engine}_{step}"] = _cycle(home, engine, as_of)
        out[f"{step}_ratio_spark_over_duckdb"] = round(
            out[f"spark_{step}"]["seconds"] / max(out[f"duckdb_{step}"]["seconds"], 0.001), 1
        )
    pid = spark_session.driver_pid()
    out["driver_jvm_peak_rss_mib"] = round(_peak_kib(pid) / 1024) if pid else None
    out["python_peak_rss_mib"] = round(_peak_kib(os.getpid()) / 1024)
    out["load_after"] = _load()
    spark_session.stop()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
