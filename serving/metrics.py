"""Prometheus metrics: API request instrumentation plus pipeline state read from the online store.

Two kinds of metrics, two mechanisms:

* API requests (a counter and a latency histogram by route template, method and status) are
  counted in the process that served the request. Under gunicorn each worker is its own process,
  so they use prometheus_client's multiprocess mode: every worker writes its values to mmap files
  in `PROMETHEUS_MULTIPROC_DIR` and a scrape, whichever worker answers it, merges all the files.
  `serving/server.py` calls `prepare_multiprocess(settings)` before forking and installs
  `child_exit` as gunicorn's hook.
* Pipeline metrics (cycles, rows, validation, freshness) are not counted anywhere in the API: they
  are read from the online store's `runs`, `published_versions` and `ingest_batches` tables at scrape
  time by `PipelineCollector`, so every worker (and every API node on a shared PostgreSQL store)
  reports the same numbers. Totals over the run log (cycles by status, rows, cycle and phase
  duration histograms, validation failures by suite) are folded incrementally per process
  (`RunHistory`): a scrape reads the last minutes of `runs`, not the whole table. Ingest totals
  are one `GROUP BY` of `ingest_batches`; the latest-cycle gauges come from the latest rows.

`/metrics` is open (it carries counts and durations, never a customer id, email or name);
restrict it at the network layer when needed (docs/operations.md).
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from flask import Flask, Response, g, request
from sqlalchemy import Engine, func, or_, select

from pipeline.config import Settings
from pipeline.logs import get_logger
from pipeline.store import RUN_STATUSES
from serving.state import app_settings

log = get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RECENT_RUNS = 100  # latest runs and versions read for the latest-cycle gauges and the status page
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
CYCLE_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, float("inf"))
# the API answers in microseconds to milliseconds; Braze gives an endpoint 2 s
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


# --------------------------------------------------------------------------- multiprocess mode

def multiprocess_dir(settings: Settings) -> Path:
    return settings.run_dir / "prometheus"


def prepare_multiprocess(settings: Settings) -> dict[str, str]:
    """Create an empty metrics folder for one server run and point this process at it.

    Call it in the gunicorn master before any worker is forked (it also sets os.environ, so the
    workers inherit it). Files of a previous run are removed: counters restart with the server,
    which Prometheus' rate() and increase() handle. Returns the environment to hand to a child
    process when gunicorn is started as a subprocess instead.
    """
    path = multiprocess_dir(settings)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    _use_multiprocess_values()
    return {MULTIPROC_ENV: str(path)}


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live gauges (its counters and histograms are kept, as they must be)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's `child_exit` server hook: `child_exit = serving.metrics.child_exit`."""
    mark_process_dead(worker.pid)


def _use_multiprocess_values() -> None:
    """prometheus_client picks its value class when first imported; re-pick it when the
    multiprocess folder was set afterwards (e.g. the server imported Flask and this module first)."""
    from prometheus_client import values

    if os.environ.get(MULTIPROC_ENV) and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.get_value_class()


def _multiprocess_path() -> str | None:
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


# --------------------------------------------------------------------------- request metrics

@dataclass
class _RequestMetrics:
    registry: Any
    requests: Any
    latency: Any
    # labelled children by (route, method, status): `labels()` validates and locks on every call,
    # which doubled the cost per request (measured ~17 us -> ~10 us, multiprocess mode)
    children: dict[tuple[str, str, str], tuple[Any, Any]] = field(default_factory=dict)

    def child(self, labels: tuple[str, str, str]) -> tuple[Any, Any]:
        pair = self.children.get(labels)
        if pair is None:
            pair = self.children[labels] = (self.requests.labels(*labels), self.latency.labels(*labels))
        return pair


_request_metrics: _RequestMetrics | None = None
_request_metrics_lock = threading.Lock()


