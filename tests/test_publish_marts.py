"""A real DuckDB warehouse with exactly the served marts of docs/architecture.md ("The warehouse").

`write_marts` writes rows the way a dbt cycle does (replace by key, stamp `_cycle_id`), so publish
and validation can be tested, and benchmarked at 100,000 profiles, on the contract itself. The
end-to-end tests (test_cycle*.py, test_crash*.py) run the real dbt transform instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from pipeline.changes import Changes, read_changes
from pipeline.mart_contract import SERVED_MARTS
from pipeline.warehouse import DuckDBWarehouse
from tests.helpers.api_server import project_contracts


def _ddl(name: str) -> str:
    """The mart's columns as the contract declares them (dbt creates the same table)."""
    return ", ".join(f"{c.name} {c.data_type}" for c in project_contracts()[name].columns)


KEYS = {
    "customer_profiles": ["customer_id"],
    "customer_recommendations": ["customer_id"],
    "products": ["product_id"],
    "customer_erasures": ["customer_id"],
}
AS_OF = datetime(2026, 11, 1, 12, 0, 0)


def write_marts(path: Path, cycle_id: str, **tables: list[dict[str, Any]]) -> None:
    """Replace the given rows by key in each mart and stamp them with `cycle_id`.

    `customer_recommendations` rows replace all rows of their customers (as the transform does);
    `delete_customers=[ids]` removes customers from profiles and recommendations (an erasure).
    """
    con = duckdb.connect(str(path))
    try:
        for name in SERVED_MARTS:
            con.execute(f"create table if not exists {name} ({_ddl(name)})")
        for cid in tables.pop("delete_customers", []):
            con.execute("delete from customer_profiles where customer_id = ?", [cid])
            con.execute("delete from customer_recommendations where customer_id = ?", [cid])
        for name, rows in tables.items():
            if not rows:
                continue
            key = KEYS[name][0]
            con.executemany(f"delete from {name} where {key} = ?", [[k] for k in {r[key] for r in rows}])
            cols = list(project_contracts()[name].served_names)
            con.executemany(
                f"insert into {name} ({', '.join(cols)}, _cycle_id) values ({', '.join('?' for _ in cols)}, ?)",
                [[row.get(c) for c in cols] + [cycle_id] for row in rows],
            )
    finally:
        con.close()


def profile(i: int, **overrides: Any) -> dict[str, Any]:
    """A valid profile of DESIGN.md for customer `c{i}` (active buyer or prospect)."""
    buyer = i % 3 != 0
    row = {
        "customer_id": f"c{i}",
        "email": f"user{i}@example.com",
        "first_name": f"First{i}",
        "last_name": f"Last{i}",
        "country": "US",
        "locale": "en-US",
        "timezone": "America/New_York",
        "marketing_consent": i % 2 == 0,
        "first_seen_at": AS_OF - timedelta(days=60, seconds=i % 1000),
        "last_seen_at": AS_OF - timedelta(days=1, microseconds=i % 7),
        "orders_count": 2 if buyer else 0,
        "lifetime_value": Decimal("12.50") if buyer else Decimal("0.00"),
        "last_order_at": AS_OF - timedelta(days=10) if buyer else None,
        "lifecycle_stage": "active" if buyer else "prospect",
        "recently_viewed": [f"P{i % 50}", f"P{(i + 1) % 50}"],
        "cart": [f"P{(i + 2) % 50}"] if buyer else [],
        "top_categories": ["shoes", "bags"],
        "recommendations": ["P10", "P11"],
        # engagement and send time (DESIGN.md "Engagement and send time")
        "email_status": "subscribed" if i % 2 == 0 else "unsubscribed",
        "last_email_open_at": AS_OF - timedelta(days=2, seconds=i % 100),
        "last_email_click_at": None,
        "email_opens_30d": 3,
        "email_clicks_30d": 0,
        "best_send_hour": i % 24,
        "best_send_hour_confidence": 0.5,
    }
    row.update(overrides)
    return row


def recommendations_for(customer_id: str, product_ids: list[str]) -> list[dict[str, Any]]:
    return [
        {"customer_id": customer_id, "rank": rank, "product_id": pid, "score": 1.0 / rank, "reason": "association"}
        for rank, pid in enumerate(product_ids, start=1)
    ]


def product(n: int, **overrides: Any) -> dict[str, Any]:
    row = {
        "product_id": f"P{n}",
        "name": f"Product {n}",
        "category": "shoes" if n % 2 else "bags",
        "price": Decimal("19.90"),
        "currency": "USD",
        "url": f"https://shop.example/p/{n}",
        "image_url": f"https://shop.example/i/{n}.jpg",
        "in_stock": True,
    }
    row.update(overrides)
    return row


def seed_warehouse(path: Path, cycle_id: str, customers: int = 30) -> None:
    write_marts(
        path,
        cycle_id,
        customer_profiles=[profile(i) for i in range(customers)],
        customer_recommendations=[r for i in range(customers) for r in recommendations_for(f"c{i}", ["P10", "P11"])],
        products=[product(n) for n in range(50)],
    )


def read(path: Path, since: str | None = None, as_of: datetime = AS_OF, **kw: Any) -> Changes:
    """The change reader over a test warehouse, with the project's contract."""
    return read_changes(DuckDBWarehouse(path), project_contracts(), since, as_of, **kw)


def test_write_marts_has_the_contract_columns(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    seed_warehouse(path, "20261101T000000000000Z-00000001", customers=4)
    changes = read(path)
    assert len(changes.frame("customer_profiles")) == 4 and len(changes.frame("products")) == 50
    assert [cid for cid, _body in changes.recommendation_bodies] == ["c0", "c1", "c2", "c3"]
    assert len(changes.frame("customer_recommendations")) == 8 and changes.erasures.empty
    # nothing is newer than the cycle that wrote everything
    assert read(path, "20261101T000000000000Z-00000001").empty
