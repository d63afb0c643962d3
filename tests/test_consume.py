"""`sendtime consume` against a real Kafka broker (KRaft, started by the tests): landing, counting,
poison messages, the Debezium envelope with and without the schema wrapper, the topic map, an
unreachable broker, one consumer per home, a partition count change, and kill -9 at each step of
a flush (failpoints)."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time

import duckdb
import pytest
from confluent_kafka import Producer

from tests.helpers.cli import Cli
from tests.helpers.consumer import (
    ConsumerProcess,
    consumer_states,
    covered_offsets,
    lake_batches,
    lake_message_counts,
    quarantine_entries,
    wait_for_offsets,
    wait_for_state,
)
from tests.helpers.net import free_port


def event(i: int, **extra: object) -> bytes:
    body = {
        "event_id": f"e{i}",
        "event_type": "page_view",
        "occurred_at": "2026-11-01T00:00:00Z",
        "customer_id": f"c{i % 7}",
        **extra,
    }
    return json.dumps(body).encode()


def produce(
    bootstrap: str, topic: str, values: list[bytes | None], keys: list[bytes] | None = None, **conf: object
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})
    for i, value in enumerate(values):
        producer.produce(topic, value, key=keys[i] if keys else str(i).encode())
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def topic_name(kind: str) -> str:
    return f"test.{kind}.{secrets.token_hex(4)}"


def store_rows(home, sql: str) -> list[tuple]:
    con = sqlite3.connect(home / "online.sqlite")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_events_land_with_poison_quarantined_and_counted(tmp_path, kafka_broker) -> None:
    topic = topic_name("events")
    kafka_broker.create_topic(topic, partitions=2, config={"max.message.bytes": str(4 * 1024 * 1024)})
    big = json.dumps(
        {
            "event_id": "big",
            "event_type": "login",
            "occurred_at": "2026-11-01T00:00:00Z",
            "customer_id": "c1",
            "properties": {"pad": "x" * (1024 * 1024)},
        }
    ).encode()
    values: list[bytes | None] = [event(i) for i in range(50)]
    values += [
        b"not json {",
        b"[1, 2]",
        json.dumps({"event_id": "x1", "event_type": "login"}).encode(),
        b"\xff\xfe bad utf-8",
        big,
        None,
        None,
        event(99, properties={"p": 1}),
    ]
    produce(kafka_broker.bootstrap, topic, values, **{"message.max.bytes": 4 * 1024 * 1024})
    home = tmp_path / "home"
    # a topic of the map that does not exist (yet): a warning and error events, never a stop
    missing = topic_name("missing")
    consumer = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic},products={missing}").start()
    wait_for_offsets(home, "events", topic, kafka_broker.end_offsets(topic), consumer=consumer)
    assert consumer.stop() == 0
    assert "consumed for" in consumer.logs()
    assert "topics not found yet" in consumer.logs() and missing in consumer.logs()

    lake = lake_message_counts(home, "events", topic)
    quarantined = quarantine_entries(home, "events")
    assert sum(lake.values()) == 51 and max(lake.values()) == 1
    reasons = sorted(q["reason"].split(":")[0] for q in quarantined)
    assert reasons == [
        "invalid UTF-8",
        "malformed JSON",
        f"message over 1 MiB ({len(big)} bytes)",
        "missing required field",
        "not a JSON object",
    ]
    for q in quarantined:
        assert q["topic"] == topic and isinstance(q["partition"], int) and isinstance(q["offset"], int)
        assert q["source_file"] == f"kafka:{topic}"
        assert (q["partition"], q["offset"]) not in lake
    # every offset is in exactly one batch's range; received = accepted + rejected + skipped
    covered = covered_offsets(home, "events", topic)
    assert sum(covered.values()) == len(values) and max(covered.values()) == 1
    batches = lake_batches(home, "events")
    assert sum(b["received"] for b in batches) == len(values)
    assert sum(b["accepted"] for b in batches) == 51
    assert sum(b["rejected"] for b in batches) == 5
    assert sum(b["skipped"] for b in batches) == 2
    # the ingest log: ingest_batches (received = accepted + rejected, as for files) and kafka_batches
    logged = store_rows(home, "select sum(received), sum(accepted), sum(rejected) from ingest_batches")
    assert logged == [(56, 51, 5)]
    assert store_rows(home, "select sum(received), sum(skipped) from kafka_batches") == [(len(values), 2)]
    runs = Cli(home)("runs").stdout
    assert topic in runs and "skipped" in runs
    # no record content in the consumer's logs (personal data never logged)
    assert "not json {" not in consumer.logs()


def cdc(op: str, ts_ms: int, row: dict | None, before: dict | None = None, lsn: int | None = None) -> dict:
    out: dict = {
        "op": op,
        "ts_ms": ts_ms,
        "before": before,
        "after": row,
        "source": {"connector": "postgresql", "db": "shop", "table": "customers"},
    }
    if lsn is not None:
        out["source"]["lsn"] = lsn
    return out


def wrapped(payload: dict | None) -> dict:
    return {
        "schema": {"type": "struct", "name": "shop.public.customers.Envelope", "optional": False, "fields": []},
        "payload": payload,
    }


def test_debezium_envelopes_bare_and_schema_wrapped(tmp_path, kafka_broker) -> None:
    topic = topic_name("customers")
    c1 = {
        "customer_id": "K1",
        "email": "k1@example.com",
        "first_name": "Ann",
        "country": "gb",
        "marketing_consent": True,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }
    c2 = {"customer_id": 2, "email": "k2@example.com", "first_name": "Bo", "created_at": 1767225600000}
    values: list[bytes | None] = [
        json.dumps(cdc("c", 1000, c1, lsn=100)).encode(),  # bare
        json.dumps(wrapped(cdc("c", 1001, c2, lsn=101))).encode(),  # schema-wrapped
        json.dumps(wrapped(cdc("u", 1002, {**c1, "first_name": "Anna"}, lsn=102))).encode(),
        json.dumps(cdc("d", 1003, None, before={"customer_id": 2}, lsn=103)).encode(),
        None,  # tombstone after the delete
        json.dumps(wrapped(None)).encode(),  # a wrapped tombstone
        json.dumps(wrapped(cdc("x", 1004, c1))).encode(),  # unknown op: quarantined
        json.dumps({"schema": {}, "payload": "text"}).encode(),  # payload not an object
    ]
    produce(kafka_broker.bootstrap, topic, values)
    home = tmp_path / "home"
    consumer = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"customers={topic}").start()
    wait_for_offsets(home, "customers", topic, kafka_broker.end_offsets(topic), consumer=consumer)
    assert consumer.stop() == 0
    rows = duckdb.sql(
        f"select op, ts_ms, source_lsn, customer_id, first_name, row_json, _raw from "
        f"read_parquet('{home}/lake/customers/*/*.parquet') order by ts_ms"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("c", 1000, 100, "K1", "Ann"),
        ("c", 1001, 101, "2", "Bo"),
        ("u", 1002, 102, "K1", "Anna"),
        ("d", 1003, 103, "2", None),
    ]
    assert all('"schema"' not in r[6] for r in rows)  # the lake keeps the record, not the converter's schema
    assert json.loads(rows[1][5]) == c2
    reasons = sorted(q["reason"] for q in quarantine_entries(home, "customers"))
    assert reasons == ["op: unknown CDC op 'x'", "schema-wrapped payload is not a JSON object"]
    [batch] = lake_batches(home, "customers")
    assert (batch["received"], batch["accepted"], batch["rejected"], batch["skipped"]) == (8, 4, 2, 2)


def test_unknown_source_in_topic_map_exits_2(tmp_path) -> None:
    cli = Cli(tmp_path)
    proc = cli(
        "consume",
        "--bootstrap-servers",
        f"127.0.0.1:{free_port()}",
        "--topics",
        "clicks=x,events=y",
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "sendtime: error: kafka topic map names unknown source 'clicks' "
        "(sources: events, customers, orders, order_items, products)"
    )
    env_cli = Cli(tmp_path, env={"SENDTIME_KAFKA_TOPICS": "bogus=t"})
    proc = env_cli("consume", "--bootstrap-servers", f"127.0.0.1:{free_port()}", check=False, timeout=60)
    assert proc.returncode == 2 and "unknown source 'bogus'" in proc.stderr


def test_protected_and_invalid_client_options_exit_2(tmp_path) -> None:
    cli = Cli(tmp_path, env={"SENDTIME_KAFKA_CLIENT__enable.auto.commit": "true"})
    proc = cli("consume", "--bootstrap-servers", f"127.0.0.1:{free_port()}", check=False, timeout=60)
    assert proc.returncode == 2 and "kafka_client option 'enable.auto.commit' cannot be set" in proc.stderr
    cli = Cli(tmp_path, env={"SENDTIME_KAFKA_CLIENT__NO_SUCH_OPTION": "1"})
    proc = cli("consume", "--bootstrap-servers", f"127.0.0.1:{free_port()}", check=False, timeout=60)
    assert proc.returncode == 2 and "invalid Kafka client configuration" in proc.stderr
    assert "No such configuration property" in proc.stderr and "no.such.option" in proc.stderr


def test_unreachable_broker_at_start_exits_2_with_one_line(tmp_path) -> None:
    cli = Cli(tmp_path)
    port = free_port()  # nothing listens there
    started = time.monotonic()
    proc = cli("consume", "--bootstrap-servers", f"127.0.0.1:{port}", check=False, timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sendtime: error: cannot reach the Kafka brokers at 127.0.0.1:{port}: "), last
    assert time.monotonic() - started < 60


def test_one_consumer_per_home(tmp_path, kafka_broker) -> None:
    topic = topic_name("events")
    kafka_broker.create_topic(topic)
    home = tmp_path / "home"
    first = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic}").start()
    first.wait_started()
    proc = Cli(home)(
        "consume", "--bootstrap-servers", kafka_broker.bootstrap, "--topics", f"events={topic}", check=False, timeout=60
    )
    assert proc.returncode == 2
    assert "sendtime consume is already running on" in proc.stderr and f"pid {first.proc.pid}" in proc.stderr
    assert first.stop() == 0


def test_partition_count_change(tmp_path, kafka_broker) -> None:
    topic = topic_name("events")
    kafka_broker.create_topic(topic, partitions=1)
    produce(kafka_broker.bootstrap, topic, [event(i) for i in range(100)])
    home = tmp_path / "home"
    # a short metadata refresh so the test does not wait the default 10 s for the new partitions
    consumer = ConsumerProcess(
        home,
        kafka_broker.bootstrap,
        topics=f"events={topic}",
        env={"SENDTIME_KAFKA_CLIENT__topic.metadata.refresh.interval.ms": "1000"},
    ).start()
    wait_for_offsets(home, "events", topic, {0: 100}, consumer=consumer)
    kafka_broker.add_partitions(topic, 3)
    # produced at once into the new partitions, possibly before the consumer sees them: none may be lost
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "topic.metadata.refresh.interval.ms": 500})
    deadline = time.monotonic() + 30
    while len(producer.list_topics(topic, timeout=5).topics[topic].partitions) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for i in range(100, 400):
        producer.produce(topic, event(i), partition=i % 3)
    assert producer.flush(30) == 0
    ends = kafka_broker.end_offsets(topic)
    assert ends == {0: 200, 1: 100, 2: 100}
    wait_for_offsets(home, "events", topic, ends, consumer=consumer)
    assert consumer.stop() == 0
    # a restart resumes from the lake for all three partitions: nothing read twice
    produce(kafka_broker.bootstrap, topic, [event(i) for i in range(400, 430)])
    again = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic}").start()
    wait_for_offsets(home, "events", topic, kafka_broker.end_offsets(topic), consumer=again)
    assert again.stop() == 0
    counts = lake_message_counts(home, "events", topic)
    assert len(counts) == 430 and set(counts.values()) == {1}


FAILPOINTS = ["before-lake-rename", "after-lake-rename", "after-checkpoint", "before-commit", "after-commit"]


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_kill_9_at_each_step_of_a_flush(tmp_path, kafka_broker, failpoint) -> None:
    """The consumer kills itself (SIGKILL) at one step of its first flush; the next run lands every
    offset exactly once, with each quarantined record once."""
    topic = topic_name("events")
    kafka_broker.create_topic(topic, partitions=3)
    values = [event(i) for i in range(300)] + [b"poison"] * 3 + [None]
    produce(kafka_broker.bootstrap, topic, values)
    home = tmp_path / "home"
    crashing = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic}").start(
        SENDTIME_FAILPOINT=failpoint
    )
    assert crashing.wait_exit(timeout=60) == -9
    # what it left: a committed batch (after the rename) or hidden temporary files only
    visible = list((home / "lake" / "events").glob("*/*.parquet"))
    assert bool(visible) == (failpoint != "before-lake-rename")
    consumer = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic}").start()
    wait_for_offsets(home, "events", topic, kafka_broker.end_offsets(topic), consumer=consumer)
    assert consumer.stop() == 0
    counts = lake_message_counts(home, "events", topic)
    assert len(counts) == 300 and set(counts.values()) == {1}
    covered = covered_offsets(home, "events", topic)
    assert sum(covered.values()) == len(values) and set(covered.values()) == {1}
    quarantined = quarantine_entries(home, "events")
    assert len(quarantined) == 3 and len({(q["partition"], q["offset"]) for q in quarantined}) == 3
    assert not list(home.glob("**/.*kafka-*")), "temporary files left behind"
    assert sum(b["skipped"] for b in lake_batches(home, "events")) == 1


def test_broker_outage_while_running_is_retried_not_fatal(tmp_path, kafka_broker) -> None:
    """Once running, an unreachable broker gives a log line and retries with backoff, never a crash;
    the consumer picks up where it was when the broker is back, and a stop during an outage still
    flushes and exits 0 promptly."""
    topic = topic_name("events")
    kafka_broker.create_topic(topic, partitions=2)
    produce(kafka_broker.bootstrap, topic, [event(i) for i in range(50)])
    home = tmp_path / "home"
    consumer = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic}").start()
    wait_for_offsets(home, "events", topic, kafka_broker.end_offsets(topic), consumer=consumer)
    wait_for_state(home, lambda s: s.brokers_up == 1, "the report of a connected broker")
    try:
        kafka_broker.stop(hard=True)
        # the metric: the consumer reports no broker up and counts the client's errors, and runs on
        down = wait_for_state(home, lambda s: s.brokers_up == 0 and s.client_errors, "the outage in the report")
        assert down.status == "running" and set(down.client_errors) & {"_TRANSPORT", "_ALL_BROKERS_DOWN"}
        time.sleep(2)
        assert consumer.proc.poll() is None, consumer.logs()[-2000:]
        warnings = consumer.logs().count("kafka client error; retrying with backoff")
        assert 1 <= warnings <= 4, warnings  # one line per kind of error a minute, not a flood
    finally:
        kafka_broker.start()
    produce(kafka_broker.bootstrap, topic, [event(i) for i in range(50, 120)])
    wait_for_offsets(home, "events", topic, kafka_broker.end_offsets(topic), consumer=consumer)
    wait_for_state(home, lambda s: s.brokers_up == 1, "the broker back in the report")
    try:
        kafka_broker.stop(hard=True)
        time.sleep(1)
        started = time.monotonic()
        assert consumer.stop(timeout=60) == 0
        assert time.monotonic() - started < 30
    finally:
        kafka_broker.start()
    counts = lake_message_counts(home, "events", topic)
    assert len(counts) == 120 and set(counts.values()) == {1}


def test_stop_while_starting_exits_0_promptly(tmp_path, kafka_broker) -> None:
    """SIGTERM as soon as the signal handler is in place (while the group join may be in flight),
    after a kill -9 of the same home's previous consumer (a static member being replaced)."""
    topic = topic_name("events")
    kafka_broker.create_topic(topic, partitions=3)
    produce(kafka_broker.bootstrap, topic, [event(i) for i in range(30)])
    home = tmp_path / "home"
    for _ in range(3):
        first = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic}").start()
        first.wait_started()
        first.kill()
        second = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic}").start()
        started = time.monotonic()
        assert second.stop(timeout=60) == 0
        assert time.monotonic() - started < 20
    counts = lake_message_counts(home, "events", topic)
    assert max(counts.values(), default=1) == 1


def test_unwritable_lake_stops_with_one_line_and_loses_nothing(tmp_path, kafka_broker) -> None:
    topic = topic_name("events")
    kafka_broker.create_topic(topic)
    produce(kafka_broker.bootstrap, topic, [event(i) for i in range(20)])
    home = tmp_path / "home"
    (home / "lake").mkdir(parents=True)
    (home / "lake" / "events").write_text("a file where the events folder should be")
    consumer = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic}").start()
    assert consumer.wait_exit(timeout=60) == 2
    last = consumer.logs().strip().splitlines()[-1]
    assert last.startswith(f"sendtime: error: cannot write the lake for topic {topic}: "), last
    [state] = consumer_states(home)  # the status page says why it stopped
    assert state.status == "failed" and state.error.startswith(f"cannot write the lake for topic {topic}: ")
    (home / "lake" / "events").unlink()
    again = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic}").start()
    wait_for_offsets(home, "events", topic, kafka_broker.end_offsets(topic), consumer=again)
    assert again.stop() == 0
    assert len(lake_message_counts(home, "events", topic)) == 20
