"""Freshness through Kafka: an event produced to Kafka -> visible in the API, and a CDC update
committed in PostgreSQL -> visible in the API; p50, p95, max, and where the time goes.

    .venv/bin/python -m bench.freshness_kafka [--rate 1000] [--seconds 300] [--every 1s]
        [--probe-every 0.5] [--cdc-every 2] [--no-cdc] [--out bench/out/freshness_kafka.json]

Real parts only, each its own process, as in production: a Kafka broker (KRaft), PostgreSQL 15 with
the `shop` database, Kafka Connect with Debezium's connector configured from
deploy/kafka/debezium-postgres-shop.json (tests/helpers/kafka_stack.py starts all three), then on a
home with a small published data set: `sendtime consume` (default flush settings), `sendtime
schedule --every <every>` and `sendtime serve` (gunicorn, 2 workers).

- Events: `--rate` events a second are produced to a 3-partition topic for `--seconds` (product and
  page views of the sample's customers). Every `--probe-every` seconds one of them is a probe: a
  product_view of a brand-new customer id, visible once `POST /customers/batch` finds that customer
  (a profile exists only after a cycle built, validated and published it). Latency = visible - the
  produce() call.
- CDC: every `--cdc-every` seconds an UPDATE of a CRM customer's first_name is committed in
  PostgreSQL; visible once the API serves the new name. Latency = visible - the commit's return.
- Where the time goes, per probe: the lake batch that holds it (its file's mtime: when the
  consumer's flush renamed it into place), the published version that made it visible (the newest
  one live when the probe was first seen) and that cycle's run-log row. Segments: produce ->
  Debezium (CDC: the change event's ts_ms - the commit), -> lake (Kafka, the consumer's poll and
  flush), lake -> cycle start (waiting for the next cycle), the cycle's phases (transform, read,
  validate, publish, rest), published -> seen (the poll interval and the API).
- The API is polled every 0.1 s. Reports the load average before and after (`uptime`), the
  producer's achieved rate, the consumer's lag and rate from its own state (the `/metrics` source).

The scheduler interval is passed through as given: `--every 0s` once continuous scheduling lands.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]

EVENTS_TOPIC = "bench.fresh.events"
CDC_CUSTOMERS = 50  # CRM customers whose first_name the CDC probes update, round robin
POLL_SECONDS = 0.1
SEGMENTS = (
    "to_debezium",
    "to_lake",
    "wait_for_cycle",
    "transform",
    "read",
    "validate",
    "publish",
    "cycle_other",
    "to_seen",
)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p95": round(percentile(values, 0.95), 3),
        "max": round(max(values), 3),
    }


def epoch(text: str | None) -> float | None:
    """A store timestamp (ISO-8601 UTC, `Z` or naive) -> unix time."""
    if not text:
        return None
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@dataclass
class Probe:
    kind: str  # "event" or "cdc"
    key: str  # the customer id
    expect: str | None  # CDC: the first_name the API must show
    sent: float  # unix time: produce() call, or the commit's return
    seen: float | None = None
    segments: dict[str, float] = field(default_factory=dict)


class Processes:
    """The sendtime processes of the bench, each in its own session, stderr to a log file."""

    def __init__(self, home: Path, logs: Path) -> None:
        self.home, self.logs, self.procs = home, logs, {}

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            env={**os.environ, "SENDTIME_HOME": str(self.home), **(env or {})},
        )
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def sendtime(home: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "SENDTIME_HOME": str(home)},
        check=True,
    ).stdout


def wait_api(base: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit("the API did not start")


class EventLoad(threading.Thread):
    """`rate` events a second in slices of 10 ms, one probe every `probe_every` seconds."""

    def __init__(self, bootstrap: str, rate: float, seconds: float, probe_every: float, tag: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.rate, self.seconds, self.probe_every, self.tag = bootstrap, rate, seconds, probe_every, tag
        self.probes: list[Probe] = []
        self.produced = 0
        self.errors = 0
        self.elapsed = 0.0
        self.lock = threading.Lock()

    def run(self) -> None:
        from confluent_kafka import Producer

        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000}
        )

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                self.errors += 1

        rng = random.Random(3)
        started = time.monotonic()
        next_probe = 0.0
        n = 0
        while (elapsed := time.monotonic() - started) < self.seconds:
            due = int(elapsed * self.rate)
            while n < due:
                n += 1
                event = {
                    "event_id": f"kf-{self.tag}-{n}",
                    "event_type": rng.choice(("product_view", "page_view")),
                    "occurred_at": int(time.time() * 1000) - 500,
                    "customer_id": f"C{rng.randint(1, 500):07d}",
                    "product_id": f"P{rng.randint(1, 40):05d}",
                }
                probe = None
                if elapsed >= next_probe:
                    probe = Probe("event", f"PROBE-{self.tag}-{len(self.probes):05d}", None, 0.0)
                    event.update(customer_id=probe.key, event_type="product_view")
                    next_probe += self.probe_every
                value = json.dumps(event).encode()
                while True:
                    try:
                        producer.produce(EVENTS_TOPIC, value, key=event["customer_id"].encode(), on_delivery=delivered)
                        break
                    except BufferError:
                        producer.poll(0.01)
                if probe is not None:
                    probe.sent = time.time()
                    with self.lock:
                        self.probes.append(probe)
            producer.poll(0)
            time.sleep(0.01)
        self.elapsed = time.monotonic() - started
        producer.flush(60)
        self.produced = n


class CdcLoad(threading.Thread):
    """An UPDATE of a CRM customer's first_name every `every` seconds, committed on its own."""

    def __init__(self, pg: Any, seconds: float, every: float) -> None:
        super().__init__(daemon=True)
        self.pg, self.seconds, self.every = pg, seconds, every
        self.probes: list[Probe] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.pg.port, user="postgres", dbname="shop", autocommit=True
        ) as conn:
            started = time.monotonic()
            i = 0
            while time.monotonic() - started < self.seconds:
                key = f"KCDC{i % CDC_CUSTOMERS:04d}"
                name = f"v{i:05d}"
                conn.execute(
                    "UPDATE customers SET first_name = %s, updated_at = now() WHERE customer_id = %s", (name, key)
                )
                with self.lock:
                    self.probes.append(Probe("cdc", key, name, time.time()))
                i += 1
                time.sleep(max(0.0, started + i * self.every - time.monotonic()))


