"""Collector under load with duplicates: nothing lost, nothing doubled (docs/benchmarks.md, "Collector").

    .venv/bin/python -m bench.collector [--rate 2000] [--clients 8] [--seconds 30] [--batch 50] [--duplicates 0.2]

A real `sendtime serve` (gunicorn, 2 workers) and `sendtime schedule --every 5s` on a fresh home.
`--clients` client threads post batches of `--batch` events, paced to `--rate` events per second
in all. Phases alternate, side by side: without duplicates (the baseline), then with a share
`--duplicates` of each batch repeating ids any client sent before (retries of other clients'
events, the case where the first request may still be in flight), twice each. Then the load stops,
one more cycle runs, and the warehouse is checked: every id the collector answered (accepted or
duplicate) is in `int_events_deduplicated` exactly once, every id was answered `accepted` exactly
once, and nothing else is there. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import requests

from pipeline.config import load_settings
from serving.keys import create_key
from tests.helpers.api_server import ApiServer
from tests.helpers.cli import Cli

ROOT = Path(__file__).resolve().parents[1]


class Load:
    def __init__(self, server: ApiServer, key: str, args: argparse.Namespace) -> None:
        self.server, self.key, self.args = server, key, args
        self.sent: list[str] = []  # ids sent so far (any client): the pool duplicates come from
        self.lock = threading.Lock()
        self.counter = 0
        self.answers: list[tuple[str, str]] = []  # (event id, status)
        self.latencies: dict[str, list[float]] = {}
        self.errors = 0
        self.when = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _batch(self, duplicates: float) -> list[dict]:
        with self.lock:
            repeat = int(self.args.batch * duplicates) if self.sent else 0
            ids = [random.choice(self.sent) for _ in range(repeat)]
            fresh = [f"ev-{self.counter + i}" for i in range(self.args.batch - repeat)]
            self.counter += len(fresh)
            self.sent.extend(fresh)
        return [
            {
                "event_id": i,
                "event_type": "product_view",
                "occurred_at": self.when,
                "customer_id": f"C{hash(i) % 2000:07d}",
                "product_id": f"P{hash(i) % 100 + 1:05d}",
            }
            for i in ids + fresh
        ]

    def phase(self, name: str, duplicates: float, seconds: float) -> tuple[float, int]:
        """Runs the clients for `seconds`; returns (events per second answered, events)."""
        per_client = self.args.rate / self.args.clients / self.args.batch  # requests per second
        stop = time.monotonic() + seconds
        counted = [0]

        def client() -> None:
            next_at = time.monotonic()
            while time.monotonic() < stop:
                body = self._batch(duplicates)
                started = time.monotonic()
                try:
                    r = requests.post(
                        self.server.url + "/api/v1/events",
                        json=body,
                        timeout=30,
                        headers={"Authorization": f"Bearer {self.key}"},
                    )
                    ok = r.status_code == 200
                except requests.RequestException:
                    ok = False
                took = time.monotonic() - started
                with self.lock:
                    self.latencies.setdefault(name, []).append(took)
                    if ok:
                        self.answers += [(x["event_id"], x["status"]) for x in r.json()["results"]]
                        counted[0] += len(body)
                    else:
                        self.errors += 1
                next_at += 1 / per_client
                time.sleep(max(0.0, next_at - time.monotonic()))

        threads = [threading.Thread(target=client) for _ in range(self.args.clients)]
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return counted[0] / (time.monotonic() - began), counted[0]


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--duplicates", type=float, default=0.2)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sendtime-bench-collector-"))
    settings = load_settings(home, environ={})
    key, _ = create_key(settings, "bench", ["events:write"])
    env = {**os.environ, "SENDTIME_HOME": str(home)}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "schedule", "--every", "5s"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    rates: dict[str, list[float]] = {"baseline": [], "duplicates": []}
    try:
        with ApiServer(home, workers=2) as server:
            load = Load(server, key, args)
            for _ in range(2):
                rates["baseline"].append(load.phase("baseline", 0.0, args.seconds)[0])
                rates["duplicates"].append(load.phase("duplicates", args.duplicates, args.seconds)[0])
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(300)
    final = json.loads(Cli(home)("run", "--json").stdout)
    assert final["status"] == "success", final
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        stored = dict(con.execute("select event_id, count(*) from int_events_deduplicated group by 1").fetchall())
    answered = {i for i, _ in load.answers}
    accepted: dict[str, int] = {}
    for i, status in load.answers:
        if status == "accepted":
            accepted[i] = accepted.get(i, 0) + 1
    lost = answered - set(stored)
    doubled = [i for i, n in stored.items() if n > 1]
    unexpected = set(stored) - answered
    duplicates = sum(1 for _, s in load.answers if s == "duplicate")
    print(
        f"\nload average {os.getloadavg()}; {len(load.answers):,} answers, {duplicates:,} duplicates, "
        f"{load.errors} failed requests"
    )
    print("\n| measure | without duplicates (baseline) | with duplicates | ratio |")
    print("|---|---|---|---|")
    base, dup = statistics.mean(rates["baseline"]), statistics.mean(rates["duplicates"])
    print(f"| events/s answered (offered {args.rate:,}) | {base:,.0f} | {dup:,.0f} | {dup / base:.2f} |")
    for p in (0.5, 0.95, 0.99):
        b, d = _pct(load.latencies["baseline"], p), _pct(load.latencies["duplicates"], p)
        print(f"| request latency p{int(p * 100)} ({args.batch} events) | {b:.1f} ms | {d:.1f} ms | {d / b:.2f} |")
    print(
        f"\nids answered {len(answered):,}; in the warehouse {len(stored):,}; lost {len(lost)}; "
        f"doubled {len(doubled)}; accepted more than once {sum(1 for n in accepted.values() if n > 1)}; "
        f"never accepted {len(answered - set(accepted))}; in the warehouse but never answered {len(unexpected)}"
    )


if __name__ == "__main__":
    main()
