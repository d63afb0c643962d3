"""Incremental cycles give exactly the marts of a full rebuild (DESIGN.md "Mart contract"), over
generated data with all its mess, ingested through the real ingest, one batch per cycle."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from pipeline.generate import generate
from pipeline.ingest import ingest_files
from tests.test_dbt_support import cycle, query, snapshot

AS_OF = datetime(2026, 11, 26, 0, 0, 0)


@pytest.fixture
def generated(tmp_path: Path) -> dict[str, list[Path]]:
    return generate(tmp_path / "generated", customers=120, events=6000, products=60, seed=11)


def test_cycles_after_each_batch_equal_a_full_rebuild(settings, generated):
    # events first: their anonymous ids get linked, orders and CRM rows arrive later
    order = [("events", generated["events"][0]), ("products", generated["products"][0]),
             ("events", generated["events"][1]), ("customers", generated["customers"][0]),
             ("orders", generated["orders"][0]), ("order_items", generated["order_items"][0]),
             ("events", generated["events"][2]), ("customers", generated["customers"][1]),
             ("orders", generated["orders"][1]), ("products", generated["products"][1])]
    for i, (source, path) in enumerate(order):
        ingest_files(settings, source, [path])
        if i % 2 == 1 or i == len(order) - 1:
            last = i == len(order) - 1
            cycle(settings, AS_OF, refresh_associations=True if last else None)
    incremental = snapshot(settings)

    cycle(settings, AS_OF, full_refresh=True)
    full = snapshot(settings)

    assert len(full["customer_profiles"]) > 50
    assert len(full["customer_recommendations"]) > 100
    assert full["customer_erasures"], "the generator deletes some CRM customers"
    for table in full:
        assert incremental[table] == full[table], table


def test_reingesting_a_batch_changes_nothing(settings, generated):
    for source, paths in generated.items():
        ingest_files(settings, source, paths)
    cycle(settings, AS_OF)
    before = snapshot(settings)
    written_before = query(settings, "select count(*) from customer_profiles where _cycle_id = "
                                     "(select max(_cycle_id) from customer_profiles)")

    for source in ("events", "customers", "orders", "order_items", "products"):
        ingest_files(settings, source, generated[source][:1])
    result = cycle(settings, AS_OF)

    assert result.rows["lake_batches_read"] == 5
    assert result.rows["events_changed"] == 0
    assert result.rows["customers_touched"] == 0
    assert result.rows["profiles_written"] == 0
    assert snapshot(settings) == before
    assert written_before[0][0] > 0
