"""What the engagement and send-time models cost a cycle, against the project without them, side by
side (docs/benchmarks.md, "Send-time cost").

    .venv/bin/python -m bench.send_time_cost [--events 300000] [--new 5000] [--cycles 5] [--base REF]

1. Exports the project at REF (default: the merge base with main, i.e. without this work) to a
   scratch folder, generates data with this tree's generator (engagement included) and ingests it
   with this tree's ingest into one lake, copied to two homes.
2. Builds each home from scratch, one with each project (the base project reads the same lake: its
   sources simply ignore the events' `email_hash` column).
3. Then, alternating between the two: a cycle after the same new lake batch (--new events, copied
   into both lakes), and a cycle with nothing new (as_of one day later: the quiet path, where the
   30-day email counts re-stage). Each build runs in a fresh process per project (dbt's parse
   included, once per process; the medians count the builds after it).
Prints the median seconds and the ratio engagement / base, with the machine's load.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
from datetime import timedelta
from pathlib import Path

from bench.cycles import fresh_events
from pipeline.config import load_settings
from pipeline.generate import GENERATOR_END, generate
from pipeline.ingest import ingest_files

ROOT = Path(__file__).resolve().parents[1]

# run inside a project tree: builds the home for each line read on stdin ("full", "cycle AS_OF"),
# answers the seconds and the status (one process per project: dbt parses once, like the scheduler)
WORKER = r"""
import json, sys, time
from datetime import datetime
from pipeline.config import load_settings
from pipeline.ids import new_cycle_id
from pipeline.transform import build
settings = load_settings(sys.argv[1], environ={})  # the home's sendtime.toml applies
for line in sys.stdin:
    kind, as_of = line.split()
    started = time.perf_counter()
    result = build(settings, as_of=datetime.fromisoformat(as_of), cycle_id=new_cycle_id(),
                   full_refresh=kind == "full")
    print(json.dumps({"ok": result.ok, "seconds": time.perf_counter() - started, "error": result.error,
                      "nodes": len(result.nodes)}), flush=True)
"""


class Project:
    def __init__(self, name: str, tree: Path, home: Path) -> None:
        self.name, self.tree, self.home = name, tree, home
        env = {**os.environ, "PYTHONPATH": str(tree), "SENDTIME_PROJECT_DIR": str(tree)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(home)],
            cwd=tree,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def build(self, kind: str, as_of) -> float:
        self.proc.stdin.write(f"{kind} {as_of.isoformat()}\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert answer["ok"], (self.name, answer["error"])
        return answer["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def export(ref: str, target: Path) -> Path:
    data = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(target, filter="data")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--new", type=int, default=5_000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--base", default=None, help="git ref of the baseline project (default: merge base with main)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sendtime-bench-send-time-cost"))
    args = parser.parse_args()
    base_ref = (
        args.base
        or subprocess.run(
            ["git", "merge-base", "HEAD", "main"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    base_tree = export(base_ref, args.workdir / "base-project")

    customers = max(1000, args.events // 50)
    files = generate(args.workdir / "data", customers=customers, events=args.events, products=300, seed=3)
    new_files = [
        fresh_events(args.workdir, args.new, f"new{i}", customers=customers, products=300) for i in range(args.cycles)
    ]
    staging = load_settings(args.workdir / "staging", environ={})
    for source in ("products", "customers", "orders", "order_items", "events"):
        ingest_files(staging, source, files[source])
    homes = {name: args.workdir / f"home-{name}" for name in ("base", "engagement")}
    for home in homes.values():
        shutil.copytree(staging.lake_dir, home / "lake")
        # no association refresh falls due while the bench runs: the quiet cycles stay quiet
        (home / "sendtime.toml").write_text('recommendations_refresh_every = "1000h"\n')
    projects = [Project("base", base_tree, homes["base"]), Project("engagement", ROOT, homes["engagement"])]
    timings: dict[str, dict[str, list[float]]] = {p.name: {"full": [], "cycle": [], "quiet": []} for p in projects}
    as_of = GENERATOR_END
    try:
        for project in projects:
            timings[project.name]["full"].append(project.build("full", as_of))
        for i, path in enumerate(new_files):
            before = {p.stem for p in staging.lake_dir.rglob("*.parquet")}
            ingest_files(staging, "events", [path])
            (batch,) = [p for p in staging.lake_dir.rglob("*.parquet") if p.stem not in before]
            as_of += timedelta(hours=1)
            for project in projects if i % 2 == 0 else projects[::-1]:
                target = project.home / "lake" / batch.relative_to(staging.lake_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(batch, target)
                timings[project.name]["cycle"].append(project.build("cycle", as_of))
            as_of += timedelta(days=1)
            for project in projects if i % 2 == 0 else projects[::-1]:
                timings[project.name]["quiet"].append(project.build("cycle", as_of))
    finally:
        for project in projects:
            project.close()
    load = os.getloadavg()
    print(
        f"\n{args.events:,} events, {customers:,} customers; {args.cycles} cycles of {args.new:,} new events, "
        f"each followed by a cycle with nothing new (as_of +1 day); base {base_ref[:8]}; "
        f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n"
    )
    print("| build | base (s) | engagement (s) | engagement / base |")
    print("|---|---|---|---|")
    for kind, label in (
        ("full", "full rebuild"),
        ("cycle", f"cycle after {args.new:,} new events (median)"),
        ("quiet", "cycle with nothing new (median)"),
    ):
        base, mine = statistics.median(timings["base"][kind]), statistics.median(timings["engagement"][kind])
        print(f"| {label} | {base:.2f} | {mine:.2f} | {mine / base:.2f}x |")


if __name__ == "__main__":
    main()
