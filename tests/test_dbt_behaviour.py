"""The profile rules one by one, through the real ingest and in-process dbt cycles: stitching,
late events, CRM erasure and re-creation, lifecycle moves with as_of, catalog changes."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from tests.helpers.dbt import cycle, ingest, profile, query, snapshot, write_jsonl
from tests.helpers.lake_writer import LakeWriter

AS_OF = datetime(2026, 11, 26)


def ev(event_id: str, event_type: str, occurred_at: str, **fields: str) -> dict:
    return {"event_id": event_id, "event_type": event_type, "occurred_at": occurred_at, **fields}


def crm(op: str, ts_ms: int, customer_id: str, **fields) -> dict:
    row = {"customer_id": customer_id, "email": f"{customer_id}@example.com", "first_name": "Kim", **fields}
    return {"op": op, "ts_ms": ts_ms, "before": row if op == "d" else None, "after": None if op == "d" else row}


def order(
    op: str, ts_ms: int, order_id: str, customer_id: str, created_at: str, status: str = "paid", total: str = "10.00"
) -> dict:
    row = {
        "order_id": order_id,
        "customer_id": customer_id,
        "status": status,
        "currency": "USD",
        "total_amount": total,
        "created_at": created_at,
        "updated_at": created_at,
    }
    return {"op": op, "ts_ms": ts_ms, "before": row if op == "d" else None, "after": None if op == "d" else row}


def products(tmp: Path, *rows: tuple[str, str, bool]) -> Path:
    return write_jsonl(
        tmp,
        [
            {
                "product_id": p,
                "name": p,
                "category": c,
                "price": 9.5,
                "currency": "USD",
                "url": "u",
                "image_url": "i",
                "in_stock": s,
            }
            for p, c, s in rows
        ],
    )


def test_a_login_arriving_later_reattributes_anonymous_events_to_the_earliest_link(settings, tmp_path):
    ingest(settings, "products", products(tmp_path / "p.jsonl", ("P00001", "shoes", True)))
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e1.jsonl",
            [
                ev("a1", "product_view", "2026-10-01T10:00:00Z", anonymous_id="anon-1", product_id="p00001"),
                ev("a2", "product_view", "2026-10-05T10:00:00Z", anonymous_id="anon-1", product_id="P00001"),
            ],
        ),
    )
    cycle(settings, AS_OF)
    assert query(settings, "select count(*) from customer_profiles")[0][0] == 0

    # two customers log in on the same device; the earlier link wins, whatever arrives first
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e2.jsonl",
            [
                ev("l2", "login", "2026-10-09T00:00:00Z", anonymous_id="anon-1", customer_id="C2"),
            ],
        ),
    )
    cycle(settings, AS_OF)
    assert profile(settings, "C2")["first_seen_at"] == datetime(2026, 10, 1, 10)
    assert profile(settings, "C2")["recently_viewed"] == ["P00001"]

    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e3.jsonl",
            [
                ev("l1", "login", "2026-10-08T00:00:00Z", anonymous_id="anon-1", customer_id="C1"),
            ],
        ),
    )
    cycle(settings, AS_OF)
    c1, c2 = profile(settings, "C1"), profile(settings, "C2")
    assert c1["first_seen_at"] == datetime(2026, 10, 1, 10) and c1["recently_viewed"] == ["P00001"]
    assert c1["top_categories"] == ["shoes"]
    # C2 keeps only its own login event
    assert c2["first_seen_at"] == c2["last_seen_at"] == datetime(2026, 10, 9)
    assert c2["recently_viewed"] == [] and c2["top_categories"] == []

    # a later link changes nothing: the stored link stays the earliest, and C3 gets only its login
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e4.jsonl",
            [
                ev("l3", "login", "2026-10-10T00:00:00Z", anonymous_id="anon-1", customer_id="C3"),
            ],
        ),
    )
    cycle(settings, AS_OF)
    assert query(settings, "select customer_id, link_event_id from int_anonymous_ids_stitched") == [("C1", "l1")]
    assert profile(settings, "C1") == c1 | {"_cycle_id": profile(settings, "C1")["_cycle_id"]}
    assert profile(settings, "C3")["recently_viewed"] == []
    incremental = snapshot(settings)
    cycle(settings, AS_OF, full_refresh=True)
    assert snapshot(settings) == incremental


def test_late_events_are_counted_and_duplicates_are_not(settings, tmp_path):
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e1.jsonl",
            [
                ev("x1", "product_view", "2026-11-20T00:00:00Z", customer_id="C1", product_id="P1"),
            ],
        ),
    )
    cycle(settings, AS_OF)
    # a late event (old occurred_at, new batch) and a copy of x1 with other content
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e2.jsonl",
            [
                ev("x0", "product_view", "2026-01-02T03:04:05+02:00", customer_id="C1", product_id="P2"),
                ev("x1", "product_view", "2026-11-21T00:00:00Z", customer_id="C1", product_id="P3"),
            ],
        ),
    )
    cycle(settings, AS_OF)
    c1 = profile(settings, "C1")
    assert c1["first_seen_at"] == datetime(2026, 1, 2, 1, 4, 5)
    assert c1["last_seen_at"] == datetime(2026, 11, 20)
    assert c1["recently_viewed"] == ["P1", "P2"]


def test_an_earlier_ingested_copy_read_by_a_later_cycle_wins(settings):
    lake, ingested = LakeWriter(settings.home), datetime(2026, 11, 20, 12)
    lake.write(
        "events",
        [ev("x1", "product_view", "2026-11-20T00:00:00Z", customer_id="C1", product_id="LATER")],
        ingested_at=ingested,
    )
    cycle(settings, AS_OF)
    assert profile(settings, "C1")["recently_viewed"] == ["LATER"]

    # a batch ingested a minute earlier was still being written during that cycle: its copy wins
    lake.write(
        "events",
        [ev("x1", "product_view", "2026-11-20T00:00:00Z", customer_id="C1", product_id="EARLIER")],
        ingested_at=ingested - timedelta(minutes=1),
    )
    cycle(settings, AS_OF)
    assert query(settings, "select product_id from int_events_deduplicated where event_id = 'x1'") == [("EARLIER",)]
    assert profile(settings, "C1")["recently_viewed"] == ["EARLIER"]
    incremental = snapshot(settings)
    cycle(settings, AS_OF, full_refresh=True)
    assert snapshot(settings) == incremental


def test_crm_delete_erases_in_that_cycle_and_a_later_create_restores(settings, tmp_path):
    ingest(settings, "customers", write_jsonl(tmp_path / "c1.jsonl", [crm("c", 1000, "C1")]))
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e1.jsonl",
            [
                ev("x1", "product_view", "2026-11-20T00:00:00Z", customer_id="C1", product_id="P1"),
            ],
        ),
    )
    ingest(
        settings,
        "orders",
        write_jsonl(
            tmp_path / "o1.jsonl",
            [
                order("c", 1000, "O1", "C1", "2026-11-01T00:00:00Z"),
            ],
        ),
    )
    cycle(settings, AS_OF)
    assert profile(settings, "C1")["email"] == "c1@example.com"

    ingest(settings, "customers", write_jsonl(tmp_path / "c2.jsonl", [crm("d", 2000, "C1")]))
    cycle(settings, AS_OF)
    assert profile(settings, "C1") is None
    assert query(settings, "select erased_at from customer_erasures where customer_id = 'C1'") == [
        (datetime(1970, 1, 1, 0, 0, 2),)
    ]
    for table in ("customer_recommendations", "int_category_affinities_scored"):
        assert query(settings, f"select count(*) from {table} where customer_id = 'C1'")[0][0] == 0

    # an older change arriving later is ignored; a newer create brings the customer back
    ingest(settings, "customers", write_jsonl(tmp_path / "c3.jsonl", [crm("u", 1500, "C1")]))
    cycle(settings, AS_OF)
    assert profile(settings, "C1") is None
    ingest(settings, "customers", write_jsonl(tmp_path / "c4.jsonl", [crm("c", 3000, "C1", first_name=" Lee ")]))
    cycle(settings, AS_OF)
    assert profile(settings, "C1")["first_name"] == "Lee"
    assert profile(settings, "C1")["orders_count"] == 1
    assert query(settings, "select count(*) from customer_erasures")[0][0] == 0


def test_lifecycle_moves_with_as_of_without_new_data(settings, tmp_path):
    ingest(
        settings,
        "orders",
        write_jsonl(
            tmp_path / "o.jsonl",
            [
                order("c", 1000, "O1", "C1", "2026-06-01T00:00:00Z", total="12.345"),
                order("c", 1000, "O2", "C2", "2026-06-01T00:00:00Z", status="cancelled"),
            ],
        ),
    )
    boundary = datetime(2026, 6, 1) + timedelta(days=90)
    cycle(settings, boundary)
    c1 = profile(settings, "C1")
    assert (c1["lifecycle_stage"], c1["orders_count"], str(c1["lifetime_value"])) == ("active", 1, "12.35")
    assert profile(settings, "C2")["lifecycle_stage"] == "prospect"

    cycle(settings, boundary + timedelta(microseconds=1))
    assert profile(settings, "C1")["lifecycle_stage"] == "at_risk"
    cycle(settings, datetime(2026, 6, 1) + timedelta(days=181))
    assert profile(settings, "C1")["lifecycle_stage"] == "lapsed"
    # as_of may go backwards (tests, replays): the stage follows
    cycle(settings, datetime(2026, 6, 2))
    assert profile(settings, "C1")["lifecycle_stage"] == "active"
    assert profile(settings, "C2")["lifecycle_stage"] == "prospect"


def test_out_of_stock_products_leave_every_recommendation_in_the_next_cycle(settings, tmp_path):
    ingest(
        settings,
        "products",
        products(tmp_path / "p1.jsonl", ("P1", "shoes", True), ("P2", "shoes", True), ("P3", "hats", True)),
    )
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e.jsonl",
            [
                ev("a", "product_view", "2026-11-01T00:00:00Z", customer_id="C1", product_id="P1"),
                ev("b", "product_view", "2026-11-01T00:00:00Z", customer_id="C1", product_id="P2"),
                ev("c", "product_view", "2026-11-01T00:00:00Z", customer_id="C2", product_id="P2"),
                ev("d", "add_to_cart", "2026-11-02T00:00:00Z", customer_id="C2", product_id="P3"),
            ],
        ),
    )
    cycle(settings, AS_OF)
    assert "P2" in profile(settings, "C1")["recommendations"]
    assert profile(settings, "C2")["cart"] == ["P3"]

    ingest(settings, "products", products(tmp_path / "p2.jsonl", ("P2", "shoes", False)))
    cycle(settings, AS_OF)
    for customer in ("C1", "C2"):
        assert "P2" not in profile(settings, customer)["recommendations"]
    assert query(settings, "select count(*) from customer_recommendations where product_id = 'P2'")[0][0] == 0
    assert query(settings, "select in_stock from products where product_id = 'P2'") == [(False,)]
    incremental = snapshot(settings)
    cycle(settings, AS_OF, full_refresh=True)
    rebuilt = snapshot(settings)
    # C1 and C2 did nothing new: only their lists changed, and their profiles show it
    for table in ("customer_recommendations", "customer_profiles", "int_category_affinities_scored"):
        assert rebuilt[table] == incremental[table], table
