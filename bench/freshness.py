"""Freshness: an event POSTed to the collector until its effect is visible in the API.

    .venv/bin/python -m bench.freshness [--every 0s] [--rate 1000] [--duration 300] [--reads 100]
        [--customers 2000] [--events 100000] [--probes N] [--out bench/out/freshness.json]

Real parts only: a home with a generated data set (the demo's by default: 2,000 customers, 100,000
events) and one published cycle, then `sendtime serve` (gunicorn, 2 workers) and `sendtime schedule
--every <every>` as separate processes (`0s`: continuous). A loader POSTs events at `--rate`
events/s to `POST /api/v1/events` (a batch every 0.1 s) for `--duration` seconds (or until
`--probes` probes were sent); every 0.5 s one event of a batch is a probe, a product_view of a
brand-new customer id. A probe is visible when `POST /api/v1/customers/batch` finds that customer
(a profile exists only once a cycle has built, validated and published it). Latency = visible -
POST sent. Meanwhile `--reads` profile reads per second (`GET /api/v1/customers/{id}` of known
customers) measure the API under the same load.

Reports p50/p95/max of the probes' latencies, the reads' p50/p99 and errors, the cycles (count,
plans, phase medians of those that ran dbt), the load average sampled every 10 s, and the
scheduler's CPU while idle after the load stops (continuous mode must not poll).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("products", "customers", "orders", "order_items", "events")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sendtime(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "SENDTIME_HOME": str(home)},
        check=True,
    )


def start(home: Path, *args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=ROOT,
        env={**os.environ, "SENDTIME_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),
        start_new_session=True,
    )


def load_home(home: Path, out: Path, customers: int, events: int) -> None:
    from pipeline.config import load_settings
    from pipeline.generate import generate
    from pipeline.ingest import ingest_files

    settings = load_settings(home, environ={})
    files = generate(out, customers=customers, events=events, products=min(300, max(20, customers)), seed=42)
    for source in SOURCES:
        if files.get(source):
            ingest_files(settings, source, list(files[source]))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads (/proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stats(values: list[float], digits: int = 2) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), digits),
        "p95": round(percentile(values, 0.95), digits),
        "p99": round(percentile(values, 0.99), digits),
        "max": round(max(values), digits),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", default="0s")
    parser.add_argument("--rate", type=int, default=1000, help="events per second, probes included")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of sustained load")
    parser.add_argument("--probes", type=int, default=None, help="stop after this many probes instead")
    parser.add_argument("--reads", type=int, default=100, help="profile reads per second during the load")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured after the load")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        load_home(home, Path(tmp) / "gen", args.customers, args.events)
        sendtime(home, "run")
        key = json.loads(
            sendtime(
                home, "keys", "create", "--name", "bench", "--scopes", "profiles:read,events:write", "--json"
            ).stdout
        )["key"]
        port = free_port()
        server = start(home, "serve", "--port", str(port), "--workers", "2", log=Path(tmp) / "serve.log")
        scheduler = start(home, "schedule", "--every", args.every, log=Path(tmp) / "schedule.log")
        base = f"http://127.0.0.1:{port}/api/v1"
        headers = {"Authorization": f"Bearer {key}"}
        session = requests.Session()
        deadline = time.monotonic() + 120
        while True:
            try:
                if session.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the API did not start")
            time.sleep(0.2)
        # the scheduler's first cycle (dbt parse, GX import) before the clock starts
        deadline = time.monotonic() + 300
        while not any(r.get("msg") == "cycle finished" for r in _log_lines(Path(tmp) / "schedule.log")):
            if time.monotonic() > deadline or scheduler.poll() is not None:
                raise SystemExit("the scheduler did not finish its first cycle")
            time.sleep(0.5)

        run_tag = str(int(time.time()))
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        posts: list[float] = []
        reads: list[float] = []
        errors = {"post": 0, "read": 0}
        stop = threading.Event()
        lock = threading.Lock()
        loads: list[list[float]] = []
        started_at = time.monotonic()

        posted = {"events": 0}

        def loader(index: int, writers: int) -> None:
            # several writers, each its own connection and schedule, so one slow POST does not
            # lower the offered rate (a batch every 0.1 s per writer, probes from writer 0)
            rng = random.Random(index)
            post = requests.Session()
            batch, period = max(1, args.rate // (10 * writers)), 0.1
            n = probes = 0
            next_at = time.monotonic() + index * period / writers
            while not stop.is_set():
                if args.probes is not None and len(sent) >= args.probes:
                    break
                if args.probes is None and time.monotonic() - started_at >= args.duration:
                    break
                events = []
                for _ in range(batch):
                    n += 1
                    events.append(
                        {
                            "event_id": f"fresh-{run_tag}-{index}-{n}",
                            "event_type": "product_view",
                            "occurred_at": int(time.time() * 1000) - 1000,
                            "customer_id": f"C{rng.randint(1, args.customers):07d}",
                            "product_id": f"P{rng.randint(1, 300):05d}",
                        }
                    )
                probe = None
                if index == 0 and n // batch % 5 == 0:  # every 0.5 s one probe replaces a background event
                    probe = f"PROBE-{run_tag}-{probes:05d}"
                    events[0]["customer_id"] = probe
                    probes += 1
                sent_at = time.monotonic()
                try:
                    resp = post.post(f"{base}/events", json={"events": events}, headers=headers, timeout=30)
                    if resp.status_code != 200:
                        errors["post"] += 1
                    else:
                        posted["events"] += len(events)
                except requests.RequestException:
                    errors["post"] += 1
                posts.append(time.monotonic() - sent_at)
                if probe:
                    with lock:
                        sent[probe] = sent_at
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))

        def reader(share: float) -> None:
            rng = random.Random(2)
            get = requests.Session()
            period = 1.0 / share
            next_at = time.monotonic()
            while not stop.is_set():
                cid = f"C{rng.randint(1, args.customers):07d}"
                at = time.monotonic()
                try:
                    resp = get.get(f"{base}/customers/{cid}", headers=headers, timeout=30)
                    if resp.status_code not in (200, 404):
                        errors["read"] += 1
                except requests.RequestException:
                    errors["read"] += 1
                reads.append(time.monotonic() - at)
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))

        def sampler() -> None:
            while not stop.wait(10):
                loads.append([round(x, 2) for x in os.getloadavg()])

        load_before = [round(x, 2) for x in os.getloadavg()]
        window_start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        writers = 4
        threads = [threading.Thread(target=loader, args=(i, writers), daemon=True) for i in range(writers)]
        loaders = list(threads)
        threads.append(threading.Thread(target=sampler, daemon=True))
        reader_threads = 4 if args.reads else 0
        threads += [
            threading.Thread(target=reader, args=(args.reads / reader_threads,), daemon=True)
            for _ in range(reader_threads)
        ]
        for thread in threads:
            thread.start()
        give_up = load_end = None
        while True:
            with lock:
                pending = [p for p in sent if p not in seen]
            if pending:
                try:
                    resp = session.post(
                        f"{base}/customers/batch",
                        json={"customer_ids": pending, "fields": ["customer_id"]},
                        headers=headers,
                        timeout=30,
                    )
                    now = time.monotonic()
                    if resp.status_code == 200:
                        for item in resp.json().get("found", []):
                            cid = item.get("customer_id") if isinstance(item, dict) else None
                            if cid in sent and cid not in seen:
                                seen[cid] = now
                except requests.RequestException:
                    pass
            if not any(t.is_alive() for t in loaders):
                if give_up is None:
                    load_end, give_up = time.monotonic(), time.monotonic() + 120
                if len(seen) >= len(sent) or time.monotonic() > give_up:
                    break
            time.sleep(0.1)
        stop.set()
        for thread in threads:
            thread.join(30)
        offered_seconds = load_end - started_at
        load_after = [round(x, 2) for x in os.getloadavg()]

        # the scheduler with nothing arriving: its CPU share over --idle seconds
        time.sleep(3)
        idle_before, idle_clock = cpu_seconds(scheduler.pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = (cpu_seconds(scheduler.pid) - idle_before) / (time.monotonic() - idle_clock)

        for proc in (scheduler, server):
            proc.send_signal(signal.SIGTERM)
        for proc in (scheduler, server):
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        runs = json.loads(sendtime(home, "runs", "--limit", "100000", "--json").stdout)["runs"]

    latencies = [seen[p] - sent[p] for p in seen]
    window = [r for r in runs if (r.get("started_at") or "") >= window_start and r["status"] != "busy"]
    built = [r for r in window if r["status"] == "success" and "read" in (r.get("phases") or {})]
    out = {
        "every": args.every,
        "rate_events_per_s": args.rate,
        "duration_s": args.duration,
        "lake": {"customers": args.customers, "events": args.events},
        "events_posted": posted["events"],
        "events_per_s_achieved": round(posted["events"] / offered_seconds, 1),
        "probes_sent": len(sent),
        "probes_seen": len(seen),
        "freshness_s": _stats(latencies),
        "collector_post_s": _stats(posts, 3),
        "reads_per_s_target": args.reads,
        "read_s": _stats(reads, 4),
        "errors": errors,
        "cycles": len(window),
        "cycles_failed": sum(r["status"] not in ("success",) for r in window),
        "failures": [f"{r['status']}: {(r.get('error') or '')[:300]}" for r in window if r["status"] != "success"][:5],
        "cycles_with_dbt": len(built),
        "cycle_seconds_p50": round(statistics.median(sum(r["phases"].values()) for r in built), 2) if built else None,
        "phase_seconds_p50": {
            name: round(statistics.median(r["phases"].get(name, 0.0) for r in built), 3)
            for name in ("ingest_watermark", "transform", "read", "validate", "publish")
        }
        if built
        else None,
        "scheduler_idle_cpu_percent": round(100 * idle_cpu, 2),
        "load_before": load_before,
        "load_during": loads,
        "load_after": load_after,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


def _log_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


if __name__ == "__main__":
    main()
