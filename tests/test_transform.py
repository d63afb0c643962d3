"""pipeline.transform: dbt in-process, its result summary, the schedule of association refreshes,
quiet terminal, an unlocked warehouse after every build, errors without PII, dbt docs."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime

from pipeline.ids import new_cycle_id
from pipeline.transform import build, build_docs
from tests.helpers.dbt import ingest, write_jsonl

AS_OF = datetime(2026, 11, 26)


def test_build_summarizes_quietly_and_leaves_the_warehouse_unlocked(settings, tmp_path, capfd):
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e.jsonl",
            [
                {
                    "event_id": "e1",
                    "event_type": "product_view",
                    "occurred_at": "2026-11-01T00:00:00Z",
                    "customer_id": "C1",
                    "product_id": "P1",
                }
            ],
        ),
    )
    first = build(settings, as_of=AS_OF, cycle_id=new_cycle_id())
    assert first.ok and first.error is None
    assert first.refreshed_associations  # the first build of a warehouse refreshes everything
    assert first.rows["lake_batches_read"] == 1 and first.rows["events_changed"] == 1
    assert first.rows["profiles_written"] == 1
    assert first.nodes["customer_profiles"].status == "success"
    assert (settings.dbt_target_dir / "run_results.json").exists()
    assert list(settings.dbt_log_dir.glob("*.log"))

    # nothing new and no lifecycle stage to move: dbt does not even start
    second = build(settings, as_of=AS_OF, cycle_id=new_cycle_id())
    assert second.ok and second.skipped and not second.refreshed_associations
    assert second.nodes == {} and second.plan.kind == "skip"
    forced = build(settings, as_of=AS_OF, cycle_id=new_cycle_id(), refresh_associations=True)
    assert forced.ok and forced.refreshed_associations

    out, err = capfd.readouterr()
    assert "Running with dbt" not in out + err and "START sql" not in out + err

    # another process can open the file read-write: nothing kept it locked
    probe = subprocess.run(
        [sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()", str(settings.warehouse_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr


def test_refresh_follows_the_configured_schedule(settings, tmp_path):
    often = settings.replace(recommendations_refresh_every="1ms")

    def arrive(n: int) -> None:
        ingest(
            settings,
            "events",
            write_jsonl(
                tmp_path / f"e{n}.jsonl",
                [
                    {
                        "event_id": f"e{n}",
                        "event_type": "product_view",
                        "occurred_at": "2026-11-01T00:00:00Z",
                        "customer_id": "C1",
                        "product_id": "P1",
                    }
                ],
            ),
        )

    arrive(1)
    assert build(often, as_of=AS_OF, cycle_id=new_cycle_id()).refreshed_associations
    arrive(2)
    assert build(often, as_of=AS_OF, cycle_id=new_cycle_id()).refreshed_associations
    arrive(3)
    assert not build(often, as_of=AS_OF, cycle_id=new_cycle_id(), refresh_associations=False).refreshed_associations
    # a refresh due with nothing new would compute the same associations: not run
    assert build(often, as_of=AS_OF, cycle_id=new_cycle_id()).skipped
    # forced, it runs all the same
    assert build(often, as_of=AS_OF, cycle_id=new_cycle_id(), refresh_associations=True).refreshed_associations


def test_a_failed_build_names_the_node_and_leaks_no_email(settings):
    result = build(settings, as_of=AS_OF, cycle_id="ann.lee@example.com'")
    assert not result.ok
    assert result.error and "int_cycles_registered" in result.error
    assert "ann.lee@example.com" not in result.error
    # the next good cycle works: a failed build leaves nothing behind that blocks it
    assert build(settings, as_of=AS_OF, cycle_id=new_cycle_id()).ok


def test_build_docs_writes_the_catalog_under_home(settings):
    assert build(settings, as_of=AS_OF, cycle_id=new_cycle_id()).ok
    index = build_docs(settings)
    assert index == settings.dbt_target_dir / "index.html" and index.exists()
    assert (settings.dbt_target_dir / "catalog.json").exists()


def test_a_cycle_builds_what_its_arrivals_reach_and_skips_until_a_stage_moves(settings, tmp_path):
    from datetime import timedelta

    from tests.helpers.dbt import profile, query

    order_at = datetime(2026, 6, 1)
    ingest(
        settings,
        "orders",
        write_jsonl(
            tmp_path / "o.jsonl",
            [
                {
                    "op": "c",
                    "ts_ms": 1000,
                    "before": None,
                    "after": {
                        "order_id": "O1",
                        "customer_id": "C1",
                        "status": "paid",
                        "currency": "USD",
                        "total_amount": "10",
                        "created_at": "2026-06-01T00:00:00Z",
                        "updated_at": "2026-06-01T00:00:00Z",
                    },
                }
            ],
        ),
    )
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e0.jsonl",
            [{"event_id": "e0", "event_type": "page_view", "occurred_at": "2026-06-01T00:00:00Z", "customer_id": "C1"}],
        ),
    )
    boundary = order_at + timedelta(days=90)  # active up to and including it, at_risk after
    first = build(settings, as_of=boundary - timedelta(days=1), cycle_id=new_cycle_id())
    assert first.ok and profile(settings, "C1")["lifecycle_stage"] == "active"
    assert query(
        settings,
        "select next_stage_change_at from int_cycles_registered where is_committed order by cycle_id desc limit 1",
    ) == [(boundary,)]

    # only events arrive: nothing of the CRM, orders or catalog is built
    ingest(
        settings,
        "events",
        write_jsonl(
            tmp_path / "e.jsonl",
            [
                {
                    "event_id": "e1",
                    "event_type": "product_view",
                    "occurred_at": "2026-06-02T00:00:00Z",
                    "customer_id": "C1",
                    "product_id": "P1",
                }
            ],
        ),
    )
    events = build(settings, as_of=boundary - timedelta(days=1), cycle_id=new_cycle_id())
    assert events.ok and events.plan.kind == "cycle" and events.plan.arrived == {"events": 1}
    assert "int_events_deduplicated" in events.nodes and "customer_profiles" in events.nodes
    assert not {
        "int_orders_cdc_applied",
        "int_customers_cdc_applied",
        "products",
        "customer_erasures",
        "int_product_associations_scored",
    } & set(events.nodes)

    # nothing new, as_of up to the boundary: no stage moves, dbt does not start
    held = build(settings, as_of=boundary, cycle_id=new_cycle_id())
    assert held.ok and held.skipped
    # one microsecond later C1 is at risk: dbt re-stages the stored profiles, and only that
    moved = build(settings, as_of=boundary + timedelta(microseconds=1), cycle_id=new_cycle_id())
    assert moved.ok and moved.plan.kind == "restage"
    assert set(n for n in moved.nodes if not n.startswith("sendtime-")) == {
        "int_cycles_registered",
        "int_customers_touched",
        "customer_profiles",
    }
    assert profile(settings, "C1")["lifecycle_stage"] == "at_risk"
    # as_of going backwards (a replay) re-stages too
    back = build(settings, as_of=boundary - timedelta(days=1), cycle_id=new_cycle_id())
    assert back.plan.kind == "restage" and profile(settings, "C1")["lifecycle_stage"] == "active"
