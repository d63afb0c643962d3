"""The consumer: poll -> buffer -> flush -> commit, and the rebalance callbacks.

Offsets are committed to Kafka only after their lake file is durable; on every assignment each
partition is sought from the lake's record (pipeline/kafka/offsets.py), never from Kafka's.
"""

from __future__ import annotations

import functools
import operator
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.config import Settings
from pipeline.ids import iso_z, new_batch_id, utcnow
from pipeline.kafka.batches import BatchResult, BatchWriter, TopicBuffer
from pipeline.kafka.config import ConsumeConfig, ConsumeError, default_instance_id
from pipeline.kafka.failpoints import failpoint
from pipeline.kafka.offsets import OffsetLedger, recover
from pipeline.kafka.state import STATS_INTERVAL_MS, StateReporter, partition_lags
from pipeline.logs import get_logger

log = get_logger(__name__)

CONSUME_MAX_MESSAGES = 10_000  # messages per consume() call
FLUSH_BYTES = 64 * 1024 * 1024  # also flush at this much buffered data: bounds memory with big messages
POLL_SECONDS = 0.2  # bounds how long a signal waits
CONNECT_TIMEOUT_SECONDS = 10.0  # the brokers must answer within this at start
JOIN_GRACE_SECONDS = 10.0  # a stop during the first group join waits this long for the join to finish
CLOSE_TIMEOUT_SECONDS = 20.0  # the client's close (leave the group, callbacks) may take this long
COMMIT_RETRY_SECONDS = (1.0, 60.0)  # a failed offset commit is retried after 1 s, doubling up to 60 s

_IS_NOT_NONE = functools.partial(operator.is_not, None)


@dataclass
class TopicTotals:
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    skipped: int = 0
    batches: int = 0


@dataclass
class ConsumeSummary:
    topics: dict[str, TopicTotals]
    seconds: float

    def text(self) -> str:
        lines = [f"consumed for {self.seconds:.1f}s"]
        for topic, t in sorted(self.topics.items()):
            lines.append(
                f"  {topic}: received {t.received}, accepted {t.accepted}, rejected {t.rejected}, "
                f"skipped {t.skipped} in {t.batches} batches"
            )
        return "\n".join(lines)


