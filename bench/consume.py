"""Kafka consume throughput (records per CPU-second, validation included) against `sendtime ingest`
of the same records from JSONL files, side by side; then the consumer's RSS over a longer run.

    .venv/bin/python -m bench.consume [--events 1000000] [--repeat 2] [--rss-seconds 60] [--rss-rate 5000]

1. Starts a Kafka broker of its own (tests/helpers/kafka_stack.py: KRaft, free ports, temp dir).
2. Generates `--events` events with `pipeline.generate` (the generator's mess included) and
   produces every line, keyed by event_id, to a 3-partition topic before anything is measured.
3. In child processes, alternately: `sendtime ingest events FILES...` into a fresh home, and
   `sendtime consume` (default flush settings) into another fresh home, stopped with SIGTERM once
   the lake's offset ranges cover the topic. Each child's CPU time (user + system, every thread:
   librdkafka's included) and peak RSS come from wait4(); the parent polls the lake, which costs
   the child nothing. Records per CPU-second is the one-core rate on a shared machine.
   Both are whole CLI processes, so each rate includes a fixed start-up cost (imports, DuckDB,
   joining the group); it is measured on empty input (an empty file, an empty topic) and the
   net rate, records / (CPU - fixed), is printed beside the gross one.
4. RSS over time: a consumer runs for `--rss-seconds` while the parent produces `--rss-rate`
   events a second; its RSS (/proc/PID/status VmRSS) is sampled every second.
Prints Markdown tables and the load average (uptime) before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "bench.events"
EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"]*)"')


@dataclass
class Run:
    kind: str
    records: int
    wall: float
    cpu: float
    max_rss_mb: float

    @property
    def per_cpu_second(self) -> float:
        return self.records / self.cpu if self.cpu else 0.0


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def child_env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SENDTIME_HOME": str(home), "SENDTIME_LOG_LEVEL": "WARNING", **extra}


class PeakRss(threading.Thread):
    """The child's VmHWM (peak RSS of its own address space) sampled every 50 ms until it exits.
    Not wait4's ru_maxrss: a forked child's starts at the parent's RSS at fork, and this parent
    holds the generated data."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.done = pid, 0, threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                return
            time.sleep(0.05)


def wait_rusage(proc: subprocess.Popen, peak: PeakRss) -> tuple[int, float, float]:
    """(exit code, CPU seconds of every thread, peak RSS MB) of one child."""
    _, status, usage = os.wait4(proc.pid, 0)
    peak.done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, peak.peak_kb / 1024


def produce_lines(bootstrap: str, topic: str, files: list[Path]) -> int:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 500_000})
    count = 0
    for path in files:
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            key = EVENT_ID.search(line)
            while True:
                try:
                    producer.produce(topic, line, key=key.group(1) if key else None)
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
    assert producer.flush(120) == 0
    return count


def run_ingest(home: Path, files: list[Path]) -> Run:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ingest", "events", *map(str, files), "--json"],
                            cwd=ROOT, env=child_env(home), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = PeakRss(proc.pid)
    out = proc.stdout.read() if proc.stdout else b""
    code, cpu, rss = wait_rusage(proc, peak)
    assert code == 0, code
    report = json.loads(out)
    return Run("file ingest (sendtime ingest, JSONL)", report["received"], time.perf_counter() - started, cpu, rss)


def covered(home: Path, ends: dict[int, int]) -> bool:
    from pipeline.config import load_settings
    from pipeline.consume import lake_offsets

    nxt: dict[int, int] = {}
    for batch in lake_offsets(load_settings(home, environ={}), ["events"]):
        for p, (_, last) in batch["partitions"].items():
            nxt[int(p)] = max(nxt.get(int(p), 0), last + 1)
    return all(nxt.get(p, 0) >= end for p, end in ends.items())