def poll_visible(base: str, headers: dict[str, str], loads: list[Any], stop: threading.Event) -> None:
    """Marks each probe's `seen` at the first poll that finds it in the API."""
    session = requests.Session()
    while not stop.is_set():
        pending: list[Probe] = []
        for load in loads:
            with load.lock:
                pending += [p for p in load.probes if p.seen is None]
        # the CDC probe of a customer is only checked when it is that customer's newest update
        newest: dict[str, Probe] = {}
        for p in pending:
            if p.kind == "cdc":
                newest[p.key] = p
        events = [p for p in pending if p.kind == "event"]
        for chunk in (events[i : i + 1000] for i in range(0, len(events), 1000)):
            resp = session.post(
                f"{base}/customers/batch",
                headers=headers,
                timeout=10,
                json={"customer_ids": [p.key for p in chunk], "fields": ["customer_id"]},
            )
            now = time.time()
            if resp.status_code == 200:
                found = {f.get("customer_id") for f in resp.json().get("found", [])}
                for p in chunk:
                    if p.key in found:
                        p.seen = now
        if newest:
            resp = session.post(
                f"{base}/customers/batch",
                headers=headers,
                timeout=10,
                json={"customer_ids": list(newest), "fields": ["first_name"]},
            )
            now = time.time()
            if resp.status_code == 200:
                for f in resp.json().get("found", []):
                    p = newest.get(f.get("customer_id"))
                    if p is not None and f.get("first_name") == p.expect:
                        p.seen = now
        time.sleep(POLL_SECONDS)


def lake_batches(home: Path, probes: list[Probe]) -> dict[tuple[str, str | None], dict[str, Any]]:
    """(customer id, expected first name) -> {"landed": file mtime, "ts_ms": CDC change time}."""
    import duckdb

    out: dict[tuple[str, str | None], dict[str, Any]] = {}
    con = duckdb.connect()
    try:
        for source, where, cols in (
            ("events", "customer_id like 'PROBE-%'", "customer_id, null, null"),
            ("customers", "customer_id like 'KCDC%'", "customer_id, first_name, ts_ms"),
        ):
            files = [str(f) for f in (home / "lake" / source).glob("ingest_date=*/*.parquet")]
            if not files:
                continue
            rows = con.execute(
                f"select {cols}, _batch_id from read_parquet($f, union_by_name = true) where {where}", {"f": files}
            ).fetchall()
            paths = {Path(f).stem: f for f in files}
            for key, name, ts_ms, batch_id in rows:
                landed = os.stat(paths[batch_id]).st_mtime if batch_id in paths else None
                slot = out.setdefault((key, name), {"landed": landed, "ts_ms": ts_ms})
                if landed is not None and (slot["landed"] is None or landed < slot["landed"]):
                    slot.update(landed=landed, ts_ms=ts_ms)
    finally:
        con.close()
    return out