class StreamConsumer:
    """The poll -> buffer -> flush -> commit loop; see the module docstring for the guarantees."""

    def __init__(self, settings: Settings, config: ConsumeConfig) -> None:
        self.settings = settings
        self.config = config
        self.buffers = {topic: TopicBuffer(topic, source) for source, topic in config.topics.items()}
        self.ledger = OffsetLedger(settings)
        self.writer = BatchWriter(settings)
        self.totals = {topic: TopicTotals() for topic in self.buffers}
        self.stopping = False
        self.buffered = 0
        self.buffered_bytes = 0
        self.oldest: float | None = None  # monotonic time of the oldest buffered message
        self.last_batch_at: datetime | None = None
        self.to_commit: dict[tuple[str, int], int] = {}
        self._warned: dict[str, float] = {}
        self.consumer: Any = None
        self.engine: Any = None
        self.subscribed = False
        self.failed = False  # a lake write failed: the callbacks of the closing client write nothing more
        self.assigned = False  # the first assignment arrived (the group join completed)
        self.failure: str | None = None  # why the consumer stops with an error (kept in its state)
        self.last_flush_at: datetime | None = None  # wall time of the last flush that wrote a batch
        self.commit_retry_at = 0.0  # monotonic: no commit retry before this (backoff after failures)
        self.commit_backoff = COMMIT_RETRY_SECONDS[0]
        self.reporter = StateReporter(
            config.instance_id or default_instance_id(settings),
            config.group_id,
            {topic: source for source, topic in config.topics.items()},
        )

    # -- setup --
    def open(self) -> None:
        from confluent_kafka import Consumer

        stats = recover(self.settings)
        if any(stats.values()):
            log.info("recovered after an interrupted consumer", extra=stats)
        self.ledger.load()
        self.last_batch_at = self.ledger.last_batch_time()
        log.info(
            "lake offsets read",
            extra={
                "lake_files_read": self.ledger.scanned,
                "partitions": sum(len(p) for p in self.ledger.next.values()),
            },
        )
        conf = self.config.client_config()
        conf["error_cb"] = self._on_client_error
        conf["on_commit"] = self._on_commit
        conf["stats_cb"] = self.reporter.on_stats
        conf.setdefault("statistics.interval.ms", STATS_INTERVAL_MS)
        try:
            self.consumer = Consumer(conf)
        except Exception as exc:  # noqa: BLE001 - librdkafka's KafkaException for a bad option
            raise ConsumeError(f"invalid Kafka client configuration: {_reason(exc)}") from None
        try:
            meta = self.consumer.list_topics(timeout=CONNECT_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - KafkaException: transport, resolve, timeout
            self.consumer.close()
            raise ConsumeError(
                f"cannot reach the Kafka brokers at {self.config.bootstrap_servers}: {_reason(exc)}"
            ) from None
        missing = sorted(t for t in self.buffers if t not in meta.topics or meta.topics[t].error is not None)
        if missing:
            log.warning("topics not found yet; they are consumed once they exist", extra={"topics": missing})
        self._open_store()
        self._log_found_batches()
        self.reporter.resume(self.engine)
        self.report()  # "running" on the status page before the group join completes
        if self.stopping:  # stopped while starting: joining the group now would only delay the exit
            return
        self.consumer.subscribe(
            list(self.buffers), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self.subscribed = True
        log.info(
            "consumer started",
            extra={"topics": self.config.topics, "group_id": self.config.group_id, "pid": os.getpid()},
        )

    def _open_store(self) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        from pipeline.consume_log import ensure_table
        from pipeline.kafka import state
        from pipeline.store import engine_for, migrate

        self.engine = engine_for(self.settings)
        try:
            migrate(self.engine)
            ensure_table(self.engine)
            state.ensure_table(self.engine)
        except SQLAlchemyError as exc:
            log.warning(
                "ingest log unavailable; batches are still written to the lake", extra={"error": type(exc).__name__}
            )

    def _log_found_batches(self) -> None:
        """Batches committed to the lake after the last checkpoint go (again) into the ingest log:
        a kill between a lake rename and its log row must not lose the counts (upserts: idempotent)."""
        for path, record in self.ledger.found:
            ranges = {int(p): (r[0], r[1]) for p, r in record["partitions"].items()}
            quarantine = self.settings.quarantine_dir / record["source"] / path.parent.name / f"{path.stem}.jsonl"
            at = datetime.strptime(path.stem[:22], "%Y%m%dT%H%M%S%fZ")
            self._record(
                BatchResult(
                    path.stem,
                    record["source"],
                    record["topic"],
                    ranges,
                    record["received"],
                    record["accepted"],
                    record["rejected"],
                    record["skipped"],
                    path,
                    quarantine if record["rejected"] else None,
                    at,
                ),
                recovered=True,
            )

    # -- rebalance callbacks (run inside consume()) --
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned = True
        resumed = {}
        for tp in partitions:
            nxt = self.ledger.next_offset(tp.topic, tp.partition)
            if nxt is not None:
                tp.offset = nxt  # the lake decides where a partition resumes
                resumed[f"{tp.topic}:{tp.partition}"] = nxt
        consumer.assign(partitions)
        log.info(
            "partitions assigned",
            extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in partitions], "resume_from_lake": resumed},
        )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # flush what was read, so the next owner (or this consumer again) resumes right after it
        self.flush()
        self.commit(asynchronous=self.stopping)
        log.info("partitions revoked", extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in partitions]})

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        # one consumer per home writes this lake: what was read is still right to land here
        self.flush()
        log.warning(
            "partitions lost (session timed out)",
            extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in partitions]},
        )

    def _on_client_error(self, err: Any) -> None:
        """librdkafka retries by itself with backoff; one log line per kind of error a minute."""
        name = err.name()
        self.reporter.count_error(name)
        now = time.monotonic()
        if now - self._warned.get(name, -1e9) >= 60:
            self._warned[name] = now
            log.warning("kafka client error; retrying with backoff", extra={"code": name, "reason": err.str()})
        if err.fatal():
            raise ConsumeError(f"fatal Kafka client error: {err.str()}")

    # -- the loop --
    def run(self) -> ConsumeSummary:
        started = time.monotonic()
        consume = self.consumer.consume
        buffers = self.buffers
        limit = self.config.flush_records
        join_deadline = started + JOIN_GRACE_SECONDS
        # a stop requested while the group join is in flight: let the join finish first (librdkafka's
        # close() can hang on a join in flight; nothing is read in the meantime worth keeping)
        while not self.stopping or (self.subscribed and not self.assigned and time.monotonic() < join_deadline):
            room = max(1, min(CONSUME_MAX_MESSAGES, limit - self.buffered))
            messages = consume(num_messages=room, timeout=POLL_SECONDS)
            if messages:
                if self.oldest is None:
                    self.oldest = time.monotonic()
                self._buffer(messages, buffers)
            flushed = False
            if self.buffered and (
                self.buffered >= limit
                or self.buffered_bytes >= FLUSH_BYTES
                or time.monotonic() - (self.oldest or 0) >= self.config.flush_seconds
            ):
                self.flush()
                self.commit(asynchronous=True)
                flushed = True
            now = time.monotonic()
            if self.to_commit and now >= self.commit_retry_at:  # a commit that failed, after its backoff
                self.commit(asynchronous=True)
            if self.reporter.due(now, flushed):
                self.report()
        self.flush()
        # asynchronous at the stop: with the brokers down a synchronous commit would block the exit,
        # and the lake already holds the offsets (Kafka's copy is for lag and new partitions)
        self.commit(asynchronous=True)
        return ConsumeSummary(self.totals, round(time.monotonic() - started, 3))

    def _buffer(self, messages: list[Any], buffers: dict[str, TopicBuffer]) -> None:
        """Append a consume() batch to the buffers. This runs once per message: `map` over the
        Message methods stays in C (a loop of appends cost ~10% of the consumer's CPU)."""
        from confluent_kafka import Message

        errors = list(map(Message.error, messages))
        # `is not`, never `==`: KafkaError's comparison with None raises inside C (SystemError)
        if any(map(_IS_NOT_NONE, errors)):
            for m, err in zip(messages, errors):
                if err is not None:
                    self._on_message_error(m)
            messages = [m for m, err in zip(messages, errors) if err is None]
            if not messages:
                return
        topics = list(map(Message.topic, messages))
        if topics.count(topics[0]) == len(topics):  # the usual case: one fetch batch, one topic
            groups = [(buffers[topics[0]], messages)]
        else:
            by_topic: dict[str, list[Any]] = {}
            for m, t in zip(messages, topics):
                by_topic.setdefault(t, []).append(m)
            groups = [(buffers[t], ms) for t, ms in by_topic.items()]
        for buf, ms in groups:
            buf.values += map(Message.value, ms)
            buf.partitions += map(Message.partition, ms)
            buf.offsets += map(Message.offset, ms)
        self.buffered += len(messages)
        self.buffered_bytes += sum(map(len, messages))  # len(message) = its value's size

    def _on_message_error(self, m: Any) -> None:
        err = m.error()
        from confluent_kafka import KafkaError

        if err.code() == KafkaError._PARTITION_EOF:
            return
        self._on_client_error(err)

    def _next_batch_time(self) -> datetime:
        """Batch ids increase even if the clock steps back: the checkpoint relies on their order."""
        at = utcnow()
        if self.last_batch_at is not None and at <= self.last_batch_at:
            at = self.last_batch_at + timedelta(microseconds=1)
        self.last_batch_at = at
        return at

    def flush(self) -> None:
        """Every buffered message into the lake (one batch per topic), then the checkpoint."""
        if not self.buffered or self.failed:
            return
        wrote = False
        for topic, buf in self.buffers.items():
            if not len(buf):
                continue
            at = self._next_batch_time()
            batch_id = new_batch_id(at)
            try:
                result = self.writer.write(buf, batch_id, at, self.ledger.next.get(topic, {}))
            except OSError as exc:
                # disk full, permissions: stop with one line; the buffered messages were not
                # committed anywhere, so the next start reads them again (nothing lost)
                self.failed = True
                raise ConsumeError(f"cannot write the lake for topic {topic}: {exc.strerror or exc}") from None
            buf.clear()
            if result is None:
                continue
            wrote = True
            self.last_flush_at = utcnow()
            self.ledger.advance(batch_id, topic, result.ranges)
            for p, (_, last) in result.ranges.items():
                self.to_commit[(topic, p)] = last + 1
            t = self.totals[topic]
            t.received += result.received
            t.accepted += result.accepted
            t.rejected += result.rejected
            t.skipped += result.skipped
            t.batches += 1
            self._record(result)
        self.buffered, self.buffered_bytes, self.oldest = 0, 0, None
        if wrote:
            self.ledger.save()
            failpoint("after-checkpoint")

    def _record(self, r: BatchResult, *, recovered: bool = False) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        from pipeline.consume_log import BatchRecord, record_batch

        log.info(
            "kafka batch (found in the lake at start)" if recovered else "kafka batch",
            extra={
                "batch_id": r.batch_id,
                "source": r.source,
                "topic": r.topic,
                "received": r.received,
                "accepted": r.accepted,
                "rejected": r.rejected,
                "skipped": r.skipped,
                "offsets": {str(p): list(x) for p, x in sorted(r.ranges.items())},
            },
        )
        try:
            record_batch(
                self.engine,
                BatchRecord(
                    batch_id=r.batch_id,
                    source=r.source,
                    topic=r.topic,
                    ranges=r.ranges,
                    received=r.received,
                    accepted=r.accepted,
                    rejected=r.rejected,
                    skipped=r.skipped,
                    lake_file=str(r.lake_file),
                    quarantine_path=str(r.quarantine_path) if r.quarantine_path else None,
                    ingested_at=iso_z(r.ingested_at) or "",
                ),
            )
        except SQLAlchemyError as exc:
            log.warning(
                "batch not recorded in the ingest log (it is in the lake)",
                extra={"batch_id": r.batch_id, "error": type(exc).__name__},
            )

    def commit(self, *, asynchronous: bool) -> None:
        """Offsets of batches already durable in the lake; a failure is retried with backoff."""
        if not self.to_commit:
            return
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self.to_commit.items())]
        failpoint("before-commit")
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
            self.to_commit.clear()  # an asynchronous commit that fails puts them back (_on_commit)
        except KafkaException as exc:
            # not fatal: the lake holds the offsets; Kafka's copy is for lag and for new partitions
            self._commit_failed(_reason(exc))
        failpoint("after-commit")

    def _on_commit(self, err: Any, partitions: list[Any]) -> None:
        """The result of a commit (served inside consume()). Failed offsets go back into `to_commit`
        unless a newer offset of their partition is already waiting, and are retried with backoff."""
        failed = [tp for tp in partitions if err is not None or tp.error is not None]
        if not failed:
            self.commit_backoff = COMMIT_RETRY_SECONDS[0]
            return
        for tp in failed:
            key = (tp.topic, tp.partition)
            if tp.offset >= 0 and self.to_commit.get(key, -1) < tp.offset:
                self.to_commit[key] = tp.offset
        reason = err if err is not None else next(tp.error for tp in failed)
        self._commit_failed(reason.str() if hasattr(reason, "str") else str(reason))

    def _commit_failed(self, reason: str) -> None:
        self.reporter.commit_failures += 1
        now = time.monotonic()
        self.commit_retry_at = now + self.commit_backoff
        if now - self._warned.get("commit", -1e9) >= 60:
            self._warned["commit"] = now
            log.warning(
                "offset commit failed; retried with backoff (the lake holds the offsets)",
                extra={"reason": reason, "retry_seconds": self.commit_backoff},
            )
        self.commit_backoff = min(self.commit_backoff * 2, COMMIT_RETRY_SECONDS[1])

    def report(self, status: str = "running") -> None:
        """Write this consumer's state (lag, rate, brokers, errors) to the online store."""
        partitions = []
        if status == "running" and self.consumer is not None and self.subscribed:
            buffered: dict[tuple[str, int], int] = {}
            if self.buffered:  # rare: a heartbeat between flushes (long kafka_flush_seconds)
                for buf in self.buffers.values():
                    for p in buf.partitions:
                        buffered[(buf.topic, p)] = buffered.get((buf.topic, p), 0) + 1
            try:
                partitions = partition_lags(self.consumer, buffered, self.ledger.next)
            except Exception as exc:  # noqa: BLE001 - KafkaException (closing client): no lag this time
                log.debug("lag not measured", extra={"error": type(exc).__name__})
        self.reporter.write(
            self.engine,
            received={t: x.received for t, x in self.totals.items()},
            partitions=partitions,
            last_flush_at=self.last_flush_at,
            status=status,
            error=self.failure,
        )

    def close(self) -> None:
        """Close the client with a time limit: everything read is in the lake by now, so a close
        stuck on an unreachable coordinator must not keep the process from exiting."""
        try:
            if self.consumer is not None:
                closer = threading.Thread(target=self.consumer.close, name="kafka-close", daemon=True)
                closer.start()
                closer.join(CLOSE_TIMEOUT_SECONDS)
                if closer.is_alive():
                    log.warning(
                        "the Kafka client did not close in time; exiting anyway (the lake holds the offsets)",
                        extra={"seconds": CLOSE_TIMEOUT_SECONDS},
                    )
        finally:
            self.writer.close()
            if self.engine is not None:
                self.report("failed" if self.failure else "stopped")
                self.engine.dispose()


def _reason(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    text = arg.str() if hasattr(arg, "str") else str(arg)
    return text.splitlines()[0] if text else type(exc).__name__
