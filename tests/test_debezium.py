"""End to end with the reference CDC producer: PostgreSQL 15 (`shop`) -> Debezium's PostgreSQL
connector on Kafka Connect (configured with deploy/kafka/debezium-postgres-shop.json, as a user
would POST it) -> Kafka -> `sendtime consume` -> `sendtime run` -> the API. Rows are inserted,
updated and deleted in the database; the API shows the update and answers 404 after the CRM
delete. A second connector writes the same tables with the JSON converter's schema wrapper."""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pytest

from tests.helpers.api_server import ApiServer
from tests.helpers.cli import ROOT, Cli
from tests.helpers.consumer import ConsumerProcess, lake_batches, quarantine_entries

CONFIG = ROOT / "deploy" / "kafka" / "debezium-postgres-shop.json"


def connector_config(pg, *, prefix: str, slot: str, schemas: bool) -> dict[str, str]:
    """The deploy file's configuration, pointed at the tests' own PostgreSQL and single broker."""
    config = json.loads(CONFIG.read_text())["config"]
    config.update(
        {
            "database.hostname": "127.0.0.1",
            "database.port": str(pg.port),
            "database.password": "cdc-password",
            "database.sslmode": "disable",
            "topic.prefix": prefix,
            "slot.name": slot,
            "value.converter.schemas.enable": str(schemas).lower(),
            "topic.creation.default.replication.factor": "1",
        }
    )
    return config


def lake_rows(home: Path, source: str, where: str = "true") -> list[tuple]:
    files = list((home / "lake" / source).glob("ingest_date=*/*.parquet"))
    if not files:
        return []
    con = duckdb.connect()
    try:
        return con.execute(
            f"select * from read_parquet($f, union_by_name = true, hive_partitioning = false) where {where}",
            {"f": [str(f) for f in files]},
        ).fetchall()
    finally:
        con.close()