def run_consume(home: Path, bootstrap: str, ends: dict[int, int], group: str, topic: str = TOPIC,
                linger: float = 0.0) -> Run:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "consume", "--bootstrap-servers", bootstrap,
                             "--topics", f"events={topic}"], cwd=ROOT,
                            env=child_env(home, SENDTIME_KAFKA_GROUP_ID=group),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    peak = PeakRss(proc.pid)
    while not covered(home, ends):
        if proc.poll() is not None:
            raise RuntimeError(f"consume exited {proc.returncode}")
        time.sleep(0.25)
    time.sleep(linger)
    wall = time.perf_counter() - started
    proc.send_signal(signal.SIGTERM)
    code, cpu, rss = wait_rusage(proc, peak)
    assert code == 0, code
    return Run("consume (sendtime consume, Kafka)", sum(ends.values()), wall, cpu, rss)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_over_time(broker, workdir: Path, seconds: float, rate: float, lines: list[bytes]) -> list[tuple[float, float]]:
    from confluent_kafka import Producer

    topic = "bench.rss"
    broker.create_topic(topic, partitions=3)
    home = workdir / "rss-home"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "consume", "--bootstrap-servers", broker.bootstrap,
                             "--topics", f"events={topic}"], cwd=ROOT,
                            env=child_env(home, SENDTIME_KAFKA_GROUP_ID="bench-rss"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    sent, next_sample = 0, 0.0
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                line = lines[sent % len(lines)]
                producer.produce(topic, line)
                sent += 1
            producer.poll(0)
            if elapsed >= next_sample:
                samples.append((round(elapsed, 1), rss_mb(proc.pid)))
                next_sample += 1.0
            time.sleep(0.01)
        producer.flush(60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs of each kind")
    parser.add_argument("--rss-seconds", type=float, default=60.0)
    parser.add_argument("--rss-rate", type=float, default=5000.0, help="events a second during the RSS run")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from pipeline.generate import generate
    from tests.helpers.kafka_stack import KafkaBroker, ensure_jars

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sendtime-bench-consume-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"load before: {uptime()}", flush=True)
    files = generate(workdir / "data", customers=max(2000, args.events // 50), events=args.events, products=300,
                     seed=11)["events"]
    classpath, _ = ensure_jars()
    broker = KafkaBroker(workdir / "kafka", classpath)
    t0 = time.monotonic()
    broker.start()
    startup = time.monotonic() - t0
    try:
        broker.create_topic(TOPIC, partitions=3)
        produced = produce_lines(broker.bootstrap, TOPIC, files)
        ends = broker.end_offsets(TOPIC)
        assert sum(ends.values()) == produced
        empty = workdir / "empty.jsonl"
        empty.write_bytes(b"")
        broker.create_topic("bench.empty", partitions=3)
        fixed = {"file": run_ingest(workdir / "fixed-ingest", [empty]).cpu,
                 "consume": run_consume(workdir / "fixed-consume", broker.bootstrap, {}, group="bench-fixed",
                                        topic="bench.empty", linger=3.0).cpu}
        print(f"  fixed start-up CPU: ingest {fixed['file']:.2f}s, consume {fixed['consume']:.2f}s", flush=True)
        runs: list[Run] = []
        for i in range(args.repeat):
            for kind in ("ingest", "consume"):
                home = workdir / f"{kind}-{i}"
                shutil.rmtree(home, ignore_errors=True)
                run = (run_ingest(home, files) if kind == "ingest"
                       else run_consume(home, broker.bootstrap, ends, group=f"bench-{i}"))
                runs.append(run)
                print(f"  {run.kind}: {run.records} records, wall {run.wall:.2f}s, CPU {run.cpu:.2f}s, "
                      f"{run.per_cpu_second:,.0f}/CPU-s, peak RSS {run.max_rss_mb:.0f} MB", flush=True)
        lines = [line for f in files for line in f.read_bytes().splitlines()[:20_000] if line.strip()]
        samples = rss_over_time(broker, workdir, args.rss_seconds, args.rss_rate, lines) if args.rss_seconds else []
    finally:
        broker.stop(hard=True)
    print(f"load after: {uptime()}\n")
    print(f"broker start-up (format + start + ready): {startup:.1f}s\n")
    print("| run | records | wall s | CPU s | records per CPU-s | net of start-up | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    net = {}
    for r in runs:
        key = "file" if r.kind.startswith("file") else "consume"
        rate = r.records / max(r.cpu - fixed[key], 1e-9)
        net[key] = max(net.get(key, 0.0), rate)
        print(f"| {r.kind} | {r.records:,} | {r.wall:.2f} | {r.cpu:.2f} | {r.per_cpu_second:,.0f} | {rate:,.0f} "
              f"| {r.max_rss_mb:.0f} |")
    best = {k: max(r.per_cpu_second for r in runs if r.kind.startswith(k)) for k in ("file", "consume")}
    ratio = best["consume"] / best["file"] if best["file"] else 0.0
    print(f"\nbest consume {best['consume']:,.0f} vs file ingest {best['file']:,.0f} records per CPU-s: "
          f"ratio {ratio:.2f}; net of start-up {net['consume']:,.0f} vs {net['file']:,.0f}: "
          f"ratio {net['consume'] / net['file']:.2f} (targets: >= 0.7 and >= 70,000)")
    if samples:
        rss = [mb for _, mb in samples]
        print(f"\nconsumer RSS over {args.rss_seconds:.0f}s at {args.rss_rate:,.0f} events/s: first {rss[0]:.0f} MB, "
              f"after 10 s {rss[min(10, len(rss) - 1)]:.0f} MB, max {max(rss):.0f} MB, last {rss[-1]:.0f} MB")
        print("samples (s, MB): " + ", ".join(f"{t:.0f}:{mb:.0f}" for t, mb in samples[:: max(1, len(samples) // 12)]))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