def attribute(probes: list[Probe], home: Path) -> None:
    """Each seen probe's segments (see the module docstring)."""
    con = sqlite3.connect(home / "online.sqlite")
    try:
        versions = [
            (epoch(p), c)
            for p, c in con.execute("select published_at, cycle_id from published_versions order by version")
        ]
        runs = {
            r[0]: (epoch(r[1]), json.loads(r[2] or "{}"))
            for r in con.execute("select cycle_id, started_at, phases from runs")
        }
    finally:
        con.close()
    landed = lake_batches(home, probes)
    for p in probes:
        if p.seen is None:
            continue
        lake = landed.get((p.key, p.expect))
        live = [(at, cycle) for at, cycle in versions if at is not None and at <= p.seen]
        if lake is None or lake["landed"] is None or not live:
            continue
        published_at, cycle_id = live[-1]
        cycle_start, phases = runs.get(cycle_id, (None, {}))
        if cycle_start is None:
            continue
        seg = p.segments
        if p.kind == "cdc" and lake["ts_ms"] is not None:
            seg["to_debezium"] = lake["ts_ms"] / 1000 - p.sent
            seg["to_lake"] = lake["landed"] - lake["ts_ms"] / 1000
        else:
            seg["to_lake"] = lake["landed"] - p.sent
        seg["wait_for_cycle"] = cycle_start - lake["landed"]
        for phase in ("transform", "read", "validate", "publish"):
            seg[phase] = float(phases.get(phase, 0.0))
        seg["cycle_other"] = (
            published_at - cycle_start - sum(seg[ph] for ph in ("transform", "read", "validate", "publish"))
        )
        seg["to_seen"] = p.seen - published_at


