"""Backup of the 10M-event home while cycles run (docs/benchmarks.md, "Backup").

    .venv/bin/python -m bench.backup [--cycles 4] [--new 10000]

On the published home of bench/large_home.py: cycles run back to back in this process, each after
ingesting a file of `--new` fresh events (the real ingest, the real cycle: dbt, validation,
publish). Phases alternate, side by side: cycles alone (the baseline), then cycles while
`sendtime backup DIR` runs again and again in another process (each backup into a new folder on
the same file system, removed once the next one starts), twice each. For each cycle: its own
duration (the run log's), and its latency from the moment it wanted to start to its end, waits for
the cycle lock included (a cycle that finds the backup holding the lock retries every 0.25 s; the
scheduler would skip the tick instead). Reports p95 of both per phase, and each backup's time,
bytes (linked and copied) and how long it held the cycle lock.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.cycles import AS_OF, _customers_for, _products_for, fresh_events
from bench.large_home import WORKDIR, published_home
from pipeline.cycle import run_cycle
from pipeline.ingest import ingest_files

ROOT = Path(__file__).resolve().parents[1]


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class Backups:
    """`sendtime backup` in a loop, in a subprocess, until stopped."""

    def __init__(self, home: Path, folder: Path) -> None:
        self.home, self.folder = home, folder
        self.stop = threading.Event()
        self.made: list[dict] = []
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        previous = None
        while not self.stop.is_set():
            target = self.folder / f"b{n}"
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "pipeline.cli", "backup", str(target), "--json"],
                cwd=ROOT,
                env={**os.environ, "SENDTIME_HOME": str(self.home)},
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            self.made.append({**json.loads(proc.stdout), "wall": time.perf_counter() - started})
            if previous is not None:
                shutil.rmtree(previous, ignore_errors=True)
            previous, n = target, n + 1
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)

    def halt(self) -> None:
        self.stop.set()
        self.thread.join()


def cycle(settings, path: Path) -> tuple[float, float]:
    """(own duration, latency from wanting to start to the end, lock waits included)."""
    ingest_files(settings, "events", [path])
    wanted = time.perf_counter()
    while True:
        result = run_cycle(settings, as_of=AS_OF)
        if result.status != "busy":
            break
        time.sleep(0.25)
    assert result.ok, result.error
    return result.seconds, time.perf_counter() - wanted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=4, help="cycles per phase")
    parser.add_argument("--new", type=int, default=10_000)
    args = parser.parse_args()
    settings = published_home()
    tag = f"bk{int(time.time())}-"
    files = [
        fresh_events(WORKDIR, args.new, f"{tag}{i}", customers=_customers_for(100_000), products=_products_for(100_000))
        for i in range(4 * args.cycles + 1)
    ]
    cycle(settings, files.pop())  # warm-up: dbt parses the project once per process
    own: dict[str, list[float]] = {"alone": [], "backup": []}
    latency: dict[str, list[float]] = {"alone": [], "backup": []}
    made: list[dict] = []
    folder = WORKDIR / "backups"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for phase in ("alone", "backup", "alone", "backup"):
        backups = Backups(settings.home, folder) if phase == "backup" else None
        try:
            for _ in range(args.cycles):
                seconds, waited = cycle(settings, files.pop())
                own[phase].append(seconds)
                latency[phase].append(waited)
                print(
                    f"[{phase}] cycle {seconds:.2f}s, latency {waited:.2f}s, load {os.getloadavg()[0]:.1f}", flush=True
                )
        finally:
            if backups is not None:
                backups.halt()
                made += backups.made
    print(f"\nload average {os.getloadavg()}; {len(made)} backups")
    b = made[len(made) // 2]
    parts = ", ".join(f"{how} {v['files']:,} files {v['bytes'] / 1e9:.2f} GB" for how, v in b["by_how"].items())
    print(f"a backup: {b['files']:,} files, {b['bytes'] / 1e9:.2f} GB ({parts})")
    med = statistics.median
    print("\n| measure | without backup | during backups | ratio |")
    print("|---|---|---|---|")
    print(
        f"| cycle time p95 (run log, {len(own['alone'])} cycles each) | {p95(own['alone']):.2f} s | "
        f"{p95(own['backup']):.2f} s | {p95(own['backup']) / p95(own['alone']):.2f} |"
    )
    print(
        f"| cycle latency p95 (lock waits included) | {p95(latency['alone']):.2f} s | "
        f"{p95(latency['backup']):.2f} s | {p95(latency['backup']) / p95(latency['alone']):.2f} |"
    )
    print(f"| backup time (median of {len(made)}) | - | {med(m['seconds'] for m in made):.2f} s | - |")
    print(
        f"| cycle lock held per backup (median, max) | - | {med(m['lock_seconds'] for m in made):.2f} s, "
        f"{max(m['lock_seconds'] for m in made):.2f} s | - |"
    )


if __name__ == "__main__":
    main()
