"""The send instant (pipeline/send_time.py), the one list of timezones both the API and the warehouse
use, and the webhook translation rules (pipeline/webhook_events.py): plain functions, no server."""

from __future__ import annotations

import csv
import json
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from pipeline.send_time import NOT_ZONES, ZONE_SEED, known_zones, next_send_at, zone_of
from pipeline.store import email_hash
from pipeline.webhook_events import from_mandrill, from_sendgrid

NEW_YORK, PARIS, SYDNEY = (zoneinfo.ZoneInfo(z) for z in ("America/New_York", "Europe/Paris", "Australia/Sydney"))
SAMPLES = Path(__file__).parent / "fixtures" / "webhooks"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("after", "hour", "zone", "expected"),
    [
        # later the same local day, and strictly after: at the hour itself, the next day's
        ("2026-06-01T10:00:00Z", 14, PARIS, "2026-06-01T12:00:00Z"),
        ("2026-06-01T12:00:00Z", 14, PARIS, "2026-06-02T12:00:00Z"),
        ("2026-06-01T11:59:59.999999Z", 14, PARIS, "2026-06-01T12:00:00Z"),
        # the local date differs from the UTC one (Sydney is ahead, New York behind)
        ("2026-06-01T23:30:00Z", 9, SYDNEY, "2026-06-02T23:00:00Z"),
        ("2026-06-02T02:00:00Z", 21, NEW_YORK, "2026-06-03T01:00:00Z"),
        # US spring forward (2026-03-08): 02:00 does not exist, it starts when the clocks jump (07:00 UTC)
        ("2026-03-08T00:00:00Z", 2, NEW_YORK, "2026-03-08T07:00:00Z"),
        ("2026-03-07T12:00:00Z", 9, NEW_YORK, "2026-03-07T14:00:00Z"),
        ("2026-03-08T12:00:00Z", 9, NEW_YORK, "2026-03-08T13:00:00Z"),
        # US fall back (2026-11-01): 01:00 happens twice; the first counts, the repeat is not a new start
        ("2026-11-01T04:00:00Z", 1, NEW_YORK, "2026-11-01T05:00:00Z"),
        ("2026-11-01T05:00:00Z", 1, NEW_YORK, "2026-11-02T06:00:00Z"),
        # EU fall back (2026-10-25) and Sydney's spring forward (2026-10-04, 02:00 -> 03:00)
        ("2026-10-24T20:00:00Z", 21, PARIS, "2026-10-25T20:00:00Z"),
        ("2026-10-03T12:00:00Z", 2, SYDNEY, "2026-10-03T16:00:00Z"),
        # a naive `after` is UTC
        ("2026-06-01T10:00:00", 14, PARIS, "2026-06-01T12:00:00Z"),
    ],
)
def test_next_send_at(after: str, hour: int, zone: zoneinfo.ZoneInfo, expected: str) -> None:
    assert next_send_at(_at(after), hour, zone) == _at(expected)


def test_next_send_at_is_the_hour_in_the_zone_for_every_hour_of_a_dst_year() -> None:
    # `after` every 7 hours of 2026, several target hours: later, within 25 h, at hour:00 local
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for step in range(0, 365 * 24, 7):
        moment = start + timedelta(hours=step, minutes=13)
        for hour in (0, 2, 9, 23):
            send_at = next_send_at(moment, hour, NEW_YORK)
            local = send_at.astimezone(NEW_YORK)
            assert moment < send_at <= moment + timedelta(hours=25)
            # 02:00 on the spring-forward day is the jump itself, 03:00 EDT
            assert local.minute == 0 and (local.hour == hour or (hour == 2 and local.hour == 3)), (moment, hour)


def test_zone_of_follows_the_seed_exactly() -> None:
    assert zone_of("Europe/Paris")[0] == "Europe/Paris"
    for unknown in (None, "", "europe/paris", "Mars/Olympus_Mons", "+02:00", "localtime"):
        name, zone = zone_of(unknown)
        assert name == "UTC" and zone.key == "UTC"
    with pytest.raises(ValueError):
        next_send_at(datetime(2026, 1, 1), 24, PARIS)


