"""The engagement fields over cycles (DESIGN.md "Mart contract": incremental equals a full rebuild, and
fields that depend on as_of are right for everyone at every cycle). As as_of moves, opens and clicks
leave the 30-day window in cycles where nothing arrived; a customer's engagement found by email
hash moves with the address; the peers' hour moves with everyone's activity. After every cycle the
home is copied and rebuilt from scratch at the same as_of: the two must agree row for row."""

from __future__ import annotations

import hashlib
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import load_settings
from tests.helpers.dbt import cycle, ingest, query, write_jsonl

TABLES = {
    "customer_profiles": "customer_id",
    "int_customer_hours_weighted": "customer_id, local_hour",
    "int_customer_send_hours_scored": "customer_id",
}
ENGAGEMENT = (
    "customer_id, email_status, last_email_open_at, last_email_click_at, email_opens_30d, "
    "email_clicks_30d, best_send_hour, best_send_hour_confidence, _email_counts_valid_from, "
    "_email_counts_valid_until"
)


def _sha(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


def _customer(cid: str, email: str, tz: str | None, country: str, ts: int = 1_700_000_000_000, op: str = "c") -> dict:
    return {
        "op": op,
        "ts_ms": ts,
        "before": None,
        "after": {"customer_id": cid, "email": email, "timezone": tz, "country": country, "marketing_consent": True},
    }


def _event(eid: str, kind: str, at: str, **who: Any) -> dict:
    return {"event_id": eid, "event_type": kind, "occurred_at": at, **who}


def _snapshot(settings) -> dict[str, list[tuple]]:
    return {
        table: query(settings, f"select * exclude (_cycle_id) from {table} order by {key}")
        for table, key in TABLES.items()
    }


def _full_rebuild_of(settings, as_of: datetime, tmp: Path) -> dict[str, list[tuple]]:
    copy = tmp / f"full-{as_of:%Y%m%d}"
    shutil.copytree(settings.home, copy)
    other = load_settings(copy, environ={})
    cycle(other, as_of, full_refresh=True)
    return _snapshot(other)


def _engagement(settings) -> dict[str, tuple]:
    return {row[0]: row for row in query(settings, f"select {ENGAGEMENT} from customer_profiles order by customer_id")}


@pytest.fixture
def home_settings(tmp_path: Path):
    return load_settings(tmp_path / "home", environ={})


def test_as_of_moves_counts_and_peers_move_hours_like_a_full_rebuild(home_settings, tmp_path: Path) -> None:
    settings = home_settings
    ingest(
        settings,
        "customers",
        write_jsonl(
            tmp_path / "crm.jsonl",
            [
                _customer("ny", "ny@example.com", "America/New_York", "US"),
                _customer("paris", "paris@example.com", "Europe/Paris", "FR"),
                _customer("nozone", "nozone@example.com", "Not/AZone", "DE"),
                _customer("quiet", "quiet@example.com", "Europe/Paris", "FR"),
                _customer("later", "later@example.com", "America/New_York", "US"),
            ],
        ),
    )
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e1.jsonl",
            [
                _event("a1", "email_open", "2026-10-15T13:00:00Z", customer_id="ny"),  # 09:00 EDT
                _event("a2", "email_click", "2026-11-02T14:00:00Z", customer_id="ny"),  # 09:00 EST
                _event("b1", "email_click", "2026-10-20T19:00:00Z", email_hash=_sha("paris@example.com")),  # 21:00 CEST
                _event("b2", "email_open", "2026-11-05T20:00:00Z", email_hash=_sha("paris@example.com")),  # 21:00 CET
                _event("c1", "email_open", "2026-11-09T12:00:00Z", customer_id="nozone"),  # UTC
                _event("c3", "email_click", "2026-11-09T12:01:00Z", customer_id="nozone"),
                _event("c2", "email_unsubscribe", "2026-11-09T12:05:00Z", customer_id="nozone"),
            ],
        ),
    )
    t1 = datetime(2026, 11, 10)
    cycle(settings, t1)
    first = _engagement(settings)
    assert first["ny"][4:7] == (1, 1, 9) and first["paris"][4:7] == (1, 1, 21)
    # an unknown timezone reads as UTC; an unsubscribe after a click is unsubscribed
    assert first["nozone"][1] == "unsubscribed" and first["nozone"][6] == 12
    assert first["quiet"][4:6] == (0, 0) and first["quiet"][7] == 0.0

    # nothing arrives; as_of moves past the window of ny's Oct 15 open and paris's Oct 20 click
    t2 = datetime(2026, 11, 20)
    result = cycle(settings, t2)
    # a quiet cycle (pipeline/transform.py): of the models, only the bookkeeping and customer_profiles run
    assert "customer_profiles" in result.nodes and "int_events_attributed" not in result.nodes, result.nodes
    second = _engagement(settings)
    assert second["ny"][4:6] == (0, 1) and second["paris"][4:6] == (1, 0)
    assert second["nozone"] == first["nozone"][:8] + second["nozone"][8:]  # counts unchanged
    assert _snapshot(settings) == _full_rebuild_of(settings, t2, tmp_path)

    # new activity: "later" browses at 06:xx New York time, ny opens by email hash only
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e2.jsonl",
            [
                *[
                    _event(f"l{i}", "page_view", f"2026-11-{21 + i}T11:{10 + i}:00Z", customer_id="later")
                    for i in range(6)
                ],
                _event("a3", "email_open", "2026-11-21T14:30:00Z", email_hash=_sha("ny@example.com")),
            ],
        ),
    )
    t3 = datetime(2026, 11, 28)
    cycle(settings, t3)
    third = _engagement(settings)
    assert third["later"][6] == 6 and third["ny"][4] == 1

    # ny's address changes in the CRM: the open found by the old address's hash leaves them
    ingest(
        settings,
        "customers",
        write_jsonl(
            tmp_path / "crm2.jsonl",
            [_customer("ny", "ny.new@example.com", "America/New_York", "US", ts=1_800_000_000_000, op="u")],
        ),
    )
    t4 = datetime(2026, 11, 29)
    cycle(settings, t4)
    fourth = _engagement(settings)
    assert fourth["ny"][4] == 0 and fourth["ny"][2] == datetime(2026, 10, 15, 13, 0)
    assert _snapshot(settings) == _full_rebuild_of(settings, t4, tmp_path)

    # as_of back in time (an analyst's rerun): every interval is rechecked, both ways
    cycle(settings, t1)
    assert _engagement(settings)["ny"][4:6] == (1, 1)
    assert _snapshot(settings) == _full_rebuild_of(settings, t1, tmp_path)
