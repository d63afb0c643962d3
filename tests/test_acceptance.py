"""Acceptance: DESIGN.md's contracts checked from outside, through the CLI and the API only.

A small hand-made world whose every profile field was worked out by hand from DESIGN.md's rules
(the arithmetic is in the comments), ingested with `sendtime ingest`, built with `sendtime run
--as-of`, and read back through `sendtime serve`. The world is built once per warehouse engine
(tests/helpers/warehouses.py: DuckDB, then Spark with `SENDTIME_WAREHOUSE=spark`), and every test
expects the same answers from both.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.api_server import ApiServer
from tests.helpers.warehouses import CLI_TIMEOUT, WAREHOUSES, warehouse_env

AS_OF = "2026-06-30T00:00:00Z"


def ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def cdc(op: str, ts: str, row: dict, lsn: int | None = None) -> dict:
    change = {"op": op, "ts_ms": ms(ts), "before": row if op == "d" else None, "after": None if op == "d" else row}
    if lsn is not None:
        change["source"] = {"lsn": lsn}
    return change


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def ev(event_id: str, event_type: str, occurred_at, **fields) -> dict:
    return {"event_id": event_id, "event_type": event_type, "occurred_at": occurred_at, **fields}


@pytest.fixture(scope="module", params=WAREHOUSES)
def world(request, tmp_path_factory):
    from tests.helpers.cli import Cli

    warehouse = request.param
    tmp = tmp_path_factory.mktemp(f"acceptance-{warehouse}")
    home = tmp / "home"
    home.mkdir()
    cli = Cli(home, env=warehouse_env(warehouse), timeout=CLI_TIMEOUT[warehouse])

    (tmp / "products.csv").write_text(
        "product_id,name,category,price,currency,url,image_url,in_stock\n"
        "P1,Runner,shoes,80.00,USD,https://x/p1,https://x/p1.jpg,true\n"
        "P2,Trail,shoes,95.00,USD,https://x/p2,https://x/p2.jpg,true\n"
        "P3,Cap,hats,20.00,EUR,https://x/p3,https://x/p3.jpg,true\n"
        "P4,Beanie,hats,15.00,USD,https://x/p4,https://x/p4.jpg,false\n"
        "P00005,Tote,bags,30.00,GBP,https://x/p5,https://x/p5.jpg,true\n"
    )
    customers = write_jsonl(
        tmp / "customers.jsonl",
        [
            cdc(
                "c",
                "2026-01-01T00:00:00Z",
                {
                    "customer_id": "C1",
                    "email": "  Alice@Example.COM ",
                    "first_name": " Alice\t",
                    "last_name": "Old",
                    "country": "us",
                    "locale": "en-US",
                    "timezone": "America/New_York",
                    "marketing_consent": True,
                },
            ),
            cdc(
                "u",
                "2026-01-03T00:00:00Z",
                {
                    "customer_id": "C1",
                    "email": "alice@example.com",
                    "first_name": "Alice",
                    "last_name": "Liddell",
                    "country": "us",
                    "locale": "en-US",
                    "timezone": "America/New_York",
                    "marketing_consent": True,
                },
            ),
            cdc("c", "2026-01-01T00:00:00Z", {"customer_id": "C2", "email": "bob@example.com", "first_name": "Bob"}),
            cdc("d", "2026-01-05T00:00:00Z", {"customer_id": "C2", "email": "bob@example.com", "first_name": "Bob"}),
            cdc("c", "2026-01-01T00:00:00Z", {"customer_id": "C4", "email": "dora@example.com", "first_name": "Dora"}),
            '{"op": "x", "ts_ms": 1, "after": {"customer_id": "C9"}}',  # unknown op: quarantined
        ],
    )
    # an older change arriving later is ignored: C1 keeps last_name Liddell
    customers_late = write_jsonl(
        tmp / "customers-late.jsonl",
        [
            cdc(
                "u",
                "2026-01-02T00:00:00Z",
                {
                    "customer_id": "C1",
                    "email": "alice@example.com",
                    "first_name": "Alicia",
                    "last_name": "Stale",
                    "country": "gb",
                },
            ),
        ],
    )
    orders = write_jsonl(
        tmp / "orders.jsonl",
        [
            # counted: 100 EUR x 1.08 = 108.00
            cdc(
                "c",
                "2026-03-01T00:00:00Z",
                {
                    "order_id": "O1",
                    "customer_id": "C1",
                    "status": "paid",
                    "currency": "eur",
                    "total_amount": 100.00,
                    "created_at": "2026-03-01T00:00:00Z",
                },
            ),
            # cancelled: not counted, but it is the latest order (any status) for the cart rule
            cdc(
                "c",
                "2026-05-01T00:00:00Z",
                {
                    "order_id": "O2",
                    "customer_id": "C1",
                    "status": "cancelled",
                    "currency": "USD",
                    "total_amount": 50.00,
                    "created_at": "2026-05-01T00:00:00Z",
                },
            ),
            # counted: 20.00 USD; created 2026-04-15 in a +02:00 offset = 2026-04-14T22:00:00Z
            cdc(
                "c",
                "2026-04-15T00:00:00Z",
                {
                    "order_id": "O3",
                    "customer_id": "C1",
                    "status": "placed",
                    "currency": "USD",
                    "total_amount": "20.00",
                    "created_at": "2026-04-15T00:00:00+02:00",
                },
            ),
            cdc(
                "u",
                "2026-04-16T00:00:00Z",
                {
                    "order_id": "O3",
                    "customer_id": "C1",
                    "status": "delivered",
                    "currency": "USD",
                    "total_amount": "20.00",
                    "created_at": "2026-04-15T00:00:00+02:00",
                },
            ),
            # an order of the erased customer C2
            cdc(
                "c",
                "2026-04-01T00:00:00Z",
                {
                    "order_id": "O9",
                    "customer_id": "C2",
                    "status": "paid",
                    "currency": "USD",
                    "total_amount": 10,
                    "created_at": "2026-04-01T00:00:00Z",
                },
            ),
        ],
    )
    items = write_jsonl(
        tmp / "order_items.jsonl",
        [
            cdc(
                "c",
                "2026-03-01T00:00:00Z",
                {"order_item_id": "I1", "order_id": "O1", "product_id": "p1", "quantity": 1, "unit_price": 100},
            ),
            cdc(
                "c",
                "2026-04-15T00:00:00Z",
                {"order_item_id": "I3", "order_id": "O3", "product_id": " P3 ", "quantity": 1, "unit_price": 20},
            ),
        ],
    )
    events1 = write_jsonl(
        tmp / "events-1.jsonl",
        [
            ev("e1", "product_view", "2026-06-01T10:00:00Z", customer_id="C1", product_id="P2"),
            ev(
                "e2", "product_view", "2026-06-02T10:00:00", customer_id="C1", product_id=" sku-5 "
            ),  # naive = UTC; alias
            ev("e3", "product_view", "2026-06-03T12:00:00+02:00", customer_id="C1", product_id="p2"),
            ev("e4", "add_to_cart", "2026-04-20T10:00:00Z", customer_id="C1", product_id="P2"),  # before latest order
            ev("e5", "add_to_cart", "2026-06-05T10:00:00Z", customer_id="C1", product_id="P00005"),
            ev("e6", "add_to_cart", "2026-06-06T10:00:00Z", customer_id="C1", product_id="P3"),
            ev("e7", "remove_from_cart", "2026-06-07T10:00:00Z", customer_id="C1", product_id="P3"),
            ev("e8", "add_to_cart", ms("2026-06-08T10:00:00Z"), customer_id="C1", product_id="P4"),  # epoch ms
            ev("a1-view", "product_view", "2026-05-20T10:00:00Z", anonymous_id="a1", product_id="P3"),
            ev("c3-pv", "page_view", "2026-06-15T10:00:00Z", customer_id="C3"),
            ev("c3-view", "product_view", "2026-06-16T10:00:00Z", customer_id="C3", product_id="P1"),
            ev("c2-view", "product_view", "2026-06-16T10:00:00Z", customer_id="C2", product_id="P1"),
            ev("c4-view", "product_view", "2026-06-16T10:00:00Z", customer_id="C4", product_id="P2"),
            ev("bad-ts", "page_view", "yesterday", customer_id="C1"),  # quarantined
            ev("nobody", "page_view", "2026-06-16T10:00:00Z"),  # quarantined: neither id
            ev("no-product", "product_view", "2026-06-16T10:00:00Z", customer_id="C1"),  # quarantined
            "{not json",  # quarantined
        ],
    )
    events2 = write_jsonl(
        tmp / "events-2.jsonl",
        [
            ev(
                "e1", "product_view", "2026-06-29T10:00:00Z", customer_id="C1", product_id="P1"
            ),  # duplicate id: ignored
            ev("link-c1", "login", "2026-06-10T10:00:00Z", customer_id="C1", anonymous_id="a1"),  # the earliest link
            ev("link-c3", "login", "2026-06-20T10:00:00Z", customer_id="C3", anonymous_id="a1"),  # later link loses
        ],
    )

    reports = {}
    for source, path in [
        ("products", tmp / "products.csv"),
        ("customers", customers),
        ("orders", orders),
        ("order_items", items),
        ("events", events1),
    ]:
        reports[source] = cli.json("ingest", source, str(path))
    cli("run", "--as-of", AS_OF)
    # second batch: late customer change, duplicate and stitching events, then a delete of C4
    cli.json("ingest", "customers", str(customers_late))
    reports["events2"] = cli.json("ingest", "events", str(events2))
    cli.json("ingest", "events", str(events1))  # re-ingesting a file changes nothing
    cli("run", "--as-of", AS_OF)

    key = json.loads(cli("keys", "create", "--name", "acceptance", "--scopes", "profiles:read", "--json").stdout)["key"]
    server = ApiServer(home).start()
    yield {"cli": cli, "server": server, "key": key, "reports": reports, "tmp": tmp}
    server.stop()


def get_profile(world, customer_id: str):
    return world["server"].get(f"/api/v1/customers/{customer_id}", key=world["key"])


def test_ingest_counts_every_record(world) -> None:
    r = world["reports"]
    assert (r["customers"]["received"], r["customers"]["accepted"], r["customers"]["rejected"]) == (6, 5, 1)
    assert (r["events"]["received"], r["events"]["accepted"], r["events"]["rejected"]) == (17, 13, 4)
    lines = Path(r["events"]["quarantine_path"]).read_text().splitlines()
    assert sorted(json.loads(line)["line"] for line in lines) == [14, 15, 16, 17]
    assert all(json.loads(line)["reason"] for line in lines)


def test_profile_of_a_crm_customer_follows_every_rule(world) -> None:
    resp = get_profile(world, "C1")
    assert resp.status_code == 200, resp.text
    assert '"lifetime_value":128.00' in resp.text.replace(" ", "")  # money keeps 2 decimals
    p = resp.json()
    assert list(p) == [
        "customer_id",
        "email",
        "first_name",
        "last_name",
        "country",
        "locale",
        "timezone",
        "marketing_consent",
        "first_seen_at",
        "last_seen_at",
        "orders_count",
        "lifetime_value",
        "last_order_at",
        "lifecycle_stage",
        "recently_viewed",
        "cart",
        "top_categories",
        "recommendations",
        # engagement and send time (DESIGN.md "Engagement and send time")
        "email_status",
        "last_email_open_at",
        "last_email_click_at",
        "email_opens_30d",
        "email_clicks_30d",
        "best_send_hour",
        "best_send_hour_confidence",
    ]
    assert p["email"] == "alice@example.com"
    assert (p["first_name"], p["last_name"], p["country"]) == ("Alice", "Liddell", "US")  # late older change ignored
    assert p["marketing_consent"] is True
    # stitched anonymous view (2026-05-20) counts; first event is e4 on 2026-04-20; last is the login
    assert p["first_seen_at"] == "2026-04-20T10:00:00Z"
    assert p["last_seen_at"] == "2026-06-10T10:00:00Z"
    assert p["orders_count"] == 2
    assert p["lifetime_value"] == 128.0
    assert p["last_order_at"] == "2026-04-14T22:00:00Z"
    assert p["lifecycle_stage"] == "active"  # 76 days before as_of
    # P2 (latest view 06-03 10:00Z), P00005 (06-02, via alias SKU-5), P3 (stitched, 05-20)
    assert p["recently_viewed"] == ["P2", "P00005", "P3"]
    # adds after the latest order (O2, 2026-05-01): P00005, P3 (removed), P4; most recent first
    assert p["cart"] == ["P4", "P00005"]
    # hats 4.21 > bags 2.21 > shoes 1.63 (weights x 0.5^(age/30), worked out in the module docstring's spirit)
    assert p["top_categories"] == ["hats", "bags", "shoes"]
    recs = p["recommendations"]
    assert len(recs) <= 10 and len(set(recs)) == len(recs)
    assert set(recs) <= {"P2", "P00005"}  # in stock, not ordered (P1, P3), P4 out of stock


def test_top_category_scores_worked_by_hand() -> None:
    """The numbers behind the top_categories assertion above, so a reader can check them."""
    weight = {"product_view": 1.0, "add_to_cart": 3.0, "remove_from_cart": 0.5}
    decay = lambda age_days: 0.5 ** (age_days / 30)  # noqa: E731
    from datetime import datetime

    as_of = datetime(2026, 6, 30)

    def age(ts: str) -> float:
        return (as_of - datetime.fromisoformat(ts)).total_seconds() / 86400

    shoes = weight["product_view"] * (decay(age("2026-06-01T10:00")) + decay(age("2026-06-03T10:00"))) + weight[
        "add_to_cart"
    ] * decay(age("2026-04-20T10:00"))
    hats = (
        weight["add_to_cart"] * (decay(age("2026-06-06T10:00")) + decay(age("2026-06-08T10:00")))
        + weight["remove_from_cart"] * decay(age("2026-06-07T10:00"))
        + weight["product_view"] * decay(age("2026-05-20T10:00"))
    )
    bags = weight["product_view"] * decay(age("2026-06-02T10:00")) + weight["add_to_cart"] * decay(
        age("2026-06-05T10:00")
    )
    assert hats > bags > shoes
    assert (
        math.isclose(round(hats, 1), 4.2) and math.isclose(round(bags, 1), 2.2) and math.isclose(round(shoes, 1), 1.6)
    )


def test_profile_without_crm_state(world) -> None:
    p = get_profile(world, "C3").json()
    assert p["email"] is None and p["first_name"] is None and p["marketing_consent"] is None
    assert (p["orders_count"], p["lifetime_value"], p["last_order_at"], p["lifecycle_stage"]) == (
        0,
        0,
        None,
        "prospect",
    )
    assert p["first_seen_at"] == "2026-06-15T10:00:00Z"
    assert p["last_seen_at"] == "2026-06-20T10:00:00Z"  # its own login event; the anonymous id stays C1's
    assert p["recently_viewed"] == ["P1"]
    assert p["cart"] == []
    merge = world["server"].get("/api/v1/customers/C3/merge-fields", key=world["key"]).json()
    assert merge["first_name"] == "there"
    assert all(isinstance(v, str) for v in merge.values())


def test_deleted_customers_are_erased(world) -> None:
    assert get_profile(world, "C2").status_code == 404  # deleted in the CRM; events and orders still mention them
    assert get_profile(world, "C4").status_code == 200


def test_delete_after_publish_and_lifecycle_moves_with_as_of(world) -> None:
    cli, tmp = world["cli"], world["tmp"]
    path = write_jsonl(
        tmp / "customers-delete.jsonl",
        [
            cdc("d", "2026-02-01T00:00:00Z", {"customer_id": "C4", "email": "dora@example.com"}),
        ],
    )
    cli.json("ingest", "customers", str(path))
    # 2026-04-14T22:00Z + 90 days = 2026-07-13T22:00Z: one second later C1 is at_risk, without new data for C1
    cli("run", "--as-of", "2026-07-13T22:00:01Z")
    assert get_profile(world, "C4").status_code == 404
    assert get_profile(world, "C1").json()["lifecycle_stage"] == "at_risk"
    cli("run", "--as-of", "2026-07-13T22:00:00Z")  # exactly 90 x 24 h: still active
    assert get_profile(world, "C1").json()["lifecycle_stage"] == "active"
    cli("run", "--as-of", "2026-10-11T22:00:01Z")  # more than 180 x 24 h
    assert get_profile(world, "C1").json()["lifecycle_stage"] == "lapsed"


def test_batch_and_lookup(world) -> None:
    server, key = world["server"], world["key"]
    resp = server.post(
        "/api/v1/customers/batch", key=key, json={"customer_ids": ["C1", "C2", "nope"], "fields": ["email"]}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert [p["customer_id"] for p in body["found"]] == ["C1"]
    assert set(body["found"][0]) == {"customer_id", "email"}
    assert sorted(body["not_found"]) == ["C2", "nope"]
    resp = server.post("/api/v1/customers/lookup", key=key, json={"email": " ALICE@example.com"})
    assert resp.status_code == 200 and resp.json()["customer_id"] == "C1"
