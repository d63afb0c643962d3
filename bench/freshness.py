"""Freshness: an event POSTed to the collector until its effect is visible in the API.

    .venv/bin/python bench/freshness.py [--every 5s] [--rate 200] [--probes 100] [--out bench/out/freshness.json]

Real parts only: a home with a small generated data set and one published cycle, `sendtime serve`
(gunicorn) and `sendtime schedule --every 5s` as separate processes. A loader POSTs background
events at `--rate` events/s (batches of 20 every 0.1 s) to `POST /api/v1/events`; among them,
every 0.5 s, one probe: a product_view of a brand-new customer id. A probe is visible when
`POST /api/v1/customers/batch` finds that customer (a profile exists only once a cycle has built,
validated and published it). Latency = visible - POST sent. Reports p50/p95/max over the probes.
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

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_cycle import load_sample  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sendtime(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "SENDTIME_HOME": str(home)}, check=True)


def start(home: Path, *args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT,
                            env={**os.environ, "SENDTIME_HOME": str(home)}, stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"), start_new_session=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", default="5s")
    parser.add_argument("--rate", type=int, default=200, help="events per second, probes included")
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        load_sample(home, Path(tmp) / "gen", customers=500, events=20_000)
        sendtime(home, "run")
        key = json.loads(sendtime(home, "keys", "create", "--name", "bench", "--scopes", "profiles:read,events:write",
                                  "--json").stdout)["key"]
        port = free_port()
        server = start(home, "serve", "--port", str(port), "--workers", "2", log=Path(tmp) / "serve.log")
        scheduler = start(home, "schedule", "--every", args.every, log=Path(tmp) / "schedule.log")
        base = f"http://127.0.0.1:{port}/api/v1"
        headers = {"Authorization": f"Bearer {key}"}
        session = requests.Session()
        deadline = time.monotonic() + 60
        while True:
            try:
                if session.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the API did not start")
            time.sleep(0.2)

        run_tag = str(int(time.time()))
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        errors = {"post": 0}
        stop = threading.Event()
        lock = threading.Lock()

        def loader() -> None:
            rng = random.Random(1)
            post = requests.Session()
            batch, period = max(1, args.rate // 10), 0.1
            n = probes = 0
            next_at = time.monotonic()
            while not stop.is_set() and probes < args.probes:
                events = []
                for _ in range(batch):
                    n += 1
                    events.append({"event_id": f"fresh-{run_tag}-{n}", "event_type": "product_view",
                                   "occurred_at": int(time.time() * 1000) - 1000,
                                   "customer_id": f"C{rng.randint(1, 500):07d}", "product_id": f"P{rng.randint(1, 40):05d}"})
                probe = None
                if n // batch % 5 == 0:  # every 0.5 s one probe replaces a background event
                    probe = f"PROBE-{run_tag}-{probes:04d}"
                    events[0]["customer_id"] = probe
                    probes += 1
                sent_at = time.monotonic()
                try:
                    resp = post.post(f"{base}/events", json={"events": events}, headers=headers, timeout=10)
                    if resp.status_code != 200:
                        errors["post"] += 1
                except requests.RequestException:
                    errors["post"] += 1
                if probe:
                    with lock:
                        sent[probe] = sent_at
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))

        thread = threading.Thread(target=loader, daemon=True)
        thread.start()
        give_up = time.monotonic() + args.probes * 0.5 + 120
        while time.monotonic() < give_up:
            with lock:
                pending = [p for p in sent if p not in seen]
            if pending:
                resp = session.post(f"{base}/customers/batch", json={"customer_ids": pending, "fields": ["customer_id"]},
                                    headers=headers, timeout=10)
                now = time.monotonic()
                if resp.status_code == 200:
                    for item in resp.json().get("found", []):
                        cid = item.get("customer_id") if isinstance(item, dict) else None
                        if cid in sent and cid not in seen:
                            seen[cid] = now
            if len(seen) >= args.probes:
                break
            time.sleep(0.1)
        stop.set()
        thread.join(10)
        for proc in (scheduler, server):
            proc.send_signal(signal.SIGTERM)
        for proc in (scheduler, server):
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        runs = json.loads(sendtime(home, "runs", "--limit", "1000", "--json").stdout)["runs"]

    latencies = [seen[p] - sent[p] for p in seen]
    cycles = [r for r in runs if r["status"] == "success" and r.get("phases")]
    out = {
        "every": args.every, "rate_events_per_s": args.rate, "probes_sent": len(sent), "probes_seen": len(seen),
        "p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "p95_s": round(percentile(latencies, 0.95), 2) if latencies else None,
        "max_s": round(max(latencies), 2) if latencies else None,
        "post_errors": errors["post"], "cycles": len(runs),
        "cycles_failed": sum(r["status"] != "success" for r in runs),
        "failures": [f"{r['status']}: {(r.get('error') or '')[:300]}" for r in runs if r["status"] != "success"],
        "cycle_seconds_p50": round(statistics.median(
            sum(r["phases"].values()) for r in cycles), 2) if cycles else None,
        "phase_seconds_p50": {name: round(statistics.median(r["phases"].get(name, 0.0) for r in cycles), 2)
                              for name in ("transform", "read", "validate", "publish")} if cycles else None,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
