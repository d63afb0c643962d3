"""Publish on both online stores: exact bodies, deltas, erasures, one transaction."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from pipeline import publish, store
from pipeline.changes import etag
from pipeline.ids import iso_z
from pipeline.mart_contract import PRODUCTS, PROFILES
from tests.helpers.api_server import project_contracts
from tests.test_publish_marts import AS_OF, product, profile, read, recommendations_for, seed_warehouse, write_marts

C1 = "20261101T000000000000Z-00000001"
C2 = "20261102T000000000000Z-00000002"
C3 = "20261103T000000000000Z-00000003"


def _publish(engine, path, cycle_id, **kw):
    changes = read(path, store.last_published_cycle_id(engine), **kw)
    return publish.publish(engine, changes, cycle_id=cycle_id, as_of=AS_OF, newest_ingested_at=None)


def _bodies(engine, table=store.profiles, key="customer_id"):
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(select(table.c[key], table.c.body))}


def oracle_body(row: dict, mart: str) -> str:
    """An independent serializer of DESIGN.md's rules, to check the bodies DuckDB builds."""

    def value(column, v):
        if v is None:
            return "[]" if column.kind == "list" else "null"
        if column.kind == "money":
            return f"{Decimal(v):.2f}"
        if column.kind == "timestamp":
            return json.dumps(iso_z(v))
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    columns = project_contracts()[mart].served
    return "{" + ",".join(f"{json.dumps(c.name)}:{value(c, row[c.name])}" for c in columns) + "}"


def _read(path, since=None, **kw):
    return read(path, since, **kw)


