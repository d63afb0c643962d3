"""Ingest throughput and peak memory, against a no-validation baseline run side by side.

    .venv/bin/python bench/ingest.py [--events 1000000] [--big-gb 1.0] [--workdir /tmp/sendtime-bench]

1. Generates 1M events (JSONL, then CSV) with `pipeline.generate`.
2. Ingests each with `pipeline.ingest.ingest_files` in a child process, and runs the baseline in
   another child process: DuckDB (one thread, like ingest) `read_json`/`read_csv` -> `COPY ... TO
   parquet`, no validation, no quarantine, no line numbers. Each child reports its wall time, its
   CPU time (user + system) and its peak RSS (`getrusage(RUSAGE_SELF)` at exit, what the parent's
   RUSAGE_CHILDREN reports for that child alone). The parent imports nothing heavy and generates
   data in a child too: Linux keeps a forked child's ru_maxrss at least the parent's RSS at fork.
   CPU time is reported because the machine is shared: events per CPU-second is the one-core rate.
3. Builds a ~1 GB JSONL file (generated events files concatenated) and measures ingest's peak RSS
   on it (target < 500 MB).
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(kind: str, source_format: str, paths: list[str], home: str) -> None:
    started = time.perf_counter()
    out: dict = {}
    if kind == "ingest":
        from pipeline.config import load_settings
        from pipeline.ingest import ingest_files

        report = ingest_files(load_settings(home, environ={}), "events", [Path(p) for p in paths])
        out = {"received": report.received, "accepted": report.accepted, "rejected": report.rejected}
    else:
        import duckdb

        con = duckdb.connect(config={"threads": 1, "memory_limit": "256MB"})
        files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
        reader = (
            f"read_json({files}, format='newline_delimited', ignore_errors=true)"
            if source_format == "jsonl"
            else f"read_csv({files}, all_varchar=true, ignore_errors=true)"
        )
        target = Path(home) / "baseline.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY (SELECT * FROM {reader}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
        out = {"received": con.execute(f"SELECT count(*) FROM '{target}'").fetchone()[0]}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["seconds"] = time.perf_counter() - started
    out["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    out["peak_rss_mb"] = usage.ru_maxrss / 1024
    print(json.dumps(out))


def gen_child(out: str, events: int, fmt: str) -> None:
    from pipeline.generate import generate

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    files = generate(
        Path(out), customers=max(2000, events // 50), events=events, products=2000, seed=42, events_format=fmt
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "paths": [str(p) for p in files["events"]],
                "seconds": time.perf_counter() - started,
                "peak_rss_mb": usage.ru_maxrss / 1024,
            }
        )
    )


def run_child(kind: str, source_format: str, paths: list[Path], home: Path) -> dict:
    shutil.rmtree(home, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, source_format, str(home), *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gen(out: Path, events: int, fmt: str) -> tuple[list[Path], dict]:
    proc = subprocess.run(
        [sys.executable, __file__, "--gen", str(out), str(events), fmt],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return [Path(p) for p in result["paths"]], result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--big-gb", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sendtime-bench"))
    args = parser.parse_args()
    work: Path = args.workdir
    rows = []
    for fmt in ("jsonl", "csv"):
        paths, gen_info = gen(work / f"data-{fmt}", args.events, fmt)
        gen_seconds = gen_info["seconds"]
        size_mb = sum(p.stat().st_size for p in paths) / 1e6
        ours = run_child("ingest", fmt, paths, work / "home")
        base = run_child("baseline", fmt, paths, work / "home-baseline")
        rows.append((fmt, size_mb, gen_seconds, ours, base))
        print(
            f"{fmt}: generated {args.events:,} events ({size_mb:.0f} MB) in {gen_seconds:.1f}s; "
            f"ingest {ours}; baseline {base}",
            file=sys.stderr,
        )

    # ~1 GB JSONL: generated files concatenated into one
    per_event = rows[0][1] * 1e6 / rows[0][3]["received"]
    big_events = int(args.big_gb * 1e9 / per_event)
    parts, big_gen = gen(work / "data-big", big_events, "jsonl")
    big_gen_seconds = big_gen["seconds"]
    big = work / "big.jsonl"
    with open(big, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 16 * 1024 * 1024)
    shutil.rmtree(work / "data-big")
    big_mb = big.stat().st_size / 1e6
    big_ours = run_child("ingest", "jsonl", [big], work / "home")
    big_base = run_child("baseline", "jsonl", [big], work / "home-baseline")
    print(
        f"big: {big_events:,} events generated in {big_gen_seconds:.1f}s, {big_mb:.0f} MB; ingest {big_ours}; "
        f"baseline {big_base}",
        file=sys.stderr,
    )

    print(
        "| input | records | MB | ingest wall s | ingest CPU s | records per CPU-s | ingest peak RSS MB "
        "| baseline wall s | baseline CPU s | baseline peak RSS MB | CPU ratio ingest/baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, mb, ours, base in [(f"{args.events:,} events, {fmt}", size, o, b) for fmt, size, _, o, b in rows] + [
        (f"{big_mb / 1000:.2f} GB JSONL, one file", big_mb, big_ours, big_base)
    ]:
        print(
            f"| {label} | {ours['received']:,} | {mb:.0f} | {ours['seconds']:.1f} | {ours['cpu_seconds']:.1f} "
            f"| {ours['received'] / ours['cpu_seconds']:,.0f} | {ours['peak_rss_mb']:.0f} | {base['seconds']:.1f} "
            f"| {base['cpu_seconds']:.1f} | {base['peak_rss_mb']:.0f} | {ours['cpu_seconds'] / base['cpu_seconds']:.1f} |"
        )
    print()
    print(
        f"Generator: {args.events:,} events (JSONL, plus CDC and catalog) in {rows[0][2]:.1f}s, CSV in {rows[1][2]:.1f}s; "
        f"{big_events:,} events in {big_gen_seconds:.1f}s ({big_events / big_gen_seconds:,.0f} events/s, "
        f"peak RSS {big_gen['peak_rss_mb']:.0f} MB)."
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[5:], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--gen":
        gen_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