def _get_request_metrics() -> _RequestMetrics:
    """Created once per process, lazily, so that the multiprocess choice is already made."""
    global _request_metrics
    with _request_metrics_lock:
        if _request_metrics is None:
            _use_multiprocess_values()
            from prometheus_client import CollectorRegistry, Counter, Histogram

            registry = CollectorRegistry(auto_describe=True)
            labels = ("route", "method", "status")
            _request_metrics = _RequestMetrics(
                registry=registry,
                requests=Counter("sendtime_http_requests", "API requests by route template, method and status.",
                                 labels, registry=registry),
                latency=Histogram("sendtime_http_request_duration_seconds",
                                  "API request latency by route template, method and status.",
                                  labels, buckets=LATENCY_BUCKETS, registry=registry),
            )
        return _request_metrics


_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^:<>]+)>")


@lru_cache(maxsize=256)
def route_template(rule: str) -> str:
    """`/api/v1/customers/<customer_id:customer_id>` -> `/api/v1/customers/<customer_id>`."""
    return _CONVERTER.sub(r"<\1>", rule)


def _route_label() -> str:
    # the URL rule, never the URL: keeps customer ids out of the metrics and the series bounded
    rule = request.url_rule
    return route_template(rule.rule) if rule is not None else "unmatched"


def _before_request() -> None:
    g._sendtime_metrics_start = time.perf_counter()


def _after_request(response: Response) -> Response:
    start = g.pop("_sendtime_metrics_start", None)
    if start is not None:
        metrics = _get_request_metrics()
        method = request.method if request.method in _METHODS else "other"
        count, latency = metrics.child((_route_label(), method, str(response.status_code)))
        count.inc()
        latency.observe(time.perf_counter() - start)
    return response


# --------------------------------------------------------------------------- store snapshot

def parse_store_time(value: Any) -> datetime | None:
    """A store timestamp (ISO text, `Z` or offset or naive UTC) -> naive UTC datetime; None if unusable."""
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        if not text:
            return None
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def epoch(value: datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=timezone.utc).timestamp()


