"""Engagement events through Kafka (DESIGN.md "Engagement and send time"): `sendtime consume`
validates them with the same events contract, so an open with only an email hash lands, a bad
hash is quarantined with its reason, and the warehouse finds the customer. Reuses the session's
broker (tests/helpers/kafka_stack.py): the cost is one consumer run and one cycle."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from pipeline.config import load_settings
from tests.helpers.consumer import ConsumerProcess, lake_message_counts, quarantine_entries, wait_for_offsets
from tests.helpers.dbt import cycle, ingest, profile, write_jsonl
from tests.test_consume import produce, topic_name


def test_engagement_events_from_kafka_land_and_find_their_customer(tmp_path, kafka_broker) -> None:
    topic = topic_name("engagement")
    kafka_broker.create_topic(topic, partitions=1)
    digest = hashlib.sha256(b"ada@example.com").hexdigest()
    values = [
        json.dumps(v).encode()
        for v in (
            {"event_id": "k1", "event_type": "email_open", "occurred_at": "2026-11-20T08:10:00Z", "email_hash": digest},
            {
                "event_id": "k2",
                "event_type": "email_click",
                "occurred_at": "2026-11-20T08:12:00Z",
                "customer_id": "ada",
            },
            {
                "event_id": "k3",
                "event_type": "email_unsubscribe",
                "occurred_at": "2026-11-20T09:00:00Z",
                "email_hash": "ADA@EXAMPLE.COM",
            },
        )
    ]
    produce(kafka_broker.bootstrap, topic, values)
    home = tmp_path / "home"
    consumer = ConsumerProcess(home, kafka_broker.bootstrap, topics=f"events={topic}").start()
    wait_for_offsets(home, "events", topic, kafka_broker.end_offsets(topic), consumer=consumer)
    assert consumer.stop() == 0
    assert sum(lake_message_counts(home, "events", topic).values()) == 2
    (bad,) = quarantine_entries(home, "events")
    assert bad["reason"].startswith("email_hash: expected 64 lower-case hex digits")

    settings = load_settings(home, environ={})
    ingest(
        settings,
        "customers",
        write_jsonl(
            tmp_path / "crm.jsonl",
            [
                {
                    "op": "c",
                    "ts_ms": 1_700_000_000_000,
                    "before": None,
                    "after": {"customer_id": "ada", "email": "Ada@Example.com", "timezone": "Europe/London"},
                }
            ],
        ),
    )
    cycle(settings, datetime(2026, 11, 26))
    ada = profile(settings, "ada")
    assert (ada["email_opens_30d"], ada["email_clicks_30d"], ada["email_status"]) == (1, 1, "subscribed")
    assert ada["best_send_hour"] == 8  # 08:xx in London (GMT in November)
