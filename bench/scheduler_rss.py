"""Peak RSS of `sendtime schedule` over many cycles: it must stay flat (no growth per cycle).

    .venv/bin/python bench/scheduler_rss.py [--cycles 100] [--every 1s] [--out bench/out/scheduler_rss.json]

A home with a small generated data set; the scheduler runs as its own process (`--every 1s`);
while it runs, this script lands a small events file every ~2 s (so cycles build, validate and
publish real changes, not only no-ops) and samples the scheduler's VmRSS from /proc after each
finished cycle. Baseline for "flat": the RSS after the 10th cycle (GX, dbt and DuckDB are all
imported and warm by then) against the RSS after the last one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline import store
from pipeline.config import load_settings
from pipeline.ingest import ingest_files
from tests.test_cycle import load_sample

ROOT = Path(__file__).resolve().parents[1]


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def finished_runs(settings) -> list[dict]:
    engine = store.engine_for(settings)
    try:
        return (
            [r for r in store.recent_runs(engine, 100_000) if r["status"] != "running"]
            if store.has_schema(engine)
            else []
        )
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--every", default="1s")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        settings = load_settings(home, environ={})
        load_sample(home, Path(tmp) / "gen", customers=300, events=5000)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "schedule", "--every", args.every],
            cwd=ROOT,
            env={**os.environ, "SENDTIME_HOME": str(home)},
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "schedule.log", "wb"),
            start_new_session=True,
        )
        samples: list[dict] = []
        seen = 0
        n = 0
        last_ingest = 0.0
        started = time.monotonic()
        try:
            while seen < args.cycles:
                assert proc.poll() is None, (Path(tmp) / "schedule.log").read_text()[-3000:]
                if time.monotonic() - last_ingest > 2:
                    n += 1
                    path = Path(tmp) / f"more-{n}.jsonl"
                    path.write_text(
                        "".join(
                            json.dumps(
                                {
                                    "event_id": f"rss-{n}-{i}",
                                    "event_type": "product_view",
                                    "occurred_at": "2026-11-24T10:00:00Z",
                                    "customer_id": f"C{(n * 7 + i) % 300 + 1:07d}",
                                    "product_id": f"P{i % 40 + 1:05d}",
                                }
                            )
                            + "\n"
                            for i in range(50)
                        )
                    )
                    ingest_files(settings, "events", [path])
                    last_ingest = time.monotonic()
                runs = finished_runs(settings)
                if len(runs) > seen:
                    seen = len(runs)
                    samples.append(
                        {
                            "cycle": seen,
                            "rss_mb": round(status_kb(proc.pid, "VmRSS") / 1024, 1),
                            "hwm_mb": round(status_kb(proc.pid, "VmHWM") / 1024, 1),
                        }
                    )
                time.sleep(0.2)
            runs = finished_runs(settings)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(120)
    by_cycle = {s["cycle"]: s for s in samples}
    tenth = next(s for s in samples if s["cycle"] >= 10)
    out = {
        "cycles": seen,
        "every": args.every,
        "wall_s": round(time.monotonic() - started, 1),
        "cycles_success": sum(r["status"] == "success" for r in runs),
        "cycles_with_new_version": sum(1 for r in runs if (r.get("rows_published") or 0) > 0),
        "rss_first_mb": samples[0]["rss_mb"],
        "rss_after_10_mb": tenth["rss_mb"],
        "rss_last_mb": samples[-1]["rss_mb"],
        "peak_rss_mb": samples[-1]["hwm_mb"],
        "growth_last_vs_10th": round(samples[-1]["rss_mb"] / tenth["rss_mb"], 3),
        "exit_code_after_sigterm": code,
        "series": [by_cycle[c]["rss_mb"] for c in sorted(by_cycle)],
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
