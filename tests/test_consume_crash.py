"""Exactly once into the lake under fire: ~100,000 generated events (with the generator's mess:
duplicates, invalid lines) produced to a 3-partition topic while `sendtime consume` is killed with
SIGKILL at random moments (6 times) and the broker is killed and restarted once. Afterwards every
offset is in the lake exactly once (accepted rows + quarantine, counted by topic, partition and
offset), the ingest log adds up, and the marts equal those of a home that ingested the same events
from the files."""

from __future__ import annotations

import random
import re
import sqlite3
import threading
import time
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import Producer

from pipeline.generate import generate
from tests.helpers.cli import Cli
from tests.helpers.consumer import (
    ConsumerProcess,
    covered_offsets,
    lake_message_counts,
    quarantine_entries,
    wait_for_offsets,
)

AS_OF = "2026-07-01T00:00:00Z"
KILLS = 6
EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"]*)"')


class ThrottledProducer(threading.Thread):
    """Produces every line of the files, in order, at about `rate` messages a second, keyed by
    event_id (duplicates of an id go to one partition, in file order, as a real tracker would).
    Idempotent, so a broker restart neither loses nor duplicates a message."""

    def __init__(self, bootstrap: str, topic: str, files: list[Path], rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.files, self.rate = bootstrap, topic, files, rate
        self.produced = 0
        self.errors: list[str] = []

    def run(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "linger.ms": 20,
                "message.timeout.ms": 120_000,
            }
        )

        def delivered(err, _msg) -> None:
            if err is not None:
                self.errors.append(str(err))

        started = time.monotonic()
        for path in self.files:
            for line in path.read_bytes().splitlines():
                if not line.strip():
                    continue  # a blank line is not a record (file ingest skips it too)
                key = EVENT_ID.search(line)
                while True:
                    try:
                        producer.produce(self.topic, line, key=key.group(1) if key else None, on_delivery=delivered)
                        break
                    except BufferError:  # local queue full (the broker is restarting): wait
                        producer.poll(0.1)
                self.produced += 1
                ahead = self.produced / self.rate - (time.monotonic() - started)
                if ahead > 0.01:
                    producer.poll(0)
                    time.sleep(ahead)
        if producer.flush(120) != 0:
            self.errors.append("messages still queued after 120 s")


def _wait_for_batches(consumer: ConsumerProcess, count: int, timeout: float = 15) -> None:
    seen = consumer.logs().count('"msg": "kafka batch"')
    deadline = time.monotonic() + timeout
    while consumer.logs().count('"msg": "kafka batch"') < seen + count and time.monotonic() < deadline:
        time.sleep(0.002)


def warehouse_profiles(home: Path) -> list[tuple]:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        columns = [c[0] for c in con.execute("describe customer_profiles").fetchall() if c[0] != "_cycle_id"]
        return con.execute(f"select {', '.join(columns)} from customer_profiles order by customer_id").fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_exactly_once_across_kill_9_and_a_broker_restart(tmp_path, kafka_broker) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    files = generate(tmp_path / "data", customers=2000, events=100_000, products=300, seed=7)
    topic = "crash.events"
    kafka_broker.create_topic(topic, partitions=3)
    kafka_home, file_home = tmp_path / "kafka-home", tmp_path / "file-home"
    for home in (kafka_home, file_home):
        cli = Cli(home)
        for source in ("products", "customers", "orders", "order_items"):
            cli("ingest", source, *map(str, files[source]))
    for path in files["events"]:  # one batch per file, in order: the order the topic receives them
        Cli(file_home)("ingest", "events", str(path))
    timings["setup"] = time.monotonic() - started

    # produce ~100k messages over ~25 s while the consumer is killed again and again
    producer = ThrottledProducer(kafka_broker.bootstrap, topic, files["events"], rate=4000)
    rng = random.Random(13)
    consumer = ConsumerProcess(
        kafka_home, kafka_broker.bootstrap, topics=f"events={topic}", env={"SENDTIME_KAFKA_FLUSH_RECORDS": "2000"}
    )
    phase = time.monotonic()
    producer.start()
    broker_down = 0.0
    for kill in range(KILLS):
        consumer.start()
        consumer.wait_started()  # every kill hits a consumer that holds its partitions (slow starts under load)
        if kill % 2:
            # right after a batch's rename (its log line): lands in the ingest log / checkpoint / commit window
            _wait_for_batches(consumer, rng.randint(1, 3))
        else:
            time.sleep(rng.uniform(0.1, 3.0))  # anywhere: mostly mid-poll or mid-validation
        if kill == 2:  # the broker dies under a running consumer and producer, and comes back
            broker_down = kafka_broker.restart(hard=True)
            time.sleep(rng.uniform(0.5, 2.0))
        consumer.kill()
        assert consumer.proc.returncode == -9, consumer.logs()[-2000:]
    producer.join(timeout=300)
    assert not producer.is_alive() and producer.errors == []
    timings["produce_with_kills"] = time.monotonic() - phase

    phase = time.monotonic()
    consumer.start()
    ends = kafka_broker.end_offsets(topic)
    assert sum(ends.values()) == producer.produced
    wait_for_offsets(kafka_home, "events", topic, ends, timeout=180, consumer=consumer)
    assert consumer.stop() == 0
    timings["final_consume"] = time.monotonic() - phase
    logs = consumer.logs()
    assert logs.count('"partitions assigned"') >= KILLS + 1
    recovered = logs.count("found in the lake at start") + logs.count("recovered after an interrupted consumer")

    # every offset exactly once: an accepted row or a quarantine entry, never both, never twice
    lake = lake_message_counts(kafka_home, "events", topic)
    assert max(lake.values()) == 1, [k for k, v in lake.items() if v > 1][:10]
    quarantined = [(q["partition"], q["offset"]) for q in quarantine_entries(kafka_home, "events")]
    assert len(quarantined) == len(set(quarantined)) and not set(quarantined) & set(lake)
    every = {(p, o) for p, end in ends.items() for o in range(end)}
    assert set(lake) | set(quarantined) == every
    covered = covered_offsets(kafka_home, "events", topic)
    assert set(covered) == every and set(covered.values()) == {1}
    # the ingest log adds up, per topic: received = accepted + rejected + skipped
    con = sqlite3.connect(kafka_home / "online.sqlite")
    try:
        [(received, accepted, rejected, skipped)] = con.execute(
            "select sum(received), sum(accepted), sum(rejected), sum(skipped) from kafka_batches where topic = ?",
            (topic,),
        ).fetchall()
    finally:
        con.close()
    assert (received, accepted, rejected, skipped) == (len(every), len(lake), len(quarantined), 0)
    # no temporary or pending file survived the kills
    assert not list(kafka_home.glob("**/.*kafka-*"))

    # the same marts as a file ingest of the same events
    phase = time.monotonic()
    for home in (kafka_home, file_home):
        Cli(home)("run", "--as-of", AS_OF)
    timings["cycles"] = time.monotonic() - phase
    kafka_profiles, file_profiles = warehouse_profiles(kafka_home), warehouse_profiles(file_home)
    assert len(file_profiles) > 1000
    assert kafka_profiles == file_profiles
    timings["total"] = time.monotonic() - started
    print(
        f"\ncrash test: {producer.produced} messages, {KILLS} kills, broker down {broker_down:.1f}s, "
        f"quarantined {len(quarantined)}, recoveries at start {recovered}; seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
    )
