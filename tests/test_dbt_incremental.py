"""Incremental cycles give exactly the marts of a full rebuild (DESIGN.md "Mart contract"), over
generated data with all its mess, ingested through the real ingest, one batch per cycle."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from pipeline.generate import generate
from pipeline.ingest import ingest_files
from tests.helpers.dbt import cycle, query, snapshot

AS_OF = datetime(2026, 11, 26, 0, 0, 0)


@pytest.fixture
def generated(tmp_path: Path) -> dict[str, list[Path]]:
    return generate(tmp_path / "generated", customers=120, events=6000, products=60, seed=11)


def test_cycles_after_each_batch_equal_a_full_rebuild(settings, generated):
    # events first: their anonymous ids get linked, orders and CRM rows arrive later
    order = [
        ("events", generated["events"][0]),
        ("products", generated["products"][0]),
        ("events", generated["events"][1]),
        ("customers", generated["customers"][0]),
        ("orders", generated["orders"][0]),
        ("order_items", generated["order_items"][0]),
        ("events", generated["events"][2]),
        ("customers", generated["customers"][1]),
        ("orders", generated["orders"][1]),
        ("products", generated["products"][1]),
    ]
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
    written_before = query(
        settings,
        "select count(*) from customer_profiles where _cycle_id = (select max(_cycle_id) from customer_profiles)",
    )

    for source in ("events", "customers", "orders", "order_items", "products"):
        ingest_files(settings, source, generated[source][:1])
    result = cycle(settings, AS_OF)

    assert result.rows["lake_batches_read"] == 5
    assert result.rows["events_changed"] == 0
    assert result.rows["customers_touched"] == 0
    assert result.rows["profiles_written"] == 0
    assert snapshot(settings) == before
    assert written_before[0][0] > 0


def _cycle_with_erasures(settings, engine, **kwargs):
    """A cycle's erasure phase (pipeline/erasure.py), then its build, as pipeline/cycle.py runs them."""
    from pipeline import erasure
    from pipeline.ids import new_cycle_id
    from pipeline.transform import build

    cycle_id = new_cycle_id()
    report = erasure.run_pending(settings, engine, cycle_id)
    result = build(settings, as_of=AS_OF, cycle_id=cycle_id, **kwargs)
    assert result.ok, result.error
    return report


def test_cycles_with_erasures_equal_a_full_rebuild(settings, generated):
    """Forgotten customers (with linked devices and orders) and erased CRM deletes (with later events
    kept and their delete kept in force): incremental cycles still give a full rebuild's marts."""
    from pipeline import erasure, store

    engine = store.engine_for(settings)
    store.migrate(engine)
    try:
        for source in ("events", "products", "orders", "order_items"):
            ingest_files(settings, source, generated[source][:1])
        ingest_files(settings, "customers", generated["customers"])  # the CRM deletes are in the later file
        _cycle_with_erasures(settings, engine)
        victims = [
            r[0]
            for r in query(
                settings,
                """
            select l.customer_id from int_anonymous_ids_stitched as l
            inner join int_orders_cdc_applied as o on l.customer_id = o.customer_id
            group by 1 order by count(*) desc, 1 limit 3""",
            )
        ]
        assert len(victims) == 3
        deleted = query(settings, "select customer_id, erased_at from customer_erasures order by 1")
        assert deleted, "the generator deletes some CRM customers"
        erasure.request_forget(settings, victims)
        erasure.request_crm_deletes(settings, deleted)
        report = _cycle_with_erasures(settings, engine)
        assert report.requests == len(set(victims) | {cid for cid, _ in deleted}) and report.records_erased > 0
        for source in ("events", "orders", "products"):
            ingest_files(settings, source, generated[source][1:2])
        _cycle_with_erasures(settings, engine, refresh_associations=True)
        incremental = snapshot(settings)

        cycle(settings, AS_OF, full_refresh=True)
        full = snapshot(settings)
        for table in full:
            assert incremental[table] == full[table], table
        assert not {r[0] for r in full["customer_profiles"]} & set(victims)
    finally:
        engine.dispose()
