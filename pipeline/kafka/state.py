"""What a running `sendtime consume` reports about itself, for `/metrics` and `/status`.

The API never talks to Kafka: the consumer writes its state to the online store, and every API
worker and node reads the same row at scrape time (pipeline/runlog.py's snapshot). One row per
consumer (`kafka_consumers`, keyed by the consumer's stable member id), written after a flush at
most every MIN_REPORT_SECONDS and at least every REPORT_SECONDS while it runs, and once more at
the stop (`stopped`, or `failed` with the reason):

* lag per (topic, partition): records not in the lake yet, as the consumer sees them: the
  partition's end offset (its cached high watermark, updated by every fetch response) minus the
  consumer's position, plus what it has read but not flushed yet. Offsets, not records: a
  compacted topic or transaction markers make the two differ slightly;
* records per second per topic (received into lake batches over the last report interval);
* the brokers the client is connected to (librdkafka's statistics, every STATS_INTERVAL_MS);
* client errors by librdkafka code (transport, all brokers down, ...) and failed offset commits,
  counted over the consumer's whole life (a restart continues from the stored counts), so that a
  broker outage shows as a rising counter and `brokers_up` 0, never as a crash;
* the last flush, the start, the pid and host.

Per-topic totals (received = accepted + rejected + skipped) are not here: they are the sums of
`kafka_batches` (pipeline/consume_log.py), which survive any consumer.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, Text, inspect, select

from pipeline.clock import iso_z, utcnow
from pipeline.logs import get_logger
from pipeline.store import upsert_statement

log = get_logger(__name__)

REPORT_SECONDS = 5.0  # a running consumer writes its state at least this often (an idle heartbeat)
MIN_REPORT_SECONDS = 1.0  # ... and after a flush, at most this often
STALE_REPORTS = 6  # not heard from for this many report intervals: "not responding" (killed, hung)
STATS_INTERVAL_MS = 5000  # librdkafka statistics (broker states), unless kafka_client sets another
STATUSES = ("running", "stopped", "failed")

metadata = MetaData()

kafka_consumers = Table(
    "kafka_consumers",
    metadata,
    Column("consumer_id", String(255), primary_key=True),  # the static member id: host + hash of the home
    Column("group_id", String(255), nullable=False),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("status", String(16), nullable=False),  # running, stopped, failed
    Column("started_at", String(40)),
    Column("updated_at", String(40), nullable=False),
    Column("last_flush_at", String(40)),
    Column("report_seconds", Float, nullable=False),
    Column("detail", Text, nullable=False),  # JSON: topics, partitions, brokers, errors (below)
)


def ensure_table(engine: Engine) -> None:
    """Created on first use, like `kafka_batches`: only the consumer writes it."""
    metadata.create_all(engine, checkfirst=True)


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    end: int  # the partition's end offset as the consumer last saw it
    lag: int  # offsets not in the lake yet


@dataclass
class ConsumerState:
    """One consumer's report. `records_per_second` and `sources` are per topic."""

    consumer_id: str
    group_id: str
    status: str
    updated_at: datetime
    report_seconds: float = REPORT_SECONDS
    host: str | None = None
    pid: int | None = None
    started_at: datetime | None = None
    last_flush_at: datetime | None = None
    sources: dict[str, str] = field(default_factory=dict)  # topic -> source
    records_per_second: dict[str, float] = field(default_factory=dict)
    partitions: list[PartitionLag] = field(default_factory=list)
    brokers_up: int | None = None  # None: no statistics yet
    brokers_known: int | None = None
    client_errors: dict[str, int] = field(default_factory=dict)  # librdkafka error code -> count
    commit_failures: int = 0
    error: str | None = None  # why a `failed` consumer stopped

    @property
    def stale_after(self) -> timedelta:
        return timedelta(seconds=max(STALE_REPORTS * self.report_seconds, 30.0))

    def responding(self, now: datetime) -> bool:
        return now - self.updated_at <= self.stale_after

    def state(self, now: datetime) -> str:
        """running, stopped, failed, or `not responding` (says running, but silent: killed or hung)."""
        if self.status == "running" and not self.responding(now):
            return "not responding"
        return self.status

    def up(self, now: datetime) -> bool:
        return self.state(now) == "running"

    def lag_by_topic(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.partitions:
            out[p.topic] = out.get(p.topic, 0) + p.lag
        return out

    def to_row(self) -> dict[str, Any]:
        detail = {
            "v": 1,
            "sources": self.sources,
            "records_per_second": self.records_per_second,
            "partitions": [[p.topic, p.partition, p.end, p.lag] for p in self.partitions],
            "brokers_up": self.brokers_up,
            "brokers_known": self.brokers_known,
            "client_errors": self.client_errors,
            "commit_failures": self.commit_failures,
            "error": self.error,
        }
        return {
            "consumer_id": self.consumer_id,
            "group_id": self.group_id,
            "host": self.host,
            "pid": self.pid,
            "status": self.status,
            "started_at": iso_z(self.started_at),
            "updated_at": iso_z(self.updated_at),
            "last_flush_at": iso_z(self.last_flush_at),
            "report_seconds": self.report_seconds,
            "detail": orjson.dumps(detail).decode(),
        }

    @classmethod
    def from_row(cls, row: Any) -> ConsumerState | None:
        """None for a row that cannot be read (a newer format, a hand edit): the page skips it."""
        m = row._mapping
        updated = _time(m["updated_at"])
        if updated is None:
            return None
        try:
            d = orjson.loads(m["detail"] or "{}")
            partitions = [PartitionLag(str(t), int(p), int(e), int(lag)) for t, p, e, lag in d.get("partitions", [])]
            return cls(
                consumer_id=m["consumer_id"],
                group_id=m["group_id"],
                status=m["status"],
                updated_at=updated,
                report_seconds=float(m["report_seconds"] or REPORT_SECONDS),
                host=m["host"],
                pid=m["pid"],
                started_at=_time(m["started_at"]),
                last_flush_at=_time(m["last_flush_at"]),
                sources={str(k): str(v) for k, v in (d.get("sources") or {}).items()},
                records_per_second={str(k): float(v) for k, v in (d.get("records_per_second") or {}).items()},
                partitions=partitions,
                brokers_up=d.get("brokers_up"),
                brokers_known=d.get("brokers_known"),
                client_errors={str(k): int(v) for k, v in (d.get("client_errors") or {}).items()},
                commit_failures=int(d.get("commit_failures") or 0),
                error=d.get("error"),
            )
        except (ValueError, TypeError, AttributeError):
            return None


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def write_state(engine: Engine, state: ConsumerState) -> None:
    with engine.begin() as conn:
        conn.execute(upsert_statement(conn, kafka_consumers, ["consumer_id"]), [state.to_row()])


def read_states(conn: Any) -> list[ConsumerState]:
    """Every consumer's latest report, newest first ([] when no consumer ever ran on this store)."""
    if not inspect(conn).has_table("kafka_consumers"):
        return []
    states = [s for s in map(ConsumerState.from_row, conn.execute(select(kafka_consumers))) if s is not None]
    return sorted(states, key=lambda s: s.updated_at, reverse=True)  # parsed: ISO text sorts `.5Z` before `Z`


def partition_lags(
    client: Any, buffered: Mapping[tuple[str, int], int], lake_next: Mapping[str, Mapping[int, int]]
) -> list[PartitionLag]:
    """Lag of every assigned partition, from what the client knows locally (no broker request).

    `buffered`: messages read but not flushed, per (topic, partition); `lake_next`: the lake's
    next offset per topic and partition, for a partition the client has not read from yet."""
    assignment = client.assignment()
    if not assignment:
        return []
    positions = {(tp.topic, tp.partition): tp.offset for tp in client.position(assignment)}
    out = []
    for tp in assignment:
        try:
            marks = client.get_watermark_offsets(tp, cached=True)
        except Exception:  # noqa: BLE001 - KafkaException: nothing cached for this partition yet
            marks = None
        if not marks or marks[1] < 0:
            continue  # no fetch response yet: the end is unknown
        low, high = marks
        position = positions.get((tp.topic, tp.partition), -1)
        if position is None or position < 0:  # nothing read yet: from the lake, or the partition's start
            done = lake_next.get(tp.topic, {}).get(tp.partition)
            lag = high - (done if done is not None else max(low, 0))
        else:
            lag = high - position + buffered.get((tp.topic, tp.partition), 0)
        out.append(PartitionLag(tp.topic, tp.partition, high, max(0, lag)))
    return sorted(out, key=lambda p: (p.topic, p.partition))


class StateReporter:
    """Collects what the state needs while the consumer runs and writes it when due.

    Everything runs on the consumer's thread (librdkafka serves the error and statistics callbacks
    from inside consume()); a write that fails (the store is down or locked) is a warning, at most
    one a minute, and never stops the consumer: the lake is what matters."""

    def __init__(self, consumer_id: str, group_id: str, sources: Mapping[str, str]) -> None:
        self.state = ConsumerState(
            consumer_id=consumer_id,
            group_id=group_id,
            status="running",
            updated_at=utcnow(),
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=utcnow(),
            sources=dict(sources),
        )
        self.client_errors: Counter[str] = Counter()
        self.commit_failures = 0
        self.next_at = 0.0  # monotonic time of the next heartbeat
        self.last_at = 0.0  # monotonic time of the last write
        self._mark: tuple[float, dict[str, int]] | None = None  # (time, received per topic) at the last write
        self._warned_at = -1e9

    def resume(self, engine: Engine | None) -> None:
        """Continue the error counters of this consumer's previous run (counters never go back)."""
        if engine is None:
            return
        try:
            with engine.connect() as conn:
                row = conn.execute(
                    select(kafka_consumers).where(kafka_consumers.c.consumer_id == self.state.consumer_id)
                ).first()
        except Exception:  # noqa: BLE001 - a store that cannot be read: start from zero
            return
        previous = ConsumerState.from_row(row) if row is not None else None
        if previous is not None:
            self.client_errors.update(previous.client_errors)
            self.commit_failures = previous.commit_failures

    def on_stats(self, text: str) -> None:
        """librdkafka's statistics: how many of the brokers it learned are connected (state UP)."""
        try:
            brokers = orjson.loads(text).get("brokers") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return
        learned = [b for b in brokers.values() if isinstance(b, dict) and int(b.get("nodeid", -1)) >= 0]
        self.state.brokers_known = len(learned)
        self.state.brokers_up = sum(1 for b in learned if b.get("state") == "UP")

    def count_error(self, code: str) -> None:
        self.client_errors[code] += 1

    def due(self, now: float, flushed: bool) -> bool:
        return now >= self.next_at or (flushed and now - self.last_at >= MIN_REPORT_SECONDS)

    def write(
        self,
        engine: Engine | None,
        *,
        received: Mapping[str, int],
        partitions: list[PartitionLag],
        last_flush_at: datetime | None,
        status: str = "running",
        error: str | None = None,
    ) -> None:
        now = time.monotonic()
        s = self.state
        if self._mark is not None and now > self._mark[0]:
            elapsed = now - self._mark[0]
            s.records_per_second = {t: round((n - self._mark[1].get(t, 0)) / elapsed, 1) for t, n in received.items()}
        else:
            s.records_per_second = {t: 0.0 for t in received}
        self._mark = (now, dict(received))
        s.status, s.error, s.updated_at, s.last_flush_at = status, error, utcnow(), last_flush_at
        s.partitions = partitions if status == "running" else []
        s.client_errors, s.commit_failures = dict(self.client_errors), self.commit_failures
        self.last_at, self.next_at = now, now + REPORT_SECONDS
        if engine is None:
            return
        try:
            write_state(engine, s)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemyError, a locked SQLite file: never fatal
            if now - self._warned_at >= 60:
                self._warned_at = now
                log.warning("consumer state not recorded in the online store", extra={"error": type(exc).__name__})