def consumer_state(home: Path) -> dict[str, Any]:
    con = sqlite3.connect(home / "online.sqlite")
    try:
        row = con.execute("select detail from kafka_consumers order by updated_at desc limit 1").fetchone()
    except sqlite3.Error:
        return {}
    finally:
        con.close()
    return json.loads(row[0]) if row else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events a second, probes included")
    parser.add_argument("--seconds", type=float, default=300.0, help="how long the load lasts")
    parser.add_argument("--every", default="1s", help="`sendtime schedule --every` (0s: continuous, once it exists)")
    parser.add_argument("--probe-every", type=float, default=0.5)
    parser.add_argument("--cdc-every", type=float, default=2.0)
    parser.add_argument("--no-cdc", action="store_true", help="events only (no PostgreSQL, no Connect)")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, home)")
    args = parser.parse_args()

    from tests.helpers.kafka_stack import KafkaBroker, KafkaConnect, Postgres, ensure_jars, free_port
    from tests.test_cycle import load_sample

    load_before = uptime()
    print(f"load before: {load_before}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="sendtime-bench-freshness-kafka-"))
    work.chmod(0o755)  # the postgres user must reach its folder
    home, logs = work / "home", work / "logs"
    home.mkdir()
    logs.mkdir()
    classpath, plugins = ensure_jars()
    broker = KafkaBroker(work / "kafka", classpath)
    pg = connect = None
    procs = Processes(home, logs)
    stop = threading.Event()
    try:
        broker.start()
        broker.create_topic(EVENTS_TOPIC, partitions=3)
        topics = f"events={EVENTS_TOPIC}"
        if not args.no_cdc:
            pg = Postgres(work / "postgres").start()
            values = ",".join(
                f"('KCDC{i:04d}', 'kcdc{i}@example.com', 'v-init', 'GB', true)" for i in range(CDC_CUSTOMERS)
            )
            pg.psql(
                f"INSERT INTO customers (customer_id, email, first_name, country, marketing_consent) VALUES {values};",
                database="shop",
            )
            connect = KafkaConnect(work / "connect", classpath, plugins, broker.bootstrap).start()
            config = json.loads((ROOT / "deploy" / "kafka" / "debezium-postgres-shop.json").read_text())["config"]
            config.update(
                {
                    "database.hostname": "127.0.0.1",
                    "database.port": str(pg.port),
                    "database.password": "cdc-password",
                    "database.sslmode": "disable",
                    "topic.creation.default.replication.factor": "1",
                }
            )
            connect.create_connector("shop-postgres", config)
            topics += ",customers=shop.public.customers,orders=shop.public.orders,order_items=shop.public.order_items"
        load_sample(home, work / "gen", customers=args.customers, events=20_000)
        sendtime(home, "run")
        key = json.loads(sendtime(home, "keys", "create", "--name", "bench", "--scopes", "profiles:read", "--json"))[
            "key"
        ]
        port = free_port()
        procs.start("consume", "consume", "--bootstrap-servers", broker.bootstrap, "--topics", topics)
        procs.start("schedule", "schedule", "--every", args.every)
        procs.start("serve", "serve", "--port", str(port), "--workers", "2")
        base = f"http://127.0.0.1:{port}/api/v1"
        headers = {"Authorization": f"Bearer {key}"}
        wait_api(base)
        if not args.no_cdc:  # the CRM snapshot must be served before the CDC probes start
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                found = requests.post(
                    f"{base}/customers/batch",
                    headers=headers,
                    timeout=10,
                    json={"customer_ids": [f"KCDC{i:04d}" for i in range(CDC_CUSTOMERS)], "fields": ["first_name"]},
                )
                if found.status_code == 200 and len(found.json()["found"]) == CDC_CUSTOMERS:
                    break
                time.sleep(1)
            else:
                raise SystemExit("the Debezium snapshot never reached the API")
        print(f"stack ready; load now: {uptime()}", flush=True)

        tag = str(int(time.time()))
        events = EventLoad(broker.bootstrap, args.rate, args.seconds, args.probe_every, tag)
        loads: list[Any] = [events]
        if not args.no_cdc:
            loads.append(CdcLoad(pg, args.seconds, args.cdc_every))
        poller = threading.Thread(target=poll_visible, args=(base, headers, loads, stop), daemon=True)
        for thread in (*loads, poller):
            thread.start()
        lag_max, lag_samples = 0, []
        while any(t.is_alive() for t in loads):
            state = consumer_state(home)
            lag = sum(p[3] for p in state.get("partitions", []) if p[0] == EVENTS_TOPIC)
            lag_samples.append(lag)
            lag_max = max(lag_max, lag)
            time.sleep(1)
        load_end = uptime()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(p.seen is None for load in loads for p in load.probes):
            time.sleep(0.5)
        stop.set()
        poller.join(10)
    finally:
        stop.set()
        procs.stop()
        for part in (connect, pg):
            if part is not None:
                part.stop()
        broker.stop(hard=True)

    probes = [p for load in loads for p in load.probes]
    attribute(probes, home)
    report = json.loads(sendtime(home, "runs", "--limit", "10000", "--json"))
    runs = report["runs"]
    done = [r for r in runs if r["status"] == "success" and r.get("phases")]
    out: dict[str, Any] = {
        "load_before": load_before,
        "load_at_end_of_load": load_end,
        "every": args.every,
        "rate_target": args.rate,
        "rate_achieved": round(events.produced / events.elapsed, 1) if events.elapsed else 0,
        "seconds": args.seconds,
        "produce_errors": events.errors,
        "consumer_lag_max": lag_max,
        "consumer_lag_p50": statistics.median(lag_samples) if lag_samples else None,
        "cycles": len(runs),
        "cycles_failed": sum(r["status"] != "success" for r in runs),
        "cycle_seconds": summary([sum(r["phases"].values()) for r in done]),
        "kafka_topics": report["kafka_topics"],
    }
    for kind in ("event", "cdc"):
        mine = [p for p in probes if p.kind == kind]
        if not mine:
            continue
        seen = [p for p in mine if p.seen is not None]
        out[kind] = {
            "probes": len(mine),
            "seen": len(seen),
            "latency": summary([p.seen - p.sent for p in seen]),
            "segments": {
                s: summary([p.segments[s] for p in seen if s in p.segments])
                for s in SEGMENTS
                if any(s in p.segments for p in seen)
            },
        }
    text = json.dumps(out, indent=2)
    print(text)
    print(markdown(out))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.keep:
        print(f"work folder kept: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def markdown(out: dict[str, Any]) -> str:
    lines = ["", "| path | probes seen | p50 s | p95 s | max s |", "|---|---|---|---|---|"]
    for kind, label in (("event", "event produced -> API"), ("cdc", "CDC commit -> API")):
        if kind in out:
            lat = out[kind]["latency"]
            lines.append(
                f"| {label} | {out[kind]['seen']}/{out[kind]['probes']} | {lat['p50']} | {lat['p95']} | {lat['max']} |"
            )
    lines += [
        "",
        "| segment | " + " | ".join(f"{k} p50 / p95 / max" for k in ("event", "cdc") if k in out) + " |",
        "|---|" + "---|" * sum(k in out for k in ("event", "cdc")),
    ]
    for seg in SEGMENTS:
        cells = []
        for kind in ("event", "cdc"):
            if kind in out:
                s = out[kind]["segments"].get(seg)
                cells.append(f"{s['p50']} / {s['p95']} / {s['max']}" if s and s["n"] else "-")
        lines.append(f"| {seg} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
