"""API benchmark: `sendtime serve` vs a bare Flask JSON endpoint under the same gunicorn setup.

    .venv/bin/python bench/api.py [--profiles 100000] [--seconds 10] [--workers 2] [--out FILE]

Steps (one run, side by side, so the machine's noise hits both):
1. publish N profiles (+ a small catalog) into a fresh SENDTIME_HOME through pipeline.publish;
2. start `sendtime serve` and the bare app (gunicorn, same options from serving/gunicorn_conf.py);
3. wrk, 16 connections: GET a random profile by id vs GET the bare endpoint (a Lua script picks
   random ids), alternating bare/api twice; throughput ratio and p99;
4. wrk, one connection per worker (no queueing): GET latency of both, p50/p99;
5. wrk: POST /customers/batch with 1,000 random ids (2 connections: one request in flight per
   worker, so the latency is the service time, not queueing); p95;
6. wrk GET profiles again while 10 publishes (upsert transactions of 10,000 changed profiles each)
   happen; throughput, p99 and failed requests (socket errors + non-2xx).
Prints one JSON object; docs/benchmarks.md "API" has the numbers of a run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from pipeline.config import load_settings
from serving.keys import create_key
from tests.helpers.api_server import ApiServer, product_row, profile_row, publish_rows
from tests.helpers.net import free_port

ROOT = Path(__file__).resolve().parents[1]

LUA_COMMON = r"""
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  math.randomseed(os.time() * 1000 + tid)
  local key = os.getenv("BENCH_KEY")
  if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
  N = tonumber(os.getenv("BENCH_N"))
  PREFIX = os.getenv("BENCH_PREFIX")
  init_more()
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""
LUA_GET = (
    LUA_COMMON
    + r"""
function init_more() end
function request()
  return wrk.format("GET", PREFIX .. string.format("c%06d", math.random(0, N - 1)))
end
"""
)
LUA_BATCH = (
    LUA_COMMON
    + r"""
local bodies = {}
function init_more()
  wrk.headers["Content-Type"] = "application/json"
  for b = 1, 20 do
    local ids = {}
    for i = 1, 1000 do ids[i] = string.format('"c%06d"', math.random(0, N - 1)) end
    bodies[b] = '{"customer_ids":[' .. table.concat(ids, ",") .. ']}'
  end
end
function request()
  return wrk.format("POST", PREFIX, nil, bodies[math.random(1, #bodies)])
end
"""
)

BARE_APP = r"""
import sys
from flask import Flask, jsonify
from serving.gunicorn_conf import gunicorn_options
from serving.server import StandaloneApplication

def factory():
    app = Flask("bare")

    @app.get("/bare/<customer_id>")
    def bare(customer_id):
        return jsonify({"customer_id": customer_id, "status": "ok"})

    return app

StandaloneApplication(factory, gunicorn_options("127.0.0.1", int(sys.argv[1]), int(sys.argv[2]))).run()
"""


def make_state(home: Path, n: int) -> str:
    settings = load_settings(home, environ={})
    rng = random.Random(7)
    products = [product_row(f"P{i:04d}", price=Decimal(rng.randint(100, 20000)) / 100) for i in range(200)]
    rows = [_profile(i, rng) for i in range(n)]
    recs = {
        f"c{i:06d}": [(f"P{rng.randrange(200):04d}", 0.5, "association") for _ in range(3)] for i in range(0, n, 10)
    }
    publish_rows(settings, rows, products, recs)
    key, _ = create_key(settings, "bench", ["profiles:read"])
    return key


def _profile(i: int, rng: random.Random, suffix: str = "") -> tuple:
    from datetime import datetime

    viewed = [f"P{rng.randrange(200):04d}" for _ in range(rng.randint(0, 5))]
    return profile_row(
        f"c{i:06d}",
        email=f"user{i}@example.com",
        first_name=f"First{i}{suffix}",
        last_name=f"Last{i}",
        country="US",
        locale="en-US",
        timezone="America/New_York",
        marketing_consent=bool(i % 2),
        first_seen_at=datetime(2026, 1, 1),
        last_seen_at=datetime(2026, 11, 1, 12, 30),
        orders_count=i % 7,
        lifetime_value=Decimal(rng.randint(0, 500000)) / 100,
        last_order_at=datetime(2026, 10, 1),
        lifecycle_stage="active",
        recently_viewed=viewed,
        cart=viewed[:1],
        top_categories=["misc"],
        recommendations=[f"P{rng.randrange(200):04d}" for _ in range(3)],
    )