def test_the_zone_seed_is_the_iana_database_and_every_engine_knows_it() -> None:
    with open(ZONE_SEED, newline="") as fh:
        seed = [row["zone"] for row in csv.DictReader(fh)]
    assert seed == sorted(seed) and len(seed) == len(set(seed)) > 400
    assert set(seed) == known_zones() == zoneinfo.available_timezones() - NOT_ZONES, (
        "the IANA database changed: python -m pipeline.send_time seeds/iana_timezones.csv"
    )
    icu = {row[0] for row in duckdb.connect().execute("select name from pg_timezone_names()").fetchall()}
    assert set(seed) <= icu  # DuckDB's timezone() fails on a name it does not know


def test_sendgrid_translation_keeps_no_personal_data() -> None:
    records = json.loads((SAMPLES / "sendgrid_event_webhook_example.json").read_text())
    batch = from_sendgrid(records)
    assert len(batch.events) == 6 and batch.skipped_count == 5 and not batch.rejected
    text = json.dumps(batch.events)
    for personal in ("example@test.com", "255.255.255.255", "168.1.1.1", "Mozilla", "unknown recipient"):
        assert personal not in text
    assert {e["email_hash"] for e in batch.events} == {email_hash("example@test.com")}
    assert len({e["event_id"] for e in batch.events}) == 6  # one sg_event_id, six kinds
    assert all(e["occurred_at"] == 1513299569000 for e in batch.events)
    assert batch.lines == [3, 4, 5, 6, 8, 9]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("just text", "not a JSON object"),
        ({"email": "a@b.c", "timestamp": 1}, "missing event"),
        ({"event": "open", "email": "a@b.c"}, "missing timestamp"),
        ({"event": "open", "email": "a@b.c", "timestamp": "soon"}, "timestamp: expected unix seconds"),
        ({"event": "open", "timestamp": 1700000000}, "no customer_id in the custom args and no email"),
        ({"event": "x" * 100, "email": "a@b.c", "timestamp": 1}, "unknown SendGrid event '" + "x" * 40 + "...'"),
    ],
)
def test_sendgrid_records_rejected_with_a_reason(record: object, reason: str) -> None:
    batch = from_sendgrid([record])
    assert [r["reason"] for r in batch.rejected] == [reason]
    assert "a@b.c" not in batch.rejected[0]["raw"]


def test_custom_args_name_the_customer_and_numbers_are_text() -> None:
    batch = from_sendgrid(
        [
            {
                "event": "click",
                "timestamp": 1700000000,
                "customer_id": 42,
                "email": "a@b.c",
                "url": "https://x.example/p?token=secret#top",
                "sg_event_id": "e1",
            }
        ]
    )
    (event,) = batch.events
    assert event["customer_id"] == "42" and "email_hash" not in event
    assert event["properties"] == {"source": "sendgrid", "url": "https://x.example/p"}


def test_mandrill_translation_of_the_test_events() -> None:
    records = json.loads((SAMPLES / "mailchimp_transactional_test_events.json").read_text())
    batch = from_mandrill(records)
    assert sorted(e["event_type"] for e in batch.events) == [
        "email_bounce",
        "email_click",
        "email_open",
        "email_spam_report",
        "email_unsubscribe",
    ]
    assert batch.skipped_count == 9 and not batch.rejected
    assert all(e["email_hash"] == email_hash("example.webhook@mandrillapp.com") for e in batch.events)
    click = next(e for e in batch.events if e["event_type"] == "email_click")
    assert click["properties"] == {
        "source": "mailchimp",
        "message_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa5",
        "campaign": ["webhook-example"],
        "url": "http://mandrill.com",
    }
    with_metadata = from_mandrill(
        [{"event": "open", "ts": 1700000000, "msg": {"email": "a@b.c", "metadata": {"customer_id": "C9"}, "_id": "m1"}}]
    )
    assert with_metadata.events[0]["customer_id"] == "C9"
