"""The published 10M-event home the recovery benchmarks share (bench/reconcile.py, bench/backup.py).

Built like bench/pipeline.py's large home (`pipeline.generate`, seed 3: 10,000,000 events, 200,000
customers, 5,000 products, ingested through `pipeline.ingest`, first build), then one real cycle
publishes every profile to the home's SQLite store. Reused when an earlier run left it published.

    .venv/bin/python -m bench.large_home [--events 10000000] [--workdir /tmp/sendtime-bench-recovery]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline import store
from pipeline.config import Settings, load_settings

WORKDIR = Path("/tmp/sendtime-bench-recovery")
EVENTS = 10_000_000


def published_home(workdir: Path = WORKDIR, events: int = EVENTS) -> Settings:
    from bench.cycles import AS_OF, prepare

    label = f"{events // 1_000_000}m" if events >= 1_000_000 else f"{events // 1000}k"
    settings = load_settings(workdir / f"home-{label}", environ={})
    engine = store.engine_for(settings)
    try:
        if store.has_schema(engine) and store.current_version(engine) is not None:
            return settings
    finally:
        engine.dispose()
    workdir.mkdir(parents=True, exist_ok=True)
    settings = prepare(workdir, events, label, reuse=True)  # an earlier run's lake is kept: building it takes minutes
    from pipeline.cycle import run_cycle

    started = time.perf_counter()
    result = run_cycle(settings, as_of=AS_OF)
    assert result.ok, result.error
    print(
        f"[{label}] first publish: {result.rows_published:,} rows in {time.perf_counter() - started:.1f}s "
        f"(phases {result.phases})",
        flush=True,
    )
    return settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    args = parser.parse_args()
    settings = published_home(args.workdir, args.events)
    print(settings.home)


if __name__ == "__main__":
    main()
