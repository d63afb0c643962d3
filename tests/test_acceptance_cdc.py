"""Acceptance: DESIGN.md's CDC ordering rules and the collector, from outside (CLI and API only),
on each warehouse engine (tests/helpers/warehouses.py) with the same expected answers."""

from __future__ import annotations

import json

import pytest

from tests.helpers.api_server import ApiServer
from tests.helpers.warehouses import CLI_TIMEOUT, WAREHOUSES, warehouse_env
from tests.test_acceptance import cdc, ev, write_jsonl

AS_OF = "2026-06-30T00:00:00Z"


def customer(customer_id: str, first_name: str) -> dict:
    return {"customer_id": customer_id, "first_name": first_name, "email": f"{customer_id.lower()}@example.com"}


def order(order_id: str, customer_id: str, total: str = "10.00", status: str = "paid") -> dict:
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "status": status,
        "currency": "USD",
        "total_amount": total,
        "created_at": "2026-06-01T00:00:00Z",
    }


@pytest.fixture(scope="module", params=WAREHOUSES)
def world(request, tmp_path_factory):
    from tests.helpers.cli import Cli

    warehouse = request.param
    tmp = tmp_path_factory.mktemp(f"acceptance-cdc-{warehouse}")
    home = tmp / "home"
    home.mkdir()
    cli = Cli(home, env=warehouse_env(warehouse), timeout=CLI_TIMEOUT[warehouse])
    first = write_jsonl(
        tmp / "customers-1.jsonl",
        [
            cdc("c", "2026-01-01T00:00:00Z", customer("K1", "A"), lsn=5),
            cdc("u", "2026-01-02T00:00:00Z", customer("K1", "B"), lsn=7),
            cdc("u", "2026-01-02T00:00:00Z", customer("K1", "C"), lsn=6),  # same ts_ms, smaller lsn: loses
            cdc("c", "2026-01-01T00:00:00Z", customer("K2", "A")),
            cdc("u", "2026-01-02T00:00:00Z", customer("K2", "X")),
            cdc("d", "2026-01-02T00:00:00Z", customer("K3", "A")),
            cdc("d", "2026-01-02T00:00:00Z", customer("K4", "A")),
        ],
    )
    second = write_jsonl(
        tmp / "customers-2.jsonl",
        [
            cdc("u", "2026-01-02T00:00:00Z", customer("K2", "Y")),  # tie, no lsn: later in ingestion order wins
            cdc("c", "2026-01-01T00:00:00Z", customer("K3", "Z")),  # older than the delete: ignored
            cdc("c", "2026-01-03T00:00:00Z", customer("K4", "Back")),  # newer than the delete: re-created
        ],
    )
    orders = write_jsonl(
        tmp / "orders.jsonl",
        [
            cdc("c", "2026-06-01T00:00:00Z", order("O1", "K4", "10.00")),
            cdc("u", "2026-06-02T00:00:00Z", order("O1", "K5", "10.00")),  # the order moves to K5 (no CRM state)
            cdc("c", "2026-06-01T00:00:00Z", order("O2", "K4", "5.00")),
            cdc("d", "2026-06-03T00:00:00Z", order("O2", "K4", "5.00")),  # deleted order: not counted
            cdc("c", "2026-06-01T00:00:00Z", order("O3", "K4", "7.50", status="refunded")),
            cdc("c", "2026-06-01T00:00:00Z", order("O4", "K4", "2.25", status="shipped")),
        ],
    )
    events = write_jsonl(
        tmp / "events.jsonl",
        [
            ev("w1", "wishlist", "2026-06-20T08:00:00Z", customer_id="K4"),  # unknown type: seen-at only
            ev("l1", "login", "2026-06-10T08:00:00Z", customer_id="K4"),
        ],
    )
    for source, path in [("customers", first), ("orders", orders), ("events", events)]:
        cli.json("ingest", source, str(path))
    cli("run", "--as-of", AS_OF)
    cli.json("ingest", "customers", str(second))
    cli.json("ingest", "customers", str(first))  # re-ingested: identical changes keep their first position
    cli("run", "--as-of", AS_OF)
    key = json.loads(cli("keys", "create", "--name", "k", "--scopes", "profiles:read,events:write", "--json").stdout)[
        "key"
    ]
    server = ApiServer(home).start()
    yield {"cli": cli, "server": server, "key": key}
    server.stop()


def profile(world, customer_id: str):
    return world["server"].get(f"/api/v1/customers/{customer_id}", key=world["key"])


def test_ties_go_to_the_greater_lsn(world) -> None:
    assert profile(world, "K1").json()["first_name"] == "B"


def test_ties_without_lsn_go_to_the_later_change_even_after_reingest(world) -> None:
    assert profile(world, "K2").json()["first_name"] == "Y"


def test_an_older_change_after_a_delete_is_ignored(world) -> None:
    assert profile(world, "K3").status_code == 404


def test_a_newer_create_after_a_delete_brings_the_customer_back(world) -> None:
    p = profile(world, "K4").json()
    assert p["first_name"] == "Back"
    # O1 moved to K5, O2 deleted, O3 refunded: only O4 counts
    assert (p["orders_count"], p["lifetime_value"]) == (1, 2.25)
    assert p["first_seen_at"] == "2026-06-10T08:00:00Z" and p["last_seen_at"] == "2026-06-20T08:00:00Z"


def test_a_customer_known_only_from_orders_has_a_profile(world) -> None:
    p = profile(world, "K5").json()
    assert (p["email"], p["orders_count"], p["lifetime_value"], p["lifecycle_stage"]) == (None, 1, 10.0, "active")


def test_collected_events_reach_the_profile_after_a_cycle(world) -> None:
    server, key = world["server"], world["key"]
    batch = [
        ev("col-1", "product_view", "2026-06-25T08:00:00Z", customer_id="K5", product_id="P9"),
        ev("col-2", "page_view", "not a time", customer_id="K5"),
    ]
    resp = server.post("/api/v1/events", key=key, json=batch)
    assert resp.status_code in (200, 207), resp.text
    statuses = [r["status"] for r in resp.json()["results"]]
    assert statuses == ["accepted", "rejected"]
    again = server.post("/api/v1/events", key=key, json=batch[:1]).json()
    assert [r["status"] for r in again["results"]] == ["duplicate"]
    world["cli"]("run", "--as-of", AS_OF)
    p = profile(world, "K5").json()
    assert p["recently_viewed"] == ["P9"] and p["last_seen_at"] == "2026-06-25T08:00:00Z"