def wait_until(check, what: str, timeout: float = 90, consumer: ConsumerProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if consumer is not None and consumer.proc.poll() is not None:
            raise AssertionError(f"consume exited {consumer.proc.returncode}:\n{consumer.logs()[-3000:]}")
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{consumer.logs()[-3000:]}" if consumer else ""))


def has(home: Path, source: str, where: str, count: int = 1) -> bool:
    return len(lake_rows(home, source, where)) >= count


@pytest.fixture(scope="module")
def shop(shop_postgres, kafka_connect, kafka_broker):
    """The shop database with C1 already there (Debezium's snapshot reads it as op 'r'), and two
    connectors: plain JSON (prefix `shop`, the default topic map) and schema-wrapped (`shopwrapped`)."""
    shop_postgres.psql(
        """
        INSERT INTO customers (customer_id, email, first_name, last_name, country, locale, timezone, marketing_consent)
        VALUES ('C1', 'Ada.Lovelace@Example.com', 'Ada', 'Lovelace', 'gb', 'en-GB', 'Europe/London', true);
    """,
        database="shop",
    )
    kafka_connect.create_connector(
        "shop-postgres", connector_config(shop_postgres, prefix="shop", slot="sendtime_shop", schemas=False)
    )
    kafka_connect.create_connector(
        "shop-postgres-wrapped",
        connector_config(shop_postgres, prefix="shopwrapped", slot="sendtime_wrapped", schemas=True),
    )
    yield shop_postgres
    for name in ("shop-postgres", "shop-postgres-wrapped"):
        kafka_connect.delete_connector(name)


def test_insert_update_delete_reach_the_api(tmp_path, shop, kafka_broker) -> None:
    home = tmp_path / "home"
    cli = Cli(home)
    consumer = ConsumerProcess(home, kafka_broker.bootstrap).start()  # the default topic map
    shop.psql(
        """
        INSERT INTO customers (customer_id, email, first_name, last_name, country, marketing_consent)
        VALUES ('C2', 'grace@example.com', 'Grace', 'Hopper', 'US', false);
        INSERT INTO orders (order_id, customer_id, status, currency, total_amount, created_at)
        VALUES ('O1', 'C1', 'paid', 'usd', 12.50, now() - interval '3 days'),
               ('O2', 'C2', 'placed', 'USD', 99.00, now() - interval '1 day');
        INSERT INTO order_items (order_item_id, order_id, product_id, quantity, unit_price)
        VALUES ('I1', 'O1', ' p-001 ', 2, 6.25);
    """,
        database="shop",
    )
    wait_until(
        lambda: (
            has(home, "customers", "customer_id in ('C1', 'C2')", 2)
            and has(home, "orders", "order_id in ('O1', 'O2')", 2)
            and has(home, "order_items", "true")
        ),
        "the inserts in the lake",
        consumer=consumer,
    )
    snapshot = lake_rows(home, "customers", "customer_id = 'C1'")
    assert [r[0] for r in snapshot] == ["r"]  # C1 existed before the connector: a snapshot read
    [(ts_ms, lsn, total)] = [(r[1], r[2], r[8]) for r in lake_rows(home, "orders", "order_id = 'O1'")]
    assert ts_ms > 1_700_000_000_000 and total == "12.50"  # decimal.handling.mode=string
    assert lsn is not None and lsn > 0  # source.lsn -> source_lsn: the tie-break of equal ts_ms

    cli("run")
    key = json.loads(cli("keys", "create", "--name", "k", "--scopes", "profiles:read", "--json").stdout)["key"]
    with ApiServer(home) as server:
        c1 = server.get("/api/v1/customers/C1", key).json()
        assert (c1["first_name"], c1["email"], c1["country"], c1["orders_count"], c1["lifetime_value"]) == (
            "Ada",
            "ada.lovelace@example.com",
            "GB",
            1,
            12.5,
        )
        assert server.get("/api/v1/customers/C2", key).status_code == 200

        shop.psql(
            """
            UPDATE customers SET first_name = 'Augusta', updated_at = now() WHERE customer_id = 'C1';
            DELETE FROM customers WHERE customer_id = 'C2';
        """,
            database="shop",
        )
        wait_until(
            lambda: (
                has(home, "customers", "customer_id = 'C1' and op = 'u'")
                and has(home, "customers", "customer_id = 'C2' and op = 'd'")
                and has(home, "orders", "order_id = 'O2' and op = 'u'")
            ),  # ON DELETE SET NULL
            "the update and the delete in the lake",
            consumer=consumer,
        )
        # the tombstone Debezium writes after a delete is skipped and counted
        wait_until(
            lambda: sum(b["skipped"] for b in lake_batches(home, "customers")) >= 1, "the tombstone", consumer=consumer
        )
        assert consumer.stop() == 0
        cli("run")
        assert server.get("/api/v1/customers/C1", key).json()["first_name"] == "Augusta"
        gone = server.get("/api/v1/customers/C2", key)
        assert gone.status_code == 404 and gone.headers["Content-Type"].startswith("application/problem+json")
        logs = server.logs() + consumer.logs()
    assert quarantine_entries(home, "customers") == []
    for secret in ("Lovelace", "Hopper", "grace@example.com", "Augusta"):  # no personal data in logs
        assert secret not in logs
    batches = {b["topic"] for b in lake_batches(home, "customers") + lake_batches(home, "orders")}
    assert batches == {"shop.public.customers", "shop.public.orders"}


def test_schema_wrapped_debezium_lands_the_same_rows(tmp_path, shop, kafka_broker) -> None:
    """`value.converter.schemas.enable=true`: every value is {"schema": ..., "payload": ...}; the
    lake gets the payloads, equal to the plain connector's changes."""
    home = tmp_path / "home"
    topics = ",".join(f"{t}=shopwrapped.public.{t}" for t in ("customers", "orders", "order_items"))
    consumer = ConsumerProcess(home, kafka_broker.bootstrap, topics=topics).start()
    shop.psql(
        "INSERT INTO customers (customer_id, email, first_name) VALUES ('W1', 'w1@example.com', 'Wanda');"
        "UPDATE customers SET first_name = 'Wendy' WHERE customer_id = 'W1';"
        "DELETE FROM customers WHERE customer_id = 'W1';",
        database="shop",
    )
    wait_until(
        lambda: has(home, "customers", "customer_id = 'W1' and op = 'd'"), "the wrapped changes", consumer=consumer
    )
    wait_until(
        lambda: sum(b["skipped"] for b in lake_batches(home, "customers")) >= 1, "the tombstone", consumer=consumer
    )
    assert consumer.stop() == 0
    rows = lake_rows(home, "customers", "customer_id = 'W1'")
    assert sorted((r[0], r[6]) for r in rows) == [("c", "Wanda"), ("d", None), ("u", "Wendy")]
    for r in rows:  # _raw holds the payload (the envelope), not the converter's wrapper
        assert {"op", "ts_ms", "source"} <= set(json.loads(r[-1])) and "payload" not in json.loads(r[-1])
    assert quarantine_entries(home, "customers") == []
