"""Spark warehouse costs (docs/benchmarks.md "Spark"): session start, dbt-spark's per-node overhead
(trivial models), and the driver JVM's peak memory. One fresh home and one JVM per run.

    .venv/bin/python bench/spark.py [--nodes 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROJECT = """
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
"""


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _run(home: Path, project: Path, target: str, materialized: str) -> list[float]:
    from dbt.cli.main import dbtRunner

    os.environ.update({"SENDTIME_HOME": str(home), "SENDTIME_SPARK_SCHEMA": "bench", "DO_NOT_TRACK": "1"})
    result = dbtRunner().invoke(
        [
            "run",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(ROOT),
            "--target",
            target,
            "--target-path",
            str(home / f"target-{target}"),
            "--log-path",
            str(home / "logs"),
            "--log-level",
            "none",
            "--vars",
            json.dumps({"materialized": materialized}),
        ]
    )
    assert result.success, result.exception
    return [float(r.execution_time) for r in result.result.results]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sendtime-bench-spark-")) / "home"
    home.mkdir()
    project = home.parent / "project"
    (project / "models").mkdir(parents=True)
    (project / "macros").symlink_to(ROOT / "macros")
    (project / "dbt_project.yml").write_text(PROJECT)
    for i in range(args.nodes):
        (project / "models" / f"trivial_{i}.sql").write_text(
            "{{ config(materialized=var('materialized')) }}\nselect " + str(i) + " as x\n"
        )

    from pipeline import spark_session

    started = time.perf_counter()
    spark_session.get_session(home)
    session_seconds = time.perf_counter() - started
    out: dict[str, object] = {"session_start_s": round(session_seconds, 1), "nodes": args.nodes}
    for target in ("duckdb", "spark"):
        for materialized in ("view", "table"):
            per_node: list[float] = []
            walls: list[float] = []
            for run in range(args.runs):
                started = time.perf_counter()
                times = _run(home, project, target, materialized)
                walls.append(time.perf_counter() - started)
                if run > 0:  # the first run warms the JVM and creates the schema
                    per_node += times
            out[f"{target}_{materialized}_node_median_s"] = round(statistics.median(per_node), 3)
            out[f"{target}_{materialized}_invocation_median_s"] = round(statistics.median(walls[1:]), 2)
    pid = spark_session.driver_pid()
    out["driver_jvm_peak_rss_mib"] = round(_peak_kib(pid) / 1024) if pid else None
    out["python_peak_rss_mib"] = round(_peak_kib(os.getpid()) / 1024)
    spark_session.stop()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
