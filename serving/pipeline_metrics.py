"""The pipeline's state as Prometheus metrics: a custom collector over the run log's read model.

Nothing here is counted by the API: at scrape time `PipelineCollector` takes a snapshot of the
online store (`pipeline.runlog.snapshot_for`: `runs`, `published_versions`, `ingest_batches`,
totals folded incrementally per process; `kafka_batches` and the Kafka consumers' own reports once
`sendtime consume` has run) and turns it into metric families. Every worker, and every API node
on a shared PostgreSQL store, therefore reports the same numbers, and they survive API restarts.
The API never talks to Kafka. The metrics are listed in docs/operations.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.config import Settings
from pipeline.logs import get_logger
from pipeline.runlog import (
    CYCLE_BUCKETS,
    Buckets,
    PipelineSnapshot,
    RunTotals,
    StoreMissing,
    epoch,
    parse_store_time,
    snapshot_for,
)
from pipeline.store import REPLICA_LAG_SQL, RUN_STATUSES
from serving.reader import StoreUnavailable, mark_unavailable, recently_unavailable

log = get_logger(__name__)


class PipelineCollector:
    """Reads the online store at scrape time; never raises (a broken store is `sendtime_store_up 0`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def describe(self) -> list:
        return []  # no eager collect at registration: the store is read at scrape time only

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        started = time.perf_counter()
        up = GaugeMetricFamily("sendtime_store_up", "1 when the online store could be read at this scrape.")
        try:
            if recently_unavailable():  # a read just failed: say so at once (serving/reader.py)
                raise StoreUnavailable("the store failed a moment ago")
            # the gauges need the current version and the latest finished / validated cycles only
            snap = snapshot_for(self.settings, runs_limit=20, versions_limit=1)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the store is down
            if not isinstance(exc, (StoreUnavailable, StoreMissing)):
                mark_unavailable()
            log.warning("metrics: online store unreadable", extra={"error_type": type(exc).__name__})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _pipeline_families(snap, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)
        yield from _recovery_families(self.settings, CounterMetricFamily, GaugeMetricFamily)
        if snap.kafka_topics or snap.consumers:  # a home that never consumed Kafka gets no empty families
            yield from _kafka_families(snap, CounterMetricFamily, GaugeMetricFamily)
        took = GaugeMetricFamily(
            "sendtime_metrics_store_read_seconds", "Time this scrape spent reading the online store."
        )
        took.add_metric([], time.perf_counter() - started)
        yield took


def _gauge(cls: Any, name: str, doc: str, value: float | None, labels: Iterable[str] = ()) -> Any:
    metric = cls(name, doc, labels=list(labels))
    if value is not None:
        metric.add_metric([], value)
    return metric


def _pipeline_families(snap: PipelineSnapshot, counter: Any, gauge: Any, histogram: Any) -> Iterator[Any]:
    current = snap.current
    yield _gauge(
        gauge,
        "sendtime_published_version",
        "Version number of the published state (0: none yet).",
        current.version if current else 0,
    )
    if current is not None:
        yield _gauge(
            gauge,
            "sendtime_published_timestamp_seconds",
            "When the current published version went live (unix time).",
            epoch(current.published_at),
        )
        yield _gauge(
            gauge,
            "sendtime_published_as_of_timestamp_seconds",
            "The as_of of the cycle that produced the current version (unix time).",
            epoch(current.as_of),
        )
        yield _gauge(
            gauge,
            "sendtime_freshness_lag_seconds",
            "Now minus the newest ingested_at in the published state.",
            snap.freshness_lag,
        )

    cycles = counter("sendtime_cycles", "Pipeline cycles by status (every cycle in the run log).", labels=["status"])
    for status in sorted(set(RUN_STATUSES) | set(snap.run_totals)):
        cycles.add_metric([status], snap.run_totals.get(status, RunTotals()).cycles)
    yield cycles
    for attr, doc in (
        ("rows_read", "Changed mart rows read by cycles."),
        ("rows_changed", "Mart rows changed by cycles."),
        ("rows_published", "Profiles upserted into the online store by cycles."),
        ("rows_deleted", "Profiles erased from the online store by cycles."),
    ):
        yield _gauge(counter, f"sendtime_{attr}", doc, sum(getattr(t, attr) for t in snap.run_totals.values()))

    per_source = {
        "sendtime_ingest_batches": ("Ingest batches (one file or one collector request) by source.", "batches"),
        "sendtime_rows_received": ("Records received by ingest, by source.", "received"),
        "sendtime_rows_ingested": ("Records accepted into the lake, by source.", "accepted"),
        "sendtime_rows_quarantined": ("Records rejected into quarantine, by source.", "rejected"),
    }
    for name, (doc, attr) in per_source.items():
        family = counter(name, doc, labels=["source"])
        for src in snap.sources:
            family.add_metric([src.source], getattr(src, attr))
        yield family

    yield _gauge(
        gauge,
        "sendtime_last_success_timestamp_seconds",
        "End of the latest successful cycle (unix time; 0: never).",
        epoch(snap.last_success_at) or 0,
    )
    latest = snap.runs[0] if snap.runs else None
    yield _gauge(
        gauge,
        "sendtime_cycle_running",
        "1 while the latest cycle is still running.",
        1 if latest is not None and latest.status == "running" else 0,
    )
    finished = snap.last_finished
    status = gauge("sendtime_last_cycle_status", "1 for the status of the latest finished cycle.", labels=["status"])
    phases = gauge(
        "sendtime_last_cycle_phase_seconds", "Duration of each phase of the latest finished cycle.", labels=["phase"]
    )
    if finished is not None:
        for name in sorted(set(RUN_STATUSES) - {"running"} | {finished.status}):
            status.add_metric([name], 1 if name == finished.status else 0)
        for name, seconds in finished.phases.items():
            phases.add_metric([name], seconds)
        yield _gauge(
            gauge, "sendtime_last_cycle_duration_seconds", "Wall time of the latest finished cycle.", finished.duration
        )
        yield _gauge(
            gauge,
            "sendtime_last_cycle_end_timestamp_seconds",
            "End of the latest finished cycle (unix time).",
            epoch(finished.ended_at),
        )
        for attr in ("rows_changed", "rows_published"):
            yield _gauge(
                gauge,
                f"sendtime_last_cycle_{attr}",
                f"{attr.replace('_', ' ')} by the latest finished cycle.",
                getattr(finished, attr) or 0,
            )
    yield status
    yield phases

    history = snap.history
    duration = histogram(
        "sendtime_cycle_duration_seconds", "Wall time of finished cycles (every cycle in the run log)."
    )
    duration.add_metric([], _buckets(history.duration), history.duration.total)
    yield duration
    by_phase = histogram(
        "sendtime_cycle_phase_duration_seconds", "Seconds per phase of finished cycles.", labels=["phase"]
    )
    for name, buckets in sorted(history.phases.items()):
        by_phase.add_metric([name], _buckets(buckets), buckets.total)
    yield by_phase

    validated = snap.last_validated
    suite_failed = gauge(
        "sendtime_validation_suite_failed",
        "1 when the suite failed in the latest cycle that ran validation.",
        labels=["suite"],
    )
    if validated is not None:
        for suite, ok in sorted(validated.validation.items()):
            suite_failed.add_metric([suite], 0 if ok else 1)
    yield suite_failed
    failures = counter("sendtime_validation_failures", "Cycles in which the suite failed.", labels=["suite"])
    validations = counter("sendtime_validation_runs", "Cycles in which the suite ran.", labels=["suite"])
    for suite in sorted(history.suite_runs):
        failures.add_metric([suite], history.suite_failures.get(suite, 0))
        validations.add_metric([suite], history.suite_runs[suite])
    yield failures
    yield validations


def _recovery_families(settings: Settings, counter: Any, gauge: Any) -> Iterator[Any]:
    """The latest reconcile (pipeline/reconcile_log.py) and the read replica's lag (docs/recovery.md)."""
    from pipeline.reconcile_log import CHECKS, STATUSES, latest
    from pipeline.runlog import store_engine

    engine = store_engine(settings)
    try:
        last, counts = latest(engine)
        lag = _replica_lag(engine) if settings.online_store_read_url else None
    except Exception as exc:  # noqa: BLE001 - the rest of the scrape stands
        log.warning("metrics: reconcile log unreadable", extra={"error_type": type(exc).__name__})
        return
    runs = counter(
        "sendtime_reconcile_runs", "Reconciles of lake, warehouse and online store, by outcome.", labels=["status"]
    )
    for status in sorted(set(STATUSES) | set(counts)):
        runs.add_metric([status], counts.get(status, 0))
    yield runs
    drift = gauge(
        "sendtime_reconcile_drift_rows",
        "Rows the latest reconcile found drifted, by check (0 for every check until a reconcile finds drift).",
        labels=["check"],
    )
    found = last.drift if last is not None else {}
    for check in sorted(set(CHECKS) | set(found)):
        drift.add_metric([check], found.get(check, 0))
    if last is not None:
        yield _gauge(
            gauge,
            "sendtime_reconcile_last_timestamp_seconds",
            "End of the latest reconcile (unix time).",
            epoch(parse_store_time(last.ended_at)),
        )
    yield drift
    if lag is not None:
        yield _gauge(
            gauge,
            "sendtime_replica_lag_seconds",
            "How far the read replica is behind its primary (0: it replayed all it received).",
            lag,
        )


def _replica_lag(engine: Any) -> float | None:
    from sqlalchemy import text

    with engine.connect() as conn:
        row = conn.execute(text(REPLICA_LAG_SQL)).first()
    if row is None or not row[0]:
        return None
    return float(row[1] or 0.0)


def _buckets(buckets: Buckets) -> list[tuple[str, float]]:
    return [
        ("+Inf" if math.isinf(bound) else f"{bound:g}", count) for bound, count in zip(CYCLE_BUCKETS, buckets.counts)
    ]


def _kafka_families(snap: PipelineSnapshot, counter: Any, gauge: Any) -> Iterator[Any]:
    """`sendtime consume`: per-topic totals of the lake batches (received = accepted + quarantined +
    skipped), and what the consumers report (docs/kafka.md, "Observability")."""
    per_topic = {
        "sendtime_kafka_batches": ("Lake batches written by sendtime consume, by topic.", "batches"),
        "sendtime_kafka_records_received": ("Kafka messages consumed into lake batches, by topic.", "received"),
        "sendtime_kafka_records_accepted": ("Kafka messages accepted into the lake, by topic.", "accepted"),
        "sendtime_kafka_records_quarantined": ("Kafka messages rejected into quarantine, by topic.", "rejected"),
        "sendtime_kafka_records_skipped": ("Kafka tombstones skipped (and counted), by topic.", "skipped"),
    }
    for name, (doc, attr) in per_topic.items():
        family = counter(name, doc, labels=["topic", "source"])
        for t in snap.kafka_topics:
            family.add_metric([t.topic, t.source], getattr(t, attr))
        yield family

    lag = gauge(
        "sendtime_kafka_consumer_lag",
        "Offsets of a partition not in the lake yet, as the running consumer last measured them.",
        labels=["topic", "partition"],
    )
    end = gauge(
        "sendtime_kafka_partition_end_offset",
        "End offset of a partition, as the running consumer saw it.",
        labels=["topic", "partition"],
    )
    for p in snap.kafka_lag():
        lag.add_metric([p.topic, str(p.partition)], p.lag)
        end.add_metric([p.topic, str(p.partition)], p.end)
    yield lag
    yield end
    rate = gauge(
        "sendtime_kafka_records_per_second",
        "Messages a second consumed into the lake, over the running consumer's last report interval.",
        labels=["topic"],
    )
    for topic, value in sorted(snap.kafka_rates().items()):
        rate.add_metric([topic], value)
    yield rate

    up = gauge(
        "sendtime_kafka_consumer_up",
        "1 while the consumer runs and reports (0: stopped, failed or silent).",
        labels=["consumer", "group"],
    )
    reported = gauge(
        "sendtime_kafka_consumer_last_report_timestamp_seconds",
        "When the consumer last wrote its state (unix time).",
        labels=["consumer", "group"],
    )
    flushed = gauge(
        "sendtime_kafka_consumer_last_flush_timestamp_seconds",
        "When the consumer last wrote a lake batch (unix time).",
        labels=["consumer", "group"],
    )
    brokers = gauge(
        "sendtime_kafka_brokers_up", "Brokers the running consumer is connected to.", labels=["consumer", "group"]
    )
    errors = counter(
        "sendtime_kafka_client_errors",
        "Kafka client errors by librdkafka code (retried with backoff), over the consumer's life.",
        labels=["consumer", "group", "code"],
    )
    commits = counter(
        "sendtime_kafka_commit_failures",
        "Offset commits to Kafka that failed (retried with backoff; the lake holds the offsets).",
        labels=["consumer", "group"],
    )
    for c in snap.consumers:
        labels = [c.consumer_id, c.group_id]
        running = c.up(snap.now)
        up.add_metric(labels, 1 if running else 0)
        reported.add_metric(labels, epoch(c.updated_at))
        if c.last_flush_at is not None:
            flushed.add_metric(labels, epoch(c.last_flush_at))
        if running and c.brokers_up is not None:
            brokers.add_metric(labels, c.brokers_up)
        for code, count in sorted(c.client_errors.items()):
            errors.add_metric([*labels, code], count)
        commits.add_metric(labels, c.commit_failures)
    yield from (up, reported, flushed, brokers, errors, commits)
