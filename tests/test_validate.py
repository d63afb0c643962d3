"""The Great Expectations suites: good rows pass, each kind of bad row fails the right expectation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from pipeline import contracts, validate
from tests.helpers.api_server import project_contracts
from tests.test_publish_marts import AS_OF, product, profile, read, recommendations_for, seed_warehouse, write_marts

C1 = "20261101T000000000000Z-00000001"
C2 = "20261102T000000000000Z-00000002"


@pytest.fixture
def warehouse(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    seed_warehouse(path, C1, customers=12)
    return path


def _changed(path, **tables):
    write_marts(path, C2, **tables)
    return validate.validate_changes(read(path, C1), AS_OF)


def test_every_served_mart_has_a_suite_of_real_expectations_derived_from_its_contract():
    marts = project_contracts()
    assert sorted(marts) == ["customer_erasures", "customer_profiles", "customer_recommendations", "products"]
    for contract in marts.values():
        suite = validate.build_suite(contract, {"as_of": AS_OF, "not_after": AS_OF})
        assert len(suite.expectations) == len(validate.expectations(contract)) > 2
    profiles = validate.expectations(marts["customer_profiles"])
    assert {
        "type": "expect_column_values_to_be_in_set",
        "kwargs": {"column": "lifecycle_stage", "value_set": ["prospect", "active", "at_risk", "lapsed"]},
    } in profiles
    assert {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "check_recently_viewed_size", "min_value": 0, "max_value": 5},
    } in profiles


def test_good_rows_pass(warehouse):
    report = validate.validate_changes(read(warehouse), AS_OF)
    assert report.success, report.failures()
    assert report.suites["customer_profiles"].rows == 12 and report.suites["products"].rows == 50
    assert report.suites["customer_erasures"].rows == 0 and report.suites["customer_erasures"].success


def test_nothing_changed_passes(warehouse):
    report = validate.validate_changes(read(warehouse, C1), AS_OF)
    assert report.success and all(r.rows == 0 for r in report.suites.values())


# later than the wall clock plus the clock-skew allowance: data from the future
# a day of margin: the list is built at collection time, and a full suite runs for many minutes
FUTURE = datetime.now(UTC).replace(tzinfo=None) + validate.CLOCK_SKEW + timedelta(days=1)

BAD_PROFILES = [
    ({"email": "Not An Email"}, "expect_column_values_to_match_regex", "email"),
    ({"email": "Upper@Example.com"}, "expect_column_values_to_match_regex", "email"),
    ({"country": "USA"}, "expect_column_values_to_match_regex", "country"),
    ({"lifetime_value": Decimal("-1.00")}, "expect_column_values_to_be_between", "lifetime_value"),
    ({"orders_count": -1}, "expect_column_values_to_be_between", "orders_count"),
    ({"lifecycle_stage": "vip"}, "expect_column_values_to_be_in_set", "lifecycle_stage"),
    (
        {"lifecycle_stage": "lapsed"},
        "expect_column_values_to_be_in_set",
        "check_lifecycle_stage_follows_the_last_order",
    ),
    (
        {"last_order_at": AS_OF - timedelta(days=90, seconds=1)},
        "expect_column_values_to_be_in_set",
        "check_lifecycle_stage_follows_the_last_order",
    ),  # active just past the 90-day boundary
    ({"orders_count": 0, "lifecycle_stage": "prospect"}, "expect_column_values_to_be_in_set", "check_orders_agree"),
    ({"last_seen_at": FUTURE}, "expect_column_values_to_be_between", "last_seen_at"),
    ({"first_seen_at": FUTURE, "last_seen_at": FUTURE}, "expect_column_values_to_be_between", "first_seen_at"),
    ({"last_order_at": FUTURE}, "expect_column_values_to_be_between", "last_order_at"),
    (
        {"first_seen_at": AS_OF - timedelta(days=1), "last_seen_at": AS_OF - timedelta(days=2)},
        "expect_column_values_to_be_in_set",
        "check_seen_in_order",
    ),
    ({"first_seen_at": None}, "expect_column_values_to_be_in_set", "check_seen_together"),
    (
        {"recently_viewed": ["A1", "A2", "A3", "A4", "A5", "A6"]},
        "expect_column_values_to_be_between",
        "check_recently_viewed_size",
    ),
    ({"recently_viewed": ["A1", "A1"]}, "expect_column_values_to_be_in_set", "check_recently_viewed_distinct"),
    ({"cart": ["A1", "A1"]}, "expect_column_values_to_be_in_set", "check_cart_distinct"),
    ({"top_categories": ["a", "b", "c", "d"]}, "expect_column_values_to_be_between", "check_top_categories_size"),
    (
        {"recommendations": [f"P{i}" for i in range(11)]},
        "expect_column_values_to_be_between",
        "check_recommendations_size",
    ),
    ({"cart": ["p-lower"]}, "expect_column_values_to_be_in_set", "check_cart_items_match"),
    ({"recommendations": [" P1"]}, "expect_column_values_to_be_in_set", "check_recommendations_items_match"),
]


@pytest.mark.parametrize("overrides, expectation, column", BAD_PROFILES)
def test_bad_profile_fails_the_named_expectation(warehouse, overrides, expectation, column):
    # customer c1 is a buyer (orders_count 2, active); c2 joins as a good changed row
    report = _changed(warehouse, customer_profiles=[profile(1, **overrides), profile(2)])
    assert not report.success
    failed = report.suites["customer_profiles"].failed
    assert {"expectation": expectation, "column": column} in [
        {"expectation": f["expectation"], "column": validate._columns_of(f)} for f in failed
    ], report.failures()
    assert all(f["unexpected_count"] == 1 for f in failed if validate._columns_of(f) == column)
    # the record is JSON-safe and carries counts, never the bad values
    text = json.dumps(report.to_dict())
    assert "Not An Email" not in text and "Upper@Example.com" not in text


def test_duplicate_profile_key_fails(warehouse):
    # two rows for one key: the transform broke its uniqueness
    write_marts(warehouse, C2, customer_profiles=[profile(1)])
    import duckdb

    con = duckdb.connect(str(warehouse))
    con.execute("insert into customer_profiles select * from customer_profiles where customer_id = 'c1'")
    con.close()
    report = validate.validate_changes(read(warehouse, C1), AS_OF)
    failed = report.suites["customer_profiles"].failed
    assert any(f["expectation"] == "expect_column_values_to_be_unique" and f["unexpected_count"] == 2 for f in failed)


def test_bad_recommendations_products_and_erasures(warehouse):
    recs = recommendations_for("c1", ["P10", "P10"] + [f"P{i}" for i in range(20, 29)])
    recs[3]["reason"] = "random"
    report = _changed(
        warehouse,
        customer_recommendations=recs + recommendations_for("c2", ["P3"]),
        products=[product(3, in_stock=False), product(4, price=Decimal("-1")), product(5, currency="usd")],
    )
    assert not report.success
    recs_failed = {
        (f["expectation"], validate._columns_of(f)): f["unexpected_count"]
        for f in report.suites["customer_recommendations"].failed
    }
    assert recs_failed[("expect_compound_columns_to_be_unique", "customer_id, product_id")] == 2
    assert recs_failed[("expect_column_values_to_be_between", "rank")] == 1  # rank 11
    assert recs_failed[("expect_column_values_to_be_in_set", "reason")] == 1
    assert recs_failed[("expect_column_values_to_be_in_set", "check_in_stock")] == 1  # P3 is out of stock now
    products_failed = {(f["expectation"], f["column"]) for f in report.suites["products"].failed}
    assert products_failed == {
        ("expect_column_values_to_be_between", "price"),
        ("expect_column_values_to_match_regex", "currency"),
    }


def test_erasure_without_key_fails(warehouse):
    report = _changed(warehouse, customer_erasures=[{"customer_id": "gone", "erased_at": None}])
    assert [f["column"] for f in report.suites["customer_erasures"].failed] == ["erased_at"]


def test_data_newer_than_as_of_but_not_from_the_future_passes(warehouse):
    # events keep landing while a cycle runs: last seen after as_of (the cycle's start) is normal
    now = datetime.now(UTC).replace(tzinfo=None)
    report = _changed(
        warehouse, customer_profiles=[profile(1, last_seen_at=now), profile(2, last_seen_at=AS_OF + timedelta(days=3))]
    )
    assert report.success, report.failures()


def test_every_event_time_ingest_accepts_passes_and_2099_still_fails(warehouse):
    # ingest rejects events more than EVENT_MAX_AHEAD after ingestion; anything it let through
    # must pass, or one such event would fail every cycle from then on (docs/pipeline.md)
    latest = datetime.now(UTC).replace(tzinfo=None) + contracts.EVENT_MAX_AHEAD
    report = _changed(warehouse, customer_profiles=[profile(1, last_seen_at=latest), profile(2)])
    assert report.success, report.failures()
    report = _changed(warehouse, customer_profiles=[profile(1, last_seen_at=datetime(2099, 1, 1)), profile(2)])
    assert [validate._columns_of(f) for f in report.suites["customer_profiles"].failed] == ["last_seen_at"]
