"""The warehouse engines a test world runs on (DESIGN.md "Warehouses"): DuckDB, the embedded default,
and Spark. A world parametrized with WAREHOUSES runs every test of its module once per engine, through
the same CLI and API, with the same expected answers.

WAREHOUSES comes from SENDTIME_TEST_WAREHOUSES (comma-separated, default `duckdb`): the acceptance
worlds on Spark cost 5-10 minutes a cycle on this 2-core machine (JVM start and seconds per dbt node,
docs/benchmarks.md "Spark"), ~1 hour for both worlds, which the suite's 45-minute budget cannot
hold. CI runs Spark through tests/test_spark.py and tests/test_spark_engine.py (the cross-engine and
incremental tests); `SENDTIME_TEST_WAREHOUSES=duckdb,spark ./run test tests/test_acceptance.py
tests/test_acceptance_cdc.py` runs the worlds on both engines (docs/spark.md "Tests")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import get_args

import pytest

from pipeline.config import Settings

ENGINES = get_args(Settings.model_fields["warehouse"].annotation)  # the `warehouse` setting's values
WAREHOUSES = tuple(w.strip() for w in os.environ.get("SENDTIME_TEST_WAREHOUSES", "duckdb").split(",") if w.strip())
if not WAREHOUSES or set(WAREHOUSES) - set(ENGINES):
    raise ValueError(f"SENDTIME_TEST_WAREHOUSES={os.environ.get('SENDTIME_TEST_WAREHOUSES')!r}: a list of {ENGINES}")
# a Spark `sendtime run` starts a JVM and pays seconds per dbt node (docs/benchmarks.md "Spark")
CLI_TIMEOUT = {"duckdb": 600.0, "spark": 1800.0}


def spark_ready() -> None:
    """Fail (never skip) when Spark cannot run, with the reason: CI installs all of it (`./run test`)."""
    from pipeline import spark_session

    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"pyspark is not installed ({exc}): pip install -e '.[spark]' (./run test does)")
    jars = Path(os.environ.get("SENDTIME_SPARK_JARS_DIR", Path.home() / ".cache/sendtime/jars/spark"))
    if not list(jars.glob("delta-spark_*.jar")):
        pytest.fail(f"the Delta Lake jars are missing in {jars}: run {spark_session.FETCH_JARS}")


def warehouse_env(warehouse: str) -> dict[str, str]:
    """The environment that selects `warehouse` for the CLI (checked ready first)."""
    if warehouse == "spark":
        spark_ready()
    return {"SENDTIME_WAREHOUSE": warehouse}
