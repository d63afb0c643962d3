"""The run log, read: the one parser of the online store's `runs`, `published_versions` and
`ingest_batches` tables (and, when `sendtime consume` runs, of `kafka_batches` and
`kafka_consumers` through their modules: pipeline/consume_log.py, pipeline/kafka/state.py).

Cycles, publishes and ingests write those rows (pipeline/store.py's writers); this module is the
one place that reads them back and says what they mean. Three users, one model:

* `sendtime runs` (`read_runs`, `list_runs`, `format_runs`);
* the status page (serving/status.py) and the pipeline metrics of `/metrics`
  (serving/pipeline_metrics.py), both through `snapshot_for`: a `PipelineSnapshot` of the store.

Totals over the whole run log (cycles by status, rows, cycle and phase duration histograms,
validation results by suite, ingest counts by source) are folded incrementally per process
(`RunHistory`): a snapshot reads the last minutes of `runs` and a primary-key range of
`ingest_batches`, not the whole tables (docs/operations.md, "Cost of a scrape").

No Flask and no prometheus_client here: the CLI imports this module.
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, inspect, or_, select

from pipeline import store
from pipeline.clock import iso_z, utcnow
from pipeline.config import Settings
from pipeline.consume_log import KafkaTopicTotals, topic_totals_between
from pipeline.kafka.state import ConsumerState, PartitionLag, read_states

RECENT_RUNS = 100  # latest runs and versions a snapshot reads for its details (status page, gauges)
PHASES = ("transform", "read", "validate", "publish")  # the columns of `sendtime runs`
# buckets (seconds) of the cycle and phase duration histograms folded over the run log
CYCLE_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, float("inf"))
FOLD_AFTER = timedelta(minutes=15)
INGEST_FOLD_AFTER = timedelta(hours=1)
COUNTS = ("rows_read", "rows_changed", "rows_published", "rows_deleted")


# --------------------------------------------------------------------------- parsing rows


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
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def epoch(value: datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=UTC).timestamp()


def _json(text: Any) -> Any:
    """A JSON column, decoded; None when empty or not JSON."""
    if text is None or text == "":
        return None
    if not isinstance(text, (str, bytes)):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return None


def _count(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Failure:
    """One failed expectation of a suite, as the run log's `validation` column records it
    (names and counts only: the run log never holds sample values)."""

    expectation: str
    columns: tuple[str, ...]
    unexpected_count: int | None


def failed_expectations(result: Any) -> list[Failure]:
    """The failures of one suite's result (`validation[suite]`); [] when it has none or is not a result."""
    if not isinstance(result, dict):
        return []
    items = result.get("failed") or result.get("failed_expectations") or []
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            out.append(Failure(item, (), None))
        elif isinstance(item, dict):
            name = item.get("expectation") or item.get("expectation_type") or item.get("type") or "expectation"
            column = item.get("column")
            columns = (
                (str(column),)
                if column
                else tuple(
                    str(c) for c in (item.get("column_list") or [item.get("column_A"), item.get("column_B")]) if c
                )
            )
            count = item.get("unexpected_count")
            counted = isinstance(count, (int, float)) and not isinstance(count, bool)
            out.append(Failure(str(name), columns, int(count) if counted else None))
    return out