def test_bodies_are_exact_json_in_design_order(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    odd = [
        profile(
            1,
            lifetime_value=Decimal("12.5"),
            first_seen_at=datetime(2026, 1, 2, 3, 4, 5),
            last_seen_at=datetime(2026, 1, 2, 3, 4, 5, 120000),
            last_order_at=datetime(2026, 1, 1, 0, 0, 0, 1),
            cart=[],
            marketing_consent=None,
            first_name='Zoë "Z"\n\\ \u2028',
            last_name=None,
            email=None,
        ),
        profile(3),  # a prospect: 0.00, no orders
        profile(4, lifetime_value=Decimal("123456789.05"), top_categories=None, recently_viewed=[]),
    ]
    write_marts(
        path,
        C1,
        customer_profiles=odd,
        products=[product(7, price=Decimal("5"), in_stock=False), product(8, name=None, price=None)],
    )
    changes = _read(path)
    bodies = {cid: body for cid, _email, body, _etag in changes.profile_bodies}
    for row in odd:
        expected = oracle_body(row, PROFILES)
        assert json.loads(bodies[row["customer_id"]]) == json.loads(expected)
        assert list(json.loads(bodies[row["customer_id"]])) == list(project_contracts()[PROFILES].served_names)
    b1 = bodies["c1"]
    assert '"lifetime_value":12.50,' in b1 and '"last_order_at":"2026-01-01T00:00:00.000001Z"' in b1
    assert '"first_seen_at":"2026-01-02T03:04:05Z"' in b1 and '"last_seen_at":"2026-01-02T03:04:05.120000Z"' in b1
    assert '"cart":[]' in b1 and '"marketing_consent":null' in b1 and '"email":null' in b1
    assert '"lifetime_value":0.00,' in bodies["c3"] and '"orders_count":0' in bodies["c3"]
    assert '"lifetime_value":123456789.05,' in bodies["c4"] and '"top_categories":[]' in bodies["c4"]
    assert all(tag == etag(body) for _c, _e, body, tag in changes.profile_bodies)
    emails = {cid: email for cid, email, _b, _t in changes.profile_bodies}
    assert emails["c1"] is None and emails["c3"] == "user3@example.com"  # None, not NaN
    assert publish.profile_rows(changes.profile_bodies, C1, 1)[0]["email_hash"] is None
    items = dict(changes.product_bodies)
    assert '"price":5.00,' in items["P7"] and items["P7"].endswith('"in_stock":false}')
    assert '"price":null' in items["P8"] and '"name":null' in items["P8"]
    assert list(json.loads(items["P7"])) == list(project_contracts()[PRODUCTS].served_names)
    assert json.loads(items["P7"]) == json.loads(oracle_body(product(7, price=Decimal("5"), in_stock=False), PRODUCTS))


def test_first_publish_then_only_the_delta(engine, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    seed_warehouse(path, C1, customers=30)
    first = _publish(engine, path, C1)
    assert (first.version, first.profiles_upserted, first.products_upserted, first.recommendations_upserted) == (
        1,
        30,
        50,
        30,
    )
    bodies = _bodies(engine)
    assert len(bodies) == 30
    body = json.loads(bodies["c1"])
    assert body["email"] == "user1@example.com" and body["recommendations"] == ["P10", "P11"]
    with engine.connect() as conn:
        row = conn.execute(select(store.profiles).where(store.profiles.c.customer_id == "c1")).mappings().one()
    assert row["email_hash"] == hashlib.sha256(b"user1@example.com").hexdigest()
    assert row["etag"] == etag(row["body"]) and row["version"] == 1 and row["cycle_id"] == C1
    recs = json.loads(_bodies(engine, store.recommendations)["c1"])
    assert recs == [
        {"product_id": "P10", "score": 1.0, "reason": "association"},
        {"product_id": "P11", "score": 0.5, "reason": "association"},
    ]
    assert json.loads(_bodies(engine, store.products, "product_id")["P3"])["price"] == 19.9

    # cycle 2 changes two customers (one loses all recommendations) and one product
    write_marts(
        path,
        C2,
        customer_profiles=[profile(1, first_name="Renamed"), profile(2, cart=[])],
        customer_recommendations=recommendations_for("c1", ["P20"]),
        products=[product(3, in_stock=False)],
    )
    with duckdb_con(path) as con:
        con.execute("delete from customer_recommendations where customer_id = 'c2'")
    second = _publish(engine, path, C2)
    assert (second.version, second.profiles_upserted, second.products_upserted) == (2, 2, 1)
    assert json.loads(_bodies(engine)["c1"])["first_name"] == "Renamed"
    assert json.loads(_bodies(engine)["c5"])["first_name"] == "First5"  # untouched
    recs = _bodies(engine, store.recommendations)
    assert [r["product_id"] for r in json.loads(recs["c1"])] == ["P20"] and json.loads(recs["c2"]) == []
    with engine.connect() as conn:
        versions = {r.customer_id: r.version for r in conn.execute(select(store.profiles))}
    assert versions["c1"] == 2 and versions["c5"] == 1
    assert store.current_version(engine)["cycle_id"] == C2

    # nothing new: no new version
    assert _publish(engine, path, C3).version is None
    assert store.current_version(engine)["version"] == 2


def test_erasure_deletes_profile_and_recommendations(engine, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    seed_warehouse(path, C1, customers=5)
    _publish(engine, path, C1)
    write_marts(path, C2, delete_customers=["c2"], customer_erasures=[{"customer_id": "c2", "erased_at": AS_OF}])
    result = _publish(engine, path, C2)
    assert result.profiles_deleted == 1
    assert "c2" not in _bodies(engine) and "c2" not in _bodies(engine, store.recommendations)
    assert store.current_version(engine)["profiles_deleted"] == 1
    # an erased customer who came back (a new CRM create) keeps the new profile
    write_marts(path, C3, customer_profiles=[profile(3)], customer_erasures=[{"customer_id": "c3", "erased_at": AS_OF}])
    assert _publish(engine, path, C3).profiles_deleted == 0 and "c3" in _bodies(engine)


def test_full_refresh_drops_profiles_the_warehouse_no_longer_has(engine, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    seed_warehouse(path, C1, customers=5)
    _publish(engine, path, C1)
    write_marts(path, C2, delete_customers=["c4"], customer_profiles=[profile(0)])
    result = _publish(engine, path, C2, all_keys=True)
    assert result.profiles_deleted == 1 and sorted(_bodies(engine)) == ["c0", "c1", "c2", "c3"]


def test_a_failed_publish_leaves_the_last_state_and_readers_never_see_a_mix(engine, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    seed_warehouse(path, C1, customers=10)
    _publish(engine, path, C1)
    before = _bodies(engine)
    write_marts(
        path,
        C2,
        customer_profiles=[profile(i, first_name="New") for i in range(10)],
        delete_customers=[],
        customer_erasures=[],
    )
    reader = store.make_engine(str(engine.url.render_as_string(hide_password=False)))
    seen = {}

    def check_then_fail():
        # inside the writer's open transaction: another connection still reads the old state
        seen["bodies"] = _bodies(reader)
        seen["version"] = store.current_version(reader)["version"]
        raise RuntimeError("disk full")

    changes = _read(path, C1)
    with pytest.raises(RuntimeError):
        publish.publish(
            engine, changes, cycle_id=C2, as_of=AS_OF, newest_ingested_at=None, before_commit=check_then_fail
        )
    reader.dispose()
    assert seen == {"bodies": before, "version": 1}
    assert _bodies(engine) == before and store.current_version(engine)["version"] == 1
    # the next publish catches up from the last *published* cycle
    assert _publish(engine, path, C3).profiles_upserted == 10
    assert all(json.loads(b)["first_name"] == "New" for b in _bodies(engine).values())


def test_newer_ingestion_records_a_version_even_without_changes(engine, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    seed_warehouse(path, C1, customers=2)
    _publish(engine, path, C1)
    changes = _read(path, C1)
    assert changes.empty
    newest = datetime(2026, 11, 28, 10, 0, 0)
    result = publish.publish(engine, changes, cycle_id=C2, as_of=AS_OF, newest_ingested_at=newest)
    assert result.version == 2
    assert store.current_version(engine)["newest_ingested_at"] == "2026-11-28T10:00:00Z"
    again = publish.publish(engine, changes, cycle_id=C3, as_of=AS_OF, newest_ingested_at=newest)
    assert again.version is None


def test_lake_newest_ingested_at_reads_batch_ids(tmp_path):
    lake = tmp_path / "lake"
    assert publish.lake_newest_ingested_at(lake) is None
    folder = lake / "events" / "ingest_date=2026-11-28"
    folder.mkdir(parents=True)
    (folder / "20261128T100000123456Z-abcdef01.parquet").write_bytes(b"x")
    (folder / ".20261128T110000000000Z-abcdef02.parquet.tmp").write_bytes(b"x")  # not landed yet
    other = lake / "orders" / "ingest_date=2026-11-27"
    other.mkdir(parents=True)
    (other / "20261127T230000000000Z-abcdef03.parquet").write_bytes(b"x")
    assert publish.lake_newest_ingested_at(lake) == datetime(2026, 11, 28, 10, 0, 0, 123456)


class duckdb_con:
    def __init__(self, path):
        import duckdb

        self.con = duckdb.connect(str(path))

    def __enter__(self):
        return self.con

    def __exit__(self, *exc):
        self.con.close()