def wrk(url: str, script: str, seconds: int, connections: int, env: dict[str, str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    proc = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s", "-s", handle.name, url],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    os.unlink(handle.name)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {proc.stdout}\n{proc.stderr}")
    out = json.loads(line[len("RESULT ") :])
    out["rps"] = round(out["requests"] / (out["duration_us"] / 1e6), 1)
    out["failed"] = out["connect"] + out["read"] + out["write"] + out["status"] + out["timeout"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sendtime-bench-api-"))
    t0 = time.perf_counter()
    key = make_state(home, args.profiles)
    publish_seconds = time.perf_counter() - t0
    env = {"BENCH_N": str(args.profiles)}

    bare_port = free_port()
    bare = subprocess.Popen(
        [sys.executable, "-c", BARE_APP, str(bare_port), str(args.workers)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = ApiServer(home, workers=args.workers).start()
    result: dict = {
        "profiles": args.profiles,
        "workers": args.workers,
        "seconds_per_run": args.seconds,
        "connections": 16,
        "publish_seconds": round(publish_seconds, 1),
    }
    try:
        _wait(f"http://127.0.0.1:{bare_port}/bare/x")
        bare_url, api_url = f"http://127.0.0.1:{bare_port}", server.url
        wrk(api_url, LUA_GET, 2, 16, {**env, "BENCH_KEY": key, "BENCH_PREFIX": "/api/v1/customers/"})  # warm
        runs = {"bare": [], "api": []}
        for _ in range(args.pairs):  # alternating pairs: a load change hits both sides of a pair
            runs["bare"].append(wrk(bare_url, LUA_GET, args.seconds, 16, {**env, "BENCH_PREFIX": "/bare/"}))
            runs["api"].append(
                wrk(api_url, LUA_GET, args.seconds, 16, {**env, "BENCH_KEY": key, "BENCH_PREFIX": "/api/v1/customers/"})
            )
        bare_rps = statistics.median(r["rps"] for r in runs["bare"])
        api_rps = statistics.median(r["rps"] for r in runs["api"])
        pair_ratios = [a["rps"] / b["rps"] for a, b in zip(runs["api"], runs["bare"])]
        result["get"] = {
            "bare_rps": round(bare_rps),
            "api_rps": round(api_rps),
            "ratio": round(statistics.median(pair_ratios), 3),
            "pair_ratios": [round(r, 3) for r in pair_ratios],
            "api_p99_ms": max(r["p99_us"] for r in runs["api"]) / 1000,
            "api_p50_ms": max(r["p50_us"] for r in runs["api"]) / 1000,
            "bare_p99_ms": max(r["p99_us"] for r in runs["bare"]) / 1000,
            "failed": sum(r["failed"] for r in runs["api"]),
            "runs": runs,
        }
        # service latency without queueing: one request in flight per worker
        calm_bare = wrk(bare_url, LUA_GET, args.seconds, args.workers, {**env, "BENCH_PREFIX": "/bare/"})
        calm_api = wrk(
            api_url,
            LUA_GET,
            args.seconds,
            args.workers,
            {**env, "BENCH_KEY": key, "BENCH_PREFIX": "/api/v1/customers/"},
        )
        result["get_one_in_flight_per_worker"] = {
            "connections": args.workers,
            "bare_rps": calm_bare["rps"],
            "api_rps": calm_api["rps"],
            "bare_p50_ms": calm_bare["p50_us"] / 1000,
            "bare_p99_ms": calm_bare["p99_us"] / 1000,
            "api_p50_ms": calm_api["p50_us"] / 1000,
            "api_p99_ms": calm_api["p99_us"] / 1000,
            "failed": calm_api["failed"],
        }
        batch = wrk(
            api_url,
            LUA_BATCH,
            args.seconds,
            args.workers,
            {**env, "BENCH_KEY": key, "BENCH_PREFIX": "/api/v1/customers/batch"},
        )
        result["batch_1000"] = {
            "connections": args.workers,
            "rps": batch["rps"],
            "p50_ms": batch["p50_us"] / 1000,
            "p95_ms": batch["p95_us"] / 1000,
            "p99_ms": batch["p99_us"] / 1000,
            "failed": batch["failed"],
        }
        result["during_publishes"] = _under_publishes(home, api_url, key, env, args)
    finally:
        server.stop()
        bare.terminate()
        bare.wait(timeout=15)
    result["cpu_per_request_us"] = cpu_per_request(home, key, args.profiles)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


def _under_publishes(home: Path, api_url: str, key: str, env: dict[str, str], args: argparse.Namespace) -> dict:
    """GET load for 2x the run length while 10 publishes of 10,000 changed profiles each commit."""
    settings = load_settings(home, environ={})
    seconds = max(args.seconds * 2, 12)
    rng = random.Random(11)
    changed = [[_profile(i, rng, suffix=f"v{p}") for i in rng.sample(range(args.profiles), 10_000)] for p in range(10)]
    versions: list[int] = []
    publish_durations: list[float] = []

    def publisher() -> None:
        time.sleep(1.0)
        for rows in changed:
            started = time.perf_counter()
            versions.append(publish_rows(settings, rows))
            publish_durations.append(time.perf_counter() - started)
            time.sleep(max(0.0, (seconds - 3) / 10 - publish_durations[-1]))

    thread = threading.Thread(target=publisher)
    thread.start()
    run = wrk(api_url, LUA_GET, seconds, 16, {**env, "BENCH_KEY": key, "BENCH_PREFIX": "/api/v1/customers/"})
    thread.join()
    return {
        "publishes": len(versions),
        "profiles_per_publish": 10_000,
        "rps": run["rps"],
        "p99_ms": run["p99_us"] / 1000,
        "failed": run["failed"],
        "requests": run["requests"],
        "publish_seconds_max": round(max(publish_durations), 2),
        "seconds": seconds,
    }


def cpu_per_request(home: Path, key: str, n: int, requests: int = 5000) -> dict:
    """CPU time (process_time, so other processes on the machine do not count) per request of the
    WSGI apps called in-process: bare Flask; the API's GET profile (answered by serving/fastpath.py);
    the same request through the Flask view (a query string routes it there); and that Flask path
    without serving.metrics' request hooks. No HTTP server or client: the apps' own cost."""
    from flask import Flask, jsonify
    from werkzeug.test import EnvironBuilder

    from serving.app import create_app

    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-prom-"))
    bare = Flask("bare")
    bare.add_url_rule(
        "/bare/<customer_id>", "bare", lambda customer_id: jsonify({"customer_id": customer_id, "status": "ok"})
    )
    api = create_app(load_settings(home, environ={}))
    rng = random.Random(3)
    ids = [f"c{rng.randrange(n):06d}" for _ in range(1000)]
    auth = {"Authorization": f"Bearer {key}"}

    def envs(template: str) -> list[dict]:
        return [EnvironBuilder(path=template.format(i), headers=auth).get_environ() for i in ids]

    api_envs, flask_envs = envs("/api/v1/customers/{}"), envs("/api/v1/customers/{}?via=flask")
    bare_envs = envs("/bare/{}")

    def per_request(app: Flask, environs: list[dict]) -> float:
        start = time.process_time()
        for i in range(requests):
            for _chunk in app.wsgi_app(dict(environs[i % len(environs)]), lambda *a, **k: None):
                pass
        return (time.process_time() - start) / requests * 1e6

    saved = os.dup(2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # the API's request log lines
    try:
        out = {"bare": [], "api": [], "api_flask_path": [], "api_flask_path_without_request_metrics": []}
        for _ in range(3):
            out["bare"].append(per_request(bare, bare_envs))
            out["api"].append(per_request(api, api_envs))
            out["api_flask_path"].append(per_request(api, flask_envs))
        for hooks in ("before_request_funcs", "after_request_funcs"):
            funcs = getattr(api, hooks)
            funcs[None] = [f for f in funcs.get(None, []) if f.__module__ != "serving.metrics"]
        for _ in range(3):
            out["api_flask_path_without_request_metrics"].append(per_request(api, flask_envs))
    finally:
        os.dup2(saved, 2)
    return {k: round(min(v), 1) for k, v in out.items()}


def _wait(url: str) -> None:
    import requests

    for _ in range(100):
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


if __name__ == "__main__":
    main()
