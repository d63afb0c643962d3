"""The whole pipeline on Spark against DuckDB (DESIGN.md "Warehouses"; docs/models.md "Spark").

The same generated data (events with stitching and late events, CDC with ties and deletes, the
catalog) lands in two homes; `sendtime run` (the real CLI, one process and one JVM per cycle) builds,
validates and publishes it with `warehouse = "duckdb"` in one and `SENDTIME_WAREHOUSE=spark` in the
other, a cycle after each of two batches. What the API serves (the online store's bodies) must be the
same on both engines after each cycle, row for row and field for field (floats within 1e-9).

Incremental equals a full rebuild on Spark, in two Spark cycles (each costs minutes: Spark pays
seconds per dbt node): Spark's first cycle builds every model from the lake without
`is_incremental()` (the SQL of `--full-refresh`) and equals DuckDB's; its second, incremental one
equals DuckDB's second; and DuckDB's incremental state equals its own `--full-refresh` (checked here
too, and at length in tests/test_dbt_incremental.py). An explicit Spark `--full-refresh` after the
cycles costs ~10 more minutes here (docs/benchmarks.md "Spark" has a run of it).

Spark missing (pyspark, Java, the Delta jars) fails the test with the reason: CI installs all of it
(`./run test`). Tiny data, local[2], 2 shuffle partitions, no UI (the spark target's settings): the
time is Spark's per-statement cost (docs/benchmarks.md "Spark").
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import load_settings
from pipeline.generate import generate
from pipeline.ingest import ingest_files
from tests.helpers.warehouses import spark_ready

SENDTIME = str(Path(sys.executable).with_name("sendtime"))
AS_OF = [datetime(2026, 11, 26, 0, 0, 0), datetime(2026, 11, 26, 1, 0, 0)]
# two batches: the second brings CRM updates and deletes, more orders, a catalog change, late events
BATCHES = [
    [
        ("products", 0),
        ("events", 0),
        ("customers", 0),
        ("orders", 0),
        ("order_items", 0),
        ("events", 1),
    ],
    [("products", 1), ("customers", 1), ("orders", 1), ("events", 2)],
]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    files = generate(tmp_path_factory.mktemp("generated"), customers=40, events=900, products=30, seed=17)
    for source, index in (item for batch in BATCHES for item in batch):
        assert len(files[source]) > index, (source, files[source])
    return files


def _run(home: Path, warehouse: str, *args: str) -> dict[str, Any]:
    """`sendtime ARGS --json` on a home with a warehouse; the parsed answer."""
    env = {
        **os.environ,
        "SENDTIME_HOME": str(home),
        "SENDTIME_WAREHOUSE": warehouse,
        # every cycle refreshes the item associations, so an incremental state equals a full rebuild's
        # exactly, recommendations included (DESIGN.md: between refreshes only touched customers move)
        "SENDTIME_RECOMMENDATIONS_REFRESH_EVERY": "1s",
    }
    done = subprocess.run(
        [SENDTIME, *args, "--json"], env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    assert done.returncode == 0, (args, done.returncode, done.stdout[-2000:], done.stderr[-4000:])
    return json.loads(done.stdout)


def _cycle(home: Path, warehouse: str, as_of: datetime, *more: str) -> dict[str, Any]:
    answer = _run(home, warehouse, "run", "--as-of", as_of.isoformat() + "Z", *more)
    assert answer["status"] == "success", answer
    return answer


def _ingest(home: Path, generated: dict[str, list[Path]], batch: int) -> None:
    settings = load_settings(home, environ={})
    for source, index in BATCHES[batch]:
        report = ingest_files(settings, source, [generated[source][index]])
        assert report.accepted > 0, (source, index)


def _served(home: Path) -> dict[str, dict[str, Any]]:
    """What the API serves: the online store's bodies, parsed."""
    con = sqlite3.connect(home / "online.sqlite")
    try:
        return {
            table: {key: json.loads(body) for key, body in con.execute(f"select {key_column}, body from {table}")}
            for table, key_column in (
                ("profiles", "customer_id"),
                ("recommendations", "customer_id"),
                ("products", "product_id"),
            )
        }
    finally:
        con.close()


def _differences(left: Any, right: Any, path: str = "") -> list[str]:
    """Where two served values differ: floats within 1e-9, everything else exactly."""
    if isinstance(left, float) or isinstance(right, float):
        if not (
            isinstance(left, (int, float))
            and isinstance(right, (int, float))
            and math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-9)
        ):
            return [f"{path}: {left!r} != {right!r}"]
        return []
    if isinstance(left, dict) and isinstance(right, dict):
        if left.keys() != right.keys():
            return [f"{path}: keys {sorted(left.keys() ^ right.keys())} differ"]
        return [d for key in left for d in _differences(left[key], right[key], f"{path}.{key}")]
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [d for i, (a, b) in enumerate(zip(left, right)) for d in _differences(a, b, f"{path}[{i}]")]
    return [] if left == right else [f"{path}: {left!r} != {right!r}"]


def test_spark_serves_what_duckdb_serves_and_its_cycles_equal_a_full_refresh(
    tmp_path: Path, generated: dict[str, list[Path]]
) -> None:
    spark_ready()
    homes = {"duckdb": tmp_path / "duckdb", "spark": tmp_path / "spark"}
    for batch, as_of in enumerate(AS_OF):
        for warehouse, home in homes.items():
            _ingest(home, generated, batch)
            _cycle(home, warehouse, as_of)
        duckdb_served, spark_served = _served(homes["duckdb"]), _served(homes["spark"])
        assert len(duckdb_served["profiles"]) >= 30
        assert any(body for body in duckdb_served["recommendations"].values())
        assert _differences(duckdb_served, spark_served) == [], f"after batch {batch + 1}"

    # the Spark home's run log, as on DuckDB
    runs = _run(homes["spark"], "spark", "runs")["runs"]
    assert [r["status"] for r in runs[:2]] == ["success", "success"]
    assert runs[0]["rows_changed"] > 0 and runs[0]["rows_published"] > 0

    # DuckDB's incremental state is its full rebuild's, so Spark's incremental state is one too
    _cycle(homes["duckdb"], "duckdb", AS_OF[-1], "--full-refresh")
    assert _differences(_served(homes["duckdb"]), spark_served) == []
