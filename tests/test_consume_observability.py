"""What `sendtime consume` reports, against a real broker: its state in the online store (running,
lag per partition, records per second, per-topic counts), as `/metrics`, the status page and
`sendtime runs --json` show it through a real `sendtime serve`; and the lag measure itself on a
real client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from test_metrics_store import SendtimeServer

from pipeline.config import load_settings
from pipeline.kafka.state import partition_lags
from pipeline.runlog import PipelineSnapshot, read_snapshot
from pipeline.store import engine_for
from tests.helpers.cli import Cli
from tests.helpers.consumer import ConsumerProcess, wait_for_offsets
from tests.test_consume import event, produce, topic_name


def snapshot(home: Path) -> PipelineSnapshot:
    engine = engine_for(load_settings(home, environ={}))
    try:
        return read_snapshot(engine)
    finally:
        engine.dispose()


def wait_state(
    home: Path, check: Callable[[PipelineSnapshot], bool], what: str, timeout: float = 30
) -> PipelineSnapshot:
    deadline = time.monotonic() + timeout
    snap = None
    while time.monotonic() < deadline:
        try:
            snap = snapshot(home)
            if check(snap):
                return snap
        except Exception:  # noqa: BLE001 - the store or the table is not there yet
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; consumers: {snap.consumers if snap else None}")


def test_state_metrics_status_page_and_runs_json(tmp_path, kafka_broker) -> None:
    topic = topic_name("events")
    kafka_broker.create_topic(topic, partitions=2)
    values: list[bytes | None] = [event(i) for i in range(40)] + [b"not json", b"[1]", None]
    produce(kafka_broker.bootstrap, topic, values)
    home = tmp_path / "home"
    consumer = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic}").start()
    wait_for_offsets(home, "events", topic, kafka_broker.end_offsets(topic), consumer=consumer)
    # the consumer's report after the flush: everything read is in the lake, lag 0 on both partitions
    snap = wait_state(
        home,
        lambda s: (
            s.consumers
            and s.consumers[0].up(s.now)
            and [(p.partition, p.lag) for p in s.kafka_lag()] == [(0, 0), (1, 0)]
        ),
        "a report with lag 0",
    )
    [state] = snap.consumers
    assert state.status == "running" and state.pid == consumer.proc.pid and state.last_flush_at is not None
    assert state.sources == {topic: "events"} and topic in state.records_per_second
    assert sum(p.end for p in snap.kafka_lag()) == len(values)
    [totals] = snap.kafka_topics
    assert (totals.received, totals.accepted, totals.rejected, totals.skipped) == (43, 40, 2, 1)

    with SendtimeServer(home, workers=2, env={"SENDTIME_STATUS_PAGE_ACCESS": "open"}) as server:
        m = server.metrics()  # one scrape, whichever worker answers it: the store's numbers
        labels = (("source", "events"), ("topic", topic))
        assert m["sendtime_kafka_records_received_total"][labels] == 43
        assert m["sendtime_kafka_records_accepted_total"][labels] == 40
        assert m["sendtime_kafka_records_quarantined_total"][labels] == 2
        assert m["sendtime_kafka_records_skipped_total"][labels] == 1
        assert m["sendtime_kafka_consumer_lag"] == {
            (("partition", "0"), ("topic", topic)): 0,
            (("partition", "1"), ("topic", topic)): 0,
        }
        assert (("topic", topic),) in m["sendtime_kafka_records_per_second"]
        [(consumer_labels, up)] = m["sendtime_kafka_consumer_up"].items()
        assert up == 1 and dict(consumer_labels)["consumer"] == state.consumer_id
        page = server.get("/status").text
        assert 'id="kafka"' in page and ">running<" in page and f"<code>{topic}</code>" in page
        assert ">43<" in page and ">40<" in page
        assert "not json" not in page  # a record's content never reaches the page

        assert consumer.stop() == 0
        m = server.metrics()
        assert m["sendtime_kafka_consumer_up"] == {consumer_labels: 0}
        assert "sendtime_kafka_consumer_lag" not in m  # a stopped consumer measures nothing
        assert m["sendtime_kafka_records_received_total"][labels] == 43  # the lake's totals stay
        assert ">stopped<" in server.get("/status").text

    report = json.loads(Cli(home)("runs", "--json").stdout)
    assert report["runs"] == []
    assert report["kafka_topics"] == [
        {
            "topic": topic,
            "source": "events",
            "batches": totals.batches,
            "received": 43,
            "accepted": 40,
            "rejected": 2,
            "skipped": 1,
            "last_batch_at": totals.last_batch_at,
        }
    ]


def test_lag_is_what_the_lake_lacks(kafka_broker) -> None:
    """partition_lags on a real client: end - position, plus what was read but not flushed; a
    partition not read yet counts from the lake's next offset."""
    topic = topic_name("lag")
    kafka_broker.create_topic(topic, partitions=2)
    produce(kafka_broker.bootstrap, topic, [event(i) for i in range(30)], keys=[b"k"] * 30)  # all in one partition
    ends = kafka_broker.end_offsets(topic)
    full = next(p for p, end in ends.items() if end == 30)
    client = Consumer(
        {"bootstrap.servers": kafka_broker.bootstrap, "group.id": "lag-test", "enable.auto.commit": False}
    )
    try:
        client.assign([TopicPartition(topic, p, 0) for p in sorted(ends)])
        read: list = []
        deadline = time.monotonic() + 30
        while not read and time.monotonic() < deadline:
            read = [m for m in client.consume(num_messages=12, timeout=1) if m.error() is None]
        assert 1 <= len(read) <= 12 and read[-1].offset() == len(read) - 1
        # n read, of which the last 5 are "not flushed yet": 30 - n unread + 5 unflushed
        lags = {p.partition: p for p in partition_lags(client, {(topic, full): 5}, {topic: {1 - full: 0}})}
        assert lags[full].end == 30 and lags[full].lag == 30 - len(read) + 5
    finally:
        client.close()


def test_a_failed_commit_is_put_back_retried_with_backoff_and_counted(tmp_path) -> None:
    """`_on_commit` with the client's own error and partition types (no broker needed): the failed
    offsets go back unless a newer one waits, the retry backs off 1, 2, 4 ... 60 s, a success resets it."""
    from confluent_kafka import KafkaError

    from pipeline.kafka.config import ConsumeConfig
    from pipeline.kafka.consumer import StreamConsumer

    settings = load_settings(tmp_path, environ={})
    consumer = StreamConsumer(settings, ConsumeConfig.from_settings(settings, topics="events=t"))
    down = KafkaError(KafkaError._TRANSPORT)
    consumer.to_commit[("t", 1)] = 90  # a newer batch of partition 1 is waiting already
    started = time.monotonic()
    consumer._on_commit(down, [TopicPartition("t", 0, 40), TopicPartition("t", 1, 50)])
    assert consumer.to_commit == {("t", 0): 40, ("t", 1): 90}
    assert consumer.reporter.commit_failures == 1 and 0.9 <= consumer.commit_retry_at - started <= 1.5
    for _ in range(8):
        consumer._on_commit(down, [TopicPartition("t", 0, 40)])
    assert consumer.commit_backoff == 60 and consumer.reporter.commit_failures == 9
    consumer._on_commit(None, [TopicPartition("t", 0, 40)])
    assert consumer.commit_backoff == 1