def _json_object(text: Any) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text) if isinstance(text, str) else text
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class RunInfo:
    """One row of `runs`, parsed."""

    cycle_id: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    as_of: datetime | None
    phases: dict[str, float]
    rows_read: int
    rows_changed: int
    rows_published: int
    rows_deleted: int
    validation: dict[str, bool]  # suite -> success
    validation_detail: dict[str, Any]
    error: str | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at).total_seconds())

    @classmethod
    def from_row(cls, row: Any) -> "RunInfo":
        phases = {str(k): float(v) for k, v in _json_object(row.phases).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        detail = _json_object(row.validation)
        suites: dict[str, bool] = {}
        for suite, result in detail.items():
            if isinstance(result, dict) and "success" in result:
                suites[str(suite)] = bool(result["success"])
            elif isinstance(result, bool):
                suites[str(suite)] = result
        return cls(
            cycle_id=row.cycle_id, status=row.status or "unknown",
            started_at=parse_store_time(row.started_at), ended_at=parse_store_time(row.ended_at),
            as_of=parse_store_time(row.as_of), phases=phases,
            rows_read=int(row.rows_read or 0), rows_changed=int(row.rows_changed or 0),
            rows_published=int(row.rows_published or 0), rows_deleted=int(row.rows_deleted or 0),
            validation=suites, validation_detail=detail, error=row.error,
        )


@dataclass
class VersionInfo:
    """One row of `published_versions`, parsed."""

    version: int
    cycle_id: str
    as_of: datetime | None
    published_at: datetime | None
    newest_ingested_at: datetime | None
    profiles_upserted: int
    profiles_deleted: int

    @property
    def lag_at_publish(self) -> float | None:
        """How old the newest data was when this version went live."""
        if self.published_at is None or self.newest_ingested_at is None:
            return None
        return max(0.0, (self.published_at - self.newest_ingested_at).total_seconds())

    def lag_at(self, now: datetime) -> float | None:
        if self.newest_ingested_at is None:
            return None
        return max(0.0, (now - self.newest_ingested_at).total_seconds())

    @classmethod
    def from_row(cls, row: Any) -> "VersionInfo":
        return cls(
            version=int(row.version), cycle_id=row.cycle_id, as_of=parse_store_time(row.as_of),
            published_at=parse_store_time(row.published_at),
            newest_ingested_at=parse_store_time(row.newest_ingested_at),
            profiles_upserted=int(row.profiles_upserted or 0), profiles_deleted=int(row.profiles_deleted or 0),
        )


@dataclass
class SourceTotals:
    source: str
    batches: int
    received: int
    accepted: int
    rejected: int


@dataclass
class RunTotals:
    cycles: int = 0
    rows_read: int = 0
    rows_changed: int = 0
    rows_published: int = 0
    rows_deleted: int = 0


@dataclass
class Buckets:
    """A cumulative histogram of seconds, as Prometheus exposes it."""

    counts: list[int] = field(default_factory=lambda: [0] * len(CYCLE_BUCKETS))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(CYCLE_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
        self.total += seconds
        self.n += 1


@dataclass
class RunHistory:
    """Totals over the whole run log, folded incrementally.

    A run is folded (counted for good, never read again by this process) once it is finished and
    started more than FOLD_AFTER ago: finished rows never change, and the margin covers a cycle id
    taken just before another cycle ran (ids are start times). Everything newer is read on every
    scrape and counted on a copy. So a scrape reads the last few minutes of `runs`, not the table;
    the first scrape of a process reads it once."""

    upto: str = ""  # every run with cycle_id <= upto is folded, except open_ids
    open_ids: set[str] = field(default_factory=set)  # old runs still `running`, re-read by id
    by_status: dict[str, RunTotals] = field(default_factory=dict)
    duration: Buckets = field(default_factory=Buckets)
    phases: dict[str, Buckets] = field(default_factory=dict)
    suite_runs: dict[str, int] = field(default_factory=dict)
    suite_failures: dict[str, int] = field(default_factory=dict)
    last_success_at: datetime | None = None
    ingest_upto: str = ""  # batches with batch_id <= ingest_upto are summed in `ingest`
    ingest: dict[str, SourceTotals] = field(default_factory=dict)

    def fold(self, run: RunInfo) -> None:
        totals = self.by_status.setdefault(run.status, RunTotals())
        totals.cycles += 1
        for attr in ("rows_read", "rows_changed", "rows_published", "rows_deleted"):
            setattr(totals, attr, getattr(totals, attr) + getattr(run, attr))
        if run.status == "running":
            return
        if run.duration is not None:
            self.duration.observe(run.duration)
        for phase, seconds in run.phases.items():
            self.phases.setdefault(phase, Buckets()).observe(seconds)
        for suite, ok in run.validation.items():
            self.suite_runs[suite] = self.suite_runs.get(suite, 0) + 1
            self.suite_failures[suite] = self.suite_failures.get(suite, 0) + (0 if ok else 1)
        if run.status == "success" and run.ended_at is not None:
            self.last_success_at = max(filter(None, (self.last_success_at, run.ended_at)))

    def copy(self) -> "RunHistory":
        return copy.deepcopy(self)


FOLD_AFTER = timedelta(minutes=15)
INGEST_FOLD_AFTER = timedelta(hours=1)
_histories: dict[tuple[int, str], RunHistory] = {}
_histories_lock = threading.Lock()


def update_history(conn: Any, history: RunHistory, now: datetime) -> RunHistory:
    """Fold what became final into `history`; return a copy that also counts the newer runs.

    A run still `running` after FOLD_AFTER (a killed cycle that the next cycle will close) does
    not hold the fold back: its id is remembered and re-read by id until it is final."""
    from pipeline import store

    runs = store.runs
    where = runs.c.cycle_id > history.upto
    if history.open_ids:
        where = or_(where, runs.c.cycle_id.in_(sorted(history.open_ids)))
    pending: list[RunInfo] = []
    blocked = False
    for row in conn.execute(select(runs).where(where).order_by(runs.c.cycle_id)):
        run = RunInfo.from_row(row)
        if run.cycle_id in history.open_ids:
            if run.status != "running":
                history.fold(run)
                history.open_ids.discard(run.cycle_id)
            else:
                pending.append(run)
            continue
        old = run.started_at is None or run.started_at < now - FOLD_AFTER
        if old and not blocked:
            if run.status == "running":
                history.open_ids.add(run.cycle_id)
                pending.append(run)
            else:
                history.fold(run)
            history.upto = run.cycle_id
        else:
            blocked = True  # ids sort by start time: everything after this one is newer still
            pending.append(run)
    view = history.copy()
    for run in pending:
        view.fold(run)
    return view


@dataclass
class PipelineSnapshot:
    """What the store says about the pipeline at one instant: the source of /metrics and /status."""

    now: datetime
    versions: list[VersionInfo] = field(default_factory=list)  # newest first
    runs: list[RunInfo] = field(default_factory=list)  # newest first, at most `limit`
    history: RunHistory = field(default_factory=RunHistory)  # totals over every run
    sources: list[SourceTotals] = field(default_factory=list)

    @property
    def run_totals(self) -> dict[str, RunTotals]:
        return self.history.by_status

    @property
    def last_success_at(self) -> datetime | None:
        return self.history.last_success_at

    @property
    def current(self) -> VersionInfo | None:
        return self.versions[0] if self.versions else None

    @property
    def freshness_lag(self) -> float | None:
        return self.current.lag_at(self.now) if self.current else None

    @property
    def last_finished(self) -> RunInfo | None:
        return next((r for r in self.runs if r.status != "running"), None)

    @property
    def last_validated(self) -> RunInfo | None:
        return next((r for r in self.runs if r.validation), None)


def read_snapshot(engine: Engine, *, runs_limit: int = RECENT_RUNS, versions_limit: int = RECENT_RUNS,
                  now: datetime | None = None, history: RunHistory | None = None) -> PipelineSnapshot:
    """A few cheap queries: the latest rows for details, the run log since the last fold for
    totals (`history`, kept per process by `snapshot_for`), one aggregate of `ingest_batches`."""
    from pipeline import store

    runs, versions, batches = store.runs, store.published_versions, store.ingest_batches
    snap = PipelineSnapshot(now=now or datetime.now(timezone.utc).replace(tzinfo=None))
    with engine.connect() as conn:
        snap.versions = [VersionInfo.from_row(r) for r in conn.execute(
            select(versions).order_by(versions.c.version.desc()).limit(versions_limit))]
        snap.runs = [RunInfo.from_row(r) for r in conn.execute(
            select(runs).order_by(runs.c.cycle_id.desc()).limit(runs_limit))]
        snap.history = update_history(conn, history if history is not None else RunHistory(), snap.now)
        snap.sources = update_ingest_totals(conn, history if history is not None else RunHistory(), snap.now)
    return snap


def _ingest_totals(conn: Any, after: str | None, upto: str | None) -> dict[str, SourceTotals]:
    """Per-source sums of `ingest_batches` with after < batch_id <= upto (a primary-key range)."""
    from pipeline.store import ingest_batches as b

    query = select(b.c.source, func.count(), func.sum(b.c.received), func.sum(b.c.accepted),
                   func.sum(b.c.rejected)).group_by(b.c.source)
    if after:
        query = query.where(b.c.batch_id > after)
    if upto:
        query = query.where(b.c.batch_id <= upto)
    return {r[0]: SourceTotals(r[0], *(int(x or 0) for x in r[1:])) for r in conn.execute(query)}


def _add_sources(into: dict[str, SourceTotals], more: dict[str, SourceTotals]) -> None:
    for source, t in more.items():
        have = into.setdefault(source, SourceTotals(source, 0, 0, 0, 0))
        have.batches += t.batches
        have.received += t.received
        have.accepted += t.accepted
        have.rejected += t.rejected


def update_ingest_totals(conn: Any, history: RunHistory, now: datetime) -> list[SourceTotals]:
    """Ingest totals by source, folded like the run log: batches that started more than
    INGEST_FOLD_AFTER ago are summed once (batch ids sort by start time, so each scrape sums a
    primary-key range: the batches since the last fold). A batch recorded more than
    INGEST_FOLD_AFTER after it started would be missed by a process that already folded past it;
    ingest records a batch when its file is done, so that needs a single file ingesting for an hour."""
    cutoff = (now - INGEST_FOLD_AFTER).strftime("%Y%m%dT%H%M%S%fZ") + "-~"  # '~' sorts after any hex
    if cutoff > history.ingest_upto:
        _add_sources(history.ingest, _ingest_totals(conn, history.ingest_upto, cutoff))
        history.ingest_upto = cutoff
    totals = copy.deepcopy(history.ingest)
    _add_sources(totals, _ingest_totals(conn, history.ingest_upto, None))
    return [totals[k] for k in sorted(totals)]


_engines: dict[tuple[int, str], Engine] = {}
_engines_lock = threading.Lock()


def store_engine(settings: Settings) -> Engine:
    """One small engine per process and store URL, made after fork (never shared across workers)."""
    from pipeline.store import engine_for

    key = (os.getpid(), settings.store_url)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = engine_for(settings, pool_size=2, max_overflow=2) \
                if not settings.store_url.startswith("sqlite") else engine_for(settings)
        return engine


# --------------------------------------------------------------------------- pipeline collector

class StoreMissing(Exception):
    """No online store yet (a fresh home before the first publish)."""


def snapshot_for(settings: Settings, **kwargs: Any) -> PipelineSnapshot:
    """`read_snapshot` of the settings' store; never creates an empty SQLite file."""
    if settings.store_url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(settings.store_url).database
        if not database or not os.path.exists(database):
            raise StoreMissing("the online store does not exist yet")
    key = (os.getpid(), settings.store_url)
    with _histories_lock:
        history = _histories.setdefault(key, RunHistory())
        # one scrape at a time per process folds into the shared history
        return read_snapshot(store_engine(settings), history=history, **kwargs)


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
            # the gauges need the current version and the latest finished / validated cycles only
            snap = snapshot_for(self.settings, runs_limit=20, versions_limit=1)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the store is down
            log.warning("metrics: online store unreadable", extra={"error_type": type(exc).__name__})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _pipeline_families(snap, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)
        took = GaugeMetricFamily("sendtime_metrics_store_read_seconds",
                                 "Time this scrape spent reading the online store.")
        took.add_metric([], time.perf_counter() - started)
        yield took


def _gauge(cls: Any, name: str, doc: str, value: float | None, labels: Iterable[str] = ()) -> Any:
    metric = cls(name, doc, labels=list(labels))
    if value is not None:
        metric.add_metric([], value)
    return metric


def _pipeline_families(snap: PipelineSnapshot, counter: Any, gauge: Any, histogram: Any) -> Iterator[Any]:
    current = snap.current
    yield _gauge(gauge, "sendtime_published_version", "Version number of the published state (0: none yet).",
                 current.version if current else 0)
    if current is not None:
        yield _gauge(gauge, "sendtime_published_timestamp_seconds",
                     "When the current published version went live (unix time).", epoch(current.published_at))
        yield _gauge(gauge, "sendtime_published_as_of_timestamp_seconds",
                     "The as_of of the cycle that produced the current version (unix time).", epoch(current.as_of))
        yield _gauge(gauge, "sendtime_freshness_lag_seconds",
                     "Now minus the newest ingested_at in the published state.", snap.freshness_lag)

    cycles = counter("sendtime_cycles", "Pipeline cycles by status (every cycle in the run log).", labels=["status"])
    for status in sorted(set(RUN_STATUSES) | set(snap.run_totals)):
        cycles.add_metric([status], snap.run_totals.get(status, RunTotals()).cycles)
    yield cycles
    for attr, doc in (("rows_read", "Changed mart rows read by cycles."),
                      ("rows_changed", "Mart rows changed by cycles."),
                      ("rows_published", "Profiles upserted into the online store by cycles."),
                      ("rows_deleted", "Profiles erased from the online store by cycles.")):
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

    yield _gauge(gauge, "sendtime_last_success_timestamp_seconds",
                 "End of the latest successful cycle (unix time; 0: never).", epoch(snap.last_success_at) or 0)
    latest = snap.runs[0] if snap.runs else None
    yield _gauge(gauge, "sendtime_cycle_running", "1 while the latest cycle is still running.",
                 1 if latest is not None and latest.status == "running" else 0)
    finished = snap.last_finished
    status = gauge("sendtime_last_cycle_status", "1 for the status of the latest finished cycle.", labels=["status"])
    phases = gauge("sendtime_last_cycle_phase_seconds", "Duration of each phase of the latest finished cycle.",
                   labels=["phase"])
    if finished is not None:
        for name in sorted(set(RUN_STATUSES) - {"running"} | {finished.status}):
            status.add_metric([name], 1 if name == finished.status else 0)
        for name, seconds in finished.phases.items():
            phases.add_metric([name], seconds)
        yield _gauge(gauge, "sendtime_last_cycle_duration_seconds", "Wall time of the latest finished cycle.",
                     finished.duration)
        yield _gauge(gauge, "sendtime_last_cycle_end_timestamp_seconds",
                     "End of the latest finished cycle (unix time).", epoch(finished.ended_at))
        for attr in ("rows_changed", "rows_published"):
            yield _gauge(gauge, f"sendtime_last_cycle_{attr}", f"{attr.replace('_', ' ')} by the latest finished cycle.",
                         getattr(finished, attr))
    yield status
    yield phases

    history = snap.history
    duration = histogram("sendtime_cycle_duration_seconds", "Wall time of finished cycles (every cycle in the run log).")
    duration.add_metric([], _buckets(history.duration), history.duration.total)
    yield duration
    by_phase = histogram("sendtime_cycle_phase_duration_seconds", "Seconds per phase of finished cycles.",
                         labels=["phase"])
    for name, buckets in sorted(history.phases.items()):
        by_phase.add_metric([name], _buckets(buckets), buckets.total)
    yield by_phase

    validated = snap.last_validated
    suite_failed = gauge("sendtime_validation_suite_failed",
                         "1 when the suite failed in the latest cycle that ran validation.", labels=["suite"])
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


def _buckets(buckets: Buckets) -> list[tuple[str, float]]:
    return [("+Inf" if math.isinf(bound) else f"{bound:g}", count) for bound, count in zip(CYCLE_BUCKETS, buckets.counts)]


# --------------------------------------------------------------------------- exposition

def render_metrics(settings: Settings) -> tuple[bytes, str]:
    """The /metrics body: request metrics (merged over workers when multiprocess) + pipeline metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    path = _multiprocess_path()
    if path:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        from prometheus_client import PROCESS_COLLECTOR

        _RegistryProxy(_get_request_metrics().registry).register_into(registry)
        registry.register(PROCESS_COLLECTOR)
    registry.register(PipelineCollector(settings))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _RegistryProxy:
    """Exposes one registry's metrics through another (single-process mode)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def register_into(self, registry: Any) -> None:
        registry.register(self)

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Any]:
        return self.source.collect()


def init_app(app: Flask) -> None:
    """Register `/metrics` and the request instrumentation on a Flask app (called by the app factory)."""
    _get_request_metrics()  # fail at start-up, not at the first request
    app.before_request(_before_request)
    app.after_request(_after_request)

    def metrics() -> Response:
        body, content_type = render_metrics(app_settings(app))
        return Response(body, status=200, content_type=content_type, headers={"Cache-Control": "no-store"})

    app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics, methods=["GET"])
