"""Kafka consume throughput (records per CPU-second, validation included) against `sendtime ingest`
of the same records from JSONL files, side by side; then the consumer's RSS over a longer run.

    .venv/bin/python -m bench.consume [--events 1000000] [--repeat 2] [--rss-seconds 60] [--rss-rate 5000]
    .venv/bin/python -m bench.consume --rss-only --rss-seconds 1800 --rss-rate 5000   # RSS over 30 minutes
    .venv/bin/python -m bench.consume --rss-only --rss-seconds 1800 --rss-tree before=/tmp/sendtime-0d4b66d

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
   events a second; its RSS (/proc/PID/status VmRSS) is sampled every second, and summarised per
   window of `--rss-window` seconds (min, median, max) with the slope of a least-squares line
   through the samples after the first window (MB per hour: flat is ~0). `--rss-only` skips the
   throughput runs (and generates only the events the RSS run cycles through). `--rss-tree
   LABEL=DIR` runs the consumer of another source tree (e.g. `git archive` of a baseline commit)
   beside this checkout's, on the same topic, each with its own home and group.
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

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
        }
    )
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "ingest", "events", *map(str, files), "--json"],
        cwd=ROOT,
        env=child_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
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


def run_consume(
    home: Path, bootstrap: str, ends: dict[int, int], group: str, topic: str = TOPIC, linger: float = 0.0
) -> Run:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "consume",
            "--bootstrap-servers",
            bootstrap,
            "--topics",
            f"events={topic}",
        ],
        cwd=ROOT,
        env=child_env(home, SENDTIME_KAFKA_GROUP_ID=group),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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


def rss_over_time(
    broker, workdir: Path, seconds: float, rate: float, lines: list[bytes], trees: list[tuple[str, Path]]
) -> dict[str, list[tuple[float, float]]]:
    """One consumer per source tree, side by side on the same topic (each its own home and group),
    so that a baseline and a change see the same input and the same machine noise."""
    from confluent_kafka import Producer

    topic = "bench.rss"
    broker.create_topic(topic, partitions=3)
    procs = {}
    for i, (label, tree) in enumerate(trees):
        home = workdir / f"rss-home-{i}"
        procs[label] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "consume",
                "--bootstrap-servers",
                broker.bootstrap,
                "--topics",
                f"events={topic}",
            ],
            cwd=tree,
            env=child_env(home, SENDTIME_KAFKA_GROUP_ID=f"bench-rss-{i}", PYTHONPATH=str(tree)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in procs}
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
                for label, proc in procs.items():
                    samples[label].append((round(elapsed, 1), rss_mb(proc.pid)))
                next_sample += 1.0
            time.sleep(0.01)
        producer.flush(60)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(timeout=60)
    return samples


def rss_report(samples: list[tuple[float, float]], window: float) -> str:
    """Per window: min / median / max MB; and the slope (MB per hour) after the first window."""
    import statistics

    lines = ["| window (s) | min MB | median MB | max MB |", "|---|---|---|---|"]
    start = 0.0
    while start < samples[-1][0]:
        mb = [m for t, m in samples if start <= t < start + window]
        if mb:
            lines.append(
                f"| {start:.0f}-{start + window:.0f} | {min(mb):.0f} | {statistics.median(mb):.0f} | {max(mb):.0f} |"
            )
        start += window
    steady = [(t, m) for t, m in samples if t >= window]
    if len(steady) > 2:
        slope = statistics.linear_regression([t for t, _ in steady], [m for _, m in steady]).slope
        lines.append(f"\nslope after {window:.0f} s: {slope * 3600:+.1f} MB per hour")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs of each kind")
    parser.add_argument("--rss-seconds", type=float, default=60.0)
    parser.add_argument("--rss-rate", type=float, default=5000.0, help="events a second during the RSS run")
    parser.add_argument("--rss-window", type=float, default=300.0, help="seconds per row of the RSS table")
    parser.add_argument("--rss-only", action="store_true", help="skip the throughput runs")
    parser.add_argument(
        "--rss-tree",
        action="append",
        default=[],
        help="LABEL=DIR: a source tree whose consumer runs beside this checkout's in the RSS run",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.rss_only:
        args.events, args.repeat = 20_000, 0

    from pipeline.generate import generate
    from tests.helpers.kafka_stack import KafkaBroker, ensure_jars

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sendtime-bench-consume-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"load before: {uptime()}", flush=True)
    files = generate(
        workdir / "data", customers=max(2000, args.events // 50), events=args.events, products=300, seed=11
    )["events"]
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
        runs: list[Run] = []
        fixed = {"file": 0.0, "consume": 0.0}
        if args.repeat:
            empty = workdir / "empty.jsonl"
            empty.write_bytes(b"")
            broker.create_topic("bench.empty", partitions=3)
            fixed = {
                "file": run_ingest(workdir / "fixed-ingest", [empty]).cpu,
                "consume": run_consume(
                    workdir / "fixed-consume",
                    broker.bootstrap,
                    {},
                    group="bench-fixed",
                    topic="bench.empty",
                    linger=3.0,
                ).cpu,
            }
            print(f"  fixed start-up CPU: ingest {fixed['file']:.2f}s, consume {fixed['consume']:.2f}s", flush=True)
        for i in range(args.repeat):
            for kind in ("ingest", "consume"):
                home = workdir / f"{kind}-{i}"
                shutil.rmtree(home, ignore_errors=True)
                run = (
                    run_ingest(home, files)
                    if kind == "ingest"
                    else run_consume(home, broker.bootstrap, ends, group=f"bench-{i}")
                )
                runs.append(run)
                print(
                    f"  {run.kind}: {run.records} records, wall {run.wall:.2f}s, CPU {run.cpu:.2f}s, "
                    f"{run.per_cpu_second:,.0f}/CPU-s, peak RSS {run.max_rss_mb:.0f} MB",
                    flush=True,
                )
        lines = [line for f in files for line in f.read_bytes().splitlines()[:20_000] if line.strip()]
        trees = [("this checkout", ROOT)] + [(t.split("=", 1)[0], Path(t.split("=", 1)[1])) for t in args.rss_tree]
        samples = (
            rss_over_time(broker, workdir, args.rss_seconds, args.rss_rate, lines, trees) if args.rss_seconds else {}
        )
    finally:
        broker.stop(hard=True)
    print(f"load after: {uptime()}\n")
    print(f"broker start-up (format + start + ready): {startup:.1f}s\n")
    if runs:
        throughput_table(runs, fixed)
    for label, series in samples.items():
        rss = [mb for _, mb in series]
        print(
            f"\n{label}: consumer RSS over {args.rss_seconds:.0f}s at {args.rss_rate:,.0f} events/s: first "
            f"{rss[0]:.0f} MB, after 10 s {rss[min(10, len(rss) - 1)]:.0f} MB, max {max(rss):.0f} MB, "
            f"last {rss[-1]:.0f} MB"
        )
        print("samples (s, MB): " + ", ".join(f"{t:.0f}:{mb:.0f}" for t, mb in series[:: max(1, len(series) // 12)]))
        print(rss_report(series, args.rss_window))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def throughput_table(runs: list[Run], fixed: dict[str, float]) -> None:
    print("| run | records | wall s | CPU s | records per CPU-s | net of start-up | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    net = {}
    for r in runs:
        key = "file" if r.kind.startswith("file") else "consume"
        rate = r.records / max(r.cpu - fixed[key], 1e-9)
        net[key] = max(net.get(key, 0.0), rate)
        print(
            f"| {r.kind} | {r.records:,} | {r.wall:.2f} | {r.cpu:.2f} | {r.per_cpu_second:,.0f} | {rate:,.0f} "
            f"| {r.max_rss_mb:.0f} |"
        )
    best = {k: max(r.per_cpu_second for r in runs if r.kind.startswith(k)) for k in ("file", "consume")}
    ratio = best["consume"] / best["file"] if best["file"] else 0.0
    print(
        f"\nbest consume {best['consume']:,.0f} vs file ingest {best['file']:,.0f} records per CPU-s: "
        f"ratio {ratio:.2f}; net of start-up {net['consume']:,.0f} vs {net['file']:,.0f}: "
        f"ratio {net['consume'] / net['file']:.2f} (targets: >= 0.7 and >= 70,000)"
    )


if __name__ == "__main__":
    main()