@dataclass
class RunInfo:
    """One row of `runs`, parsed. Counts are None where the cycle recorded none (still running,
    or failed before counting); `phases` and `validation` are empty then."""

    cycle_id: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    as_of: datetime | None
    phases: dict[str, float]
    rows_read: int | None
    rows_changed: int | None
    rows_published: int | None
    rows_deleted: int | None
    validation: dict[str, bool]  # suite -> success
    validation_detail: dict[str, Any]  # suite -> the result as recorded (rows, failed expectations)
    error: str | None
    logged: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at).total_seconds())

    def failures(self) -> list[tuple[str, Failure]]:
        """(suite, failure) for every failed expectation of this cycle's validation."""
        return [(suite, f) for suite, result in self.validation_detail.items() for f in failed_expectations(result)]

    def to_dict(self) -> dict[str, Any]:
        """The row as logged, JSON columns decoded: what `sendtime runs --json` prints."""
        return dict(self.logged)

    @classmethod
    def from_row(cls, row: Any) -> RunInfo:
        logged = dict(row._mapping)
        logged["phases"] = _json(logged.get("phases"))
        logged["validation"] = _json(logged.get("validation"))
        raw_phases = logged["phases"] if isinstance(logged["phases"], dict) else {}
        phases = {
            str(k): float(v)
            for k, v in raw_phases.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        detail = logged["validation"] if isinstance(logged["validation"], dict) else {}
        suites: dict[str, bool] = {}
        for suite, result in detail.items():
            if isinstance(result, dict) and "success" in result:
                suites[str(suite)] = bool(result["success"])
            elif isinstance(result, bool):
                suites[str(suite)] = result
        return cls(
            cycle_id=row.cycle_id,
            status=row.status or "unknown",
            started_at=parse_store_time(row.started_at),
            ended_at=parse_store_time(row.ended_at),
            as_of=parse_store_time(row.as_of),
            phases=phases,
            rows_read=_count(row.rows_read),
            rows_changed=_count(row.rows_changed),
            rows_published=_count(row.rows_published),
            rows_deleted=_count(row.rows_deleted),
            validation=suites,
            validation_detail=detail,
            error=row.error,
            logged=logged,
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
    def from_row(cls, row: Any) -> VersionInfo:
        return cls(
            version=int(row.version),
            cycle_id=row.cycle_id,
            as_of=parse_store_time(row.as_of),
            published_at=parse_store_time(row.published_at),
            newest_ingested_at=parse_store_time(row.newest_ingested_at),
            profiles_upserted=int(row.profiles_upserted or 0),
            profiles_deleted=int(row.profiles_deleted or 0),
        )


@dataclass
class SourceTotals:
    """Sums of `ingest_batches` for one source."""

    source: str
    batches: int
    received: int
    accepted: int
    rejected: int


# --------------------------------------------------------------------------- totals, folded


@dataclass
class RunTotals:
    cycles: int = 0
    rows_read: int = 0
    rows_changed: int = 0
    rows_published: int = 0
    rows_deleted: int = 0


@dataclass
class Buckets:
    """A cumulative histogram of seconds over CYCLE_BUCKETS, as Prometheus exposes it."""

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
    snapshot and counted on a copy. So a snapshot reads the last few minutes of `runs`, not the
    table; the first one of a process reads it once."""

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
    kafka_upto: str = ""  # the same for `kafka_batches`
    kafka: dict[tuple[str, str], KafkaTopicTotals] = field(default_factory=dict)
    tables: set[str] = field(default_factory=set)  # optional tables seen to exist (they are never dropped)

    def fold(self, run: RunInfo) -> None:
        totals = self.by_status.setdefault(run.status, RunTotals())
        totals.cycles += 1
        for attr in COUNTS:
            setattr(totals, attr, getattr(totals, attr) + (getattr(run, attr) or 0))
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

    def copy(self) -> RunHistory:
        return copy.deepcopy(self)


def update_history(conn: Any, history: RunHistory, now: datetime) -> RunHistory:
    """Fold what became final into `history`; return a copy that also counts the newer runs.

    A run still `running` after FOLD_AFTER (a killed cycle that the next cycle will close) does
    not hold the fold back: its id is remembered and re-read by id until it is final."""
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


def _ingest_totals(conn: Any, after: str | None, upto: str | None) -> dict[str, SourceTotals]:
    """Per-source sums of `ingest_batches` with after < batch_id <= upto (a primary-key range)."""
    b = store.ingest_batches
    query = select(
        b.c.source, func.count(), func.sum(b.c.received), func.sum(b.c.accepted), func.sum(b.c.rejected)
    ).group_by(b.c.source)
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
    INGEST_FOLD_AFTER ago are summed once (batch ids sort by start time, so each snapshot sums a
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


def _has_table(conn: Any, history: RunHistory, name: str) -> bool:
    if name not in history.tables and inspect(conn).has_table(name):
        history.tables.add(name)
    return name in history.tables


def update_kafka_totals(conn: Any, history: RunHistory, now: datetime) -> list[KafkaTopicTotals]:
    """Per-topic totals of `kafka_batches`, folded like `ingest_batches` (same cut-off and the same
    caveat); [] before the first `sendtime consume`."""
    if not _has_table(conn, history, "kafka_batches"):
        return []
    cutoff = (now - INGEST_FOLD_AFTER).strftime("%Y%m%dT%H%M%S%fZ") + "-~"
    if cutoff > history.kafka_upto:
        for key, t in topic_totals_between(conn, history.kafka_upto, cutoff).items():
            history.kafka.setdefault(key, KafkaTopicTotals(*key)).add(t)
        history.kafka_upto = cutoff
    totals = copy.deepcopy(history.kafka)
    for key, t in topic_totals_between(conn, history.kafka_upto, None).items():
        totals.setdefault(key, KafkaTopicTotals(*key)).add(t)
    return [totals[k] for k in sorted(totals)]


def read_consumers(conn: Any, history: RunHistory) -> list[ConsumerState]:
    return read_states(conn) if _has_table(conn, history, "kafka_consumers") else []


# --------------------------------------------------------------------------- the snapshot


@dataclass
class PipelineSnapshot:
    """What the store says about the pipeline at one instant: the source of /metrics and /status."""

    now: datetime
    versions: list[VersionInfo] = field(default_factory=list)  # newest first
    runs: list[RunInfo] = field(default_factory=list)  # newest first, at most `limit`
    history: RunHistory = field(default_factory=RunHistory)  # totals over every run
    sources: list[SourceTotals] = field(default_factory=list)
    kafka_topics: list[KafkaTopicTotals] = field(default_factory=list)  # totals per topic over every batch
    consumers: list[ConsumerState] = field(default_factory=list)  # `sendtime consume` reports, newest first

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

    def kafka_lag(self) -> list[PartitionLag]:
        """Lag per (topic, partition) from the consumers running now; a partition that moved between
        consumers counts once, from the newest report (consumers are newest first)."""
        seen: dict[tuple[str, int], PartitionLag] = {}
        for consumer in self.consumers:
            if consumer.up(self.now):
                for p in consumer.partitions:
                    seen.setdefault((p.topic, p.partition), p)
        return [seen[k] for k in sorted(seen)]

    def kafka_rates(self) -> dict[str, float]:
        """Records per second per topic, over the running consumers' last report interval."""
        out: dict[str, float] = {}
        for consumer in self.consumers:
            if consumer.up(self.now):
                for topic, rate in consumer.records_per_second.items():
                    out[topic] = out.get(topic, 0.0) + rate
        return out


def _latest_runs(conn: Any, limit: int) -> list[RunInfo]:
    runs = store.runs
    return [RunInfo.from_row(r) for r in conn.execute(select(runs).order_by(runs.c.cycle_id.desc()).limit(limit))]


def read_snapshot(
    engine: Engine,
    *,
    runs_limit: int = RECENT_RUNS,
    versions_limit: int = RECENT_RUNS,
    now: datetime | None = None,
    history: RunHistory | None = None,
) -> PipelineSnapshot:
    """A few cheap queries: the latest rows for details, the run log since the last fold for
    totals (`history`, kept per process by `snapshot_for`), one aggregate of `ingest_batches` (and
    of `kafka_batches`, with the consumers' reports, once `sendtime consume` has run)."""
    versions = store.published_versions
    snap = PipelineSnapshot(now=now or utcnow())
    history = history if history is not None else RunHistory()
    with engine.connect() as conn:
        snap.versions = [
            VersionInfo.from_row(r)
            for r in conn.execute(select(versions).order_by(versions.c.version.desc()).limit(versions_limit))
        ]
        snap.runs = _latest_runs(conn, runs_limit)
        snap.history = update_history(conn, history, snap.now)
        snap.sources = update_ingest_totals(conn, history, snap.now)
        snap.kafka_topics = update_kafka_totals(conn, history, snap.now)
        snap.consumers = read_consumers(conn, history)
    return snap


class StoreMissing(Exception):
    """No online store yet (a fresh home before the first publish)."""


_engines: dict[tuple[int, str], Engine] = {}
_engines_lock = threading.Lock()
_histories: dict[tuple[int, str], RunHistory] = {}
_histories_lock = threading.Lock()


def store_engine(settings: Settings) -> Engine:
    """One small engine per process and store URL, made after fork (never shared across workers).
    The API's: it reads the read replica when one is set, and waits at most api_store_timeout."""
    key = (os.getpid(), settings.store_read_url)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            pool = {} if settings.store_read_url.startswith("sqlite") else {"pool_size": 2, "max_overflow": 2}
            engine = _engines[key] = store.api_engine(settings, read=True, **pool)
        return engine


def snapshot_for(settings: Settings, **kwargs: Any) -> PipelineSnapshot:
    """`read_snapshot` of the settings' store with this process's folded history; never creates
    an empty SQLite file (StoreMissing instead)."""
    if settings.store_read_url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(settings.store_read_url).database
        if not database or not os.path.exists(database):
            raise StoreMissing("the online store does not exist yet")
    key = (os.getpid(), settings.store_read_url)
    with _histories_lock:
        history = _histories.setdefault(key, RunHistory())
        # one snapshot at a time per process folds into the shared history
        return read_snapshot(store_engine(settings), history=history, **kwargs)


# --------------------------------------------------------------------------- `sendtime runs`


def read_runs(settings: Settings, limit: int = 20) -> list[RunInfo]:
    """The latest cycles, newest first (an empty list before the first cycle)."""
    engine = store.engine_for(settings)
    try:
        if not store.has_schema(engine):
            return []
        with engine.connect() as conn:
            return _latest_runs(conn, limit)
    finally:
        engine.dispose()


def list_runs(settings: Settings, limit: int = 20) -> list[dict[str, Any]]:
    """The latest cycles as logged (`sendtime runs --json`), newest first."""
    return [run.to_dict() for run in read_runs(settings, limit)]


def _dash(value: Any) -> Any:
    return "-" if value is None else value


def format_runs(runs: Sequence[RunInfo]) -> str:
    """The text table of `sendtime runs`: one line per cycle, plus the failed expectations of a
    cycle whose validation failed, or the error of a failed one."""
    if not runs:
        return "no cycles yet (run `sendtime run` or `sendtime schedule`)"
    header = (
        f"{'cycle_id':34} {'status':17} {'started_at':28} {'took':>8} "
        + " ".join(f"{p:>9}" for p in PHASES)
        + f" {'changed':>8} {'published':>9} {'deleted':>7}"
    )
    lines = [header]
    for run in runs:
        took = f"{run.duration:.2f}s" if run.duration is not None else "-"
        lines.append(
            f"{run.cycle_id:34} {run.status:17} {_dash(iso_z(run.started_at)):28} {took:>8} "
            + " ".join(f"{run.phases[p]:>8.2f}s" if p in run.phases else f"{'-':>9}" for p in PHASES)
            + f" {_dash(run.rows_changed):>8} {_dash(run.rows_published):>9} {_dash(run.rows_deleted):>7}"
        )
        detail = _failure_line(run.failures()) if run.status == "validation_failed" else run.error
        if detail:
            lines.append(f"    {detail[:300]}")
    return "\n".join(lines)


def _failure_line(failures: Iterable[tuple[str, Failure]]) -> str:
    return "; ".join(
        f"{suite}.{','.join(f.columns)}: {f.expectation} ({_dash(f.unexpected_count)} rows)" for suite, f in failures
    )
