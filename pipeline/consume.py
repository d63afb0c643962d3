"""`sendtime consume`: Kafka topics into the lake, exactly once, with the contracts of file ingest.

One process per home (a flock under run/), in the foreground. It reads the topics of the topic
map (source -> topic), buffers messages, and every `kafka_flush_seconds` or `kafka_flush_records`
writes one ordinary lake batch per source: validated by the same `Validator` as `sendtime ingest`,
rejected records to quarantine with their topic, partition and offset, tombstones skipped and
counted. docs/kafka.md explains the design; the short version:

Exactly once into the lake
- The commit point of a batch is the rename of its lake file (`os.replace` after fsync). The file
  carries, in its Parquet key-value metadata (`sendtime.kafka`), the offset range of every
  partition it covers: every offset in a range was consumed into this batch, as an accepted row,
  a quarantined record or a skipped tombstone. A batch with nothing accepted is still written
  (0 rows) so that its offsets are recorded.
- The lake's ranges decide where a partition resumes: on assignment, each partition is sought to
  max(recorded last offset) + 1 (a partition the lake has never seen starts at the group's
  committed offset, else at the earliest offset). Offsets are committed to Kafka only after the
  lake file is durable, and only for monitoring and for partitions the lake does not know.
- A crash before the rename leaves a hidden temporary file (removed at the next start) and the
  offsets are read again; a crash after it leaves a complete batch that the next start finds.
  A batch's quarantine file is written and fsynced before the lake rename under a hidden pending
  name and renamed after it; the next start renames a pending file whose lake file exists and
  deletes one whose lake file does not.
- Reading every footer at each start would grow with the lake: a checkpoint (`kafka/offsets.json`
  under the home, written after each flush) holds the ranges up to a batch id, and a start reads
  only the footers of newer files. The checkpoint is a cache of the lake, never the truth.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import operator
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import Settings
from pipeline.contracts import CONTRACTS, lake_schema
from pipeline.errors import SendtimeError
from pipeline.ids import iso_z, new_batch_id, utcnow
from pipeline.ingest import Chunk, Validator, _lake_table
from pipeline.lake_writer import _fsync_dir
from pipeline.locks import FileLock
from pipeline.logs import get_logger

log = get_logger(__name__)

MAX_MESSAGE_BYTES = 1024 * 1024  # a bigger value is quarantined unread: no record of a contract is that big
META_KEY = b"sendtime.kafka"  # Parquet key-value metadata of a Kafka batch: its offset ranges
LAKE_TMP_SUFFIX = ".kafka-tmp"  # `.<batch>.parquet.kafka-tmp`: only the consumer writes these names
QUARANTINE_PENDING_SUFFIX = ".kafka-pending"  # `.<batch>.jsonl.kafka-pending`: awaiting its lake file
CONSUME_MAX_MESSAGES = 10_000  # messages per consume() call
FLUSH_BYTES = 64 * 1024 * 1024  # also flush at this much buffered data: bounds memory with big messages
POLL_SECONDS = 0.2  # bounds how long a signal waits
CONNECT_TIMEOUT_SECONDS = 10.0  # the brokers must answer within this at start
JOIN_GRACE_SECONDS = 10.0  # a stop during the first group join waits this long for the join to finish
CLOSE_TIMEOUT_SECONDS = 20.0  # the client's close (leave the group, callbacks) may take this long
_WRAPPED = r'^\s*\{\s*"(?:schema|payload)"\s*:'  # the JSON converter's schema wrapper, either key first

# Client options the exactly-once design owns: a passthrough may not change them.
PROTECTED_CLIENT_OPTIONS = {
    "bootstrap.servers": "use kafka_bootstrap_servers or --bootstrap-servers",
    "group.id": "use kafka_group_id",
    "enable.auto.commit": "offsets are committed after the lake file is durable",
    "enable.auto.offset.store": "offsets are committed after the lake file is durable",
    "auto.offset.reset": "a partition the lake has not seen starts at its earliest offset",
    "isolation.level": "only committed transactional messages are read",
    "partition.assignment.strategy": "the rebalance callbacks assume the classic eager protocol",
    "group.protocol": "the rebalance callbacks assume the classic eager protocol",
}


_IS_NOT_NONE = functools.partial(operator.is_not, None)


class ConsumeError(SendtimeError):
    """The consumer cannot start (bad topic map, unreachable brokers, busy home): exit 2."""


# --- configuration ------------------------------------------------------------------------------

def parse_topic_map(text: str) -> dict[str, str]:
    """'events=a,customers=b' -> {'events': 'a', 'customers': 'b'} (the --topics form)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConsumeError(f"--topics: expected SOURCE=TOPIC, got {part.strip()!r}")
        source, topic = part.split("=", 1)
        out[source.strip()] = topic.strip()
    if not out:
        raise ConsumeError("--topics: no SOURCE=TOPIC pair given")
    return out


def check_topic_map(topics: Mapping[str, str]) -> dict[str, str]:
    """Validated map of source -> topic. An empty topic disables a source (e.g. to drop a
    default in sendtime.toml); an unknown source or a topic named twice is an error."""
    unknown = sorted(s for s in topics if s not in CONTRACTS)
    if unknown:
        raise ConsumeError(f"kafka topic map names unknown source{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(repr(s) for s in unknown)} (sources: {', '.join(CONTRACTS)})")
    enabled = {s: t.strip() for s, t in topics.items() if t and t.strip()}
    seen: dict[str, str] = {}
    for source, topic in enabled.items():
        if topic in seen:
            raise ConsumeError(f"kafka topic {topic!r} is mapped to two sources ({seen[topic]}, {source})")
        seen[topic] = source
    if not enabled:
        raise ConsumeError("kafka topic map is empty: nothing to consume")
    return enabled


@dataclass(frozen=True)
class ConsumeConfig:
    bootstrap_servers: str
    topics: dict[str, str]  # source -> topic
    group_id: str
    flush_seconds: float
    flush_records: int
    client: dict[str, str] = field(default_factory=dict)
    instance_id: str = ""  # static group membership (KIP-345); "" = dynamic

    @classmethod
    def from_settings(cls, settings: Settings, *, bootstrap_servers: str | None = None,
                      topics: str | None = None) -> ConsumeConfig:
        """Settings, then the command line (`--topics` replaces the whole map)."""
        topic_map = parse_topic_map(topics) if topics else dict(settings.kafka_topics)
        client = {str(k): str(v) for k, v in settings.kafka_client.items()}
        for key in client:
            if key in PROTECTED_CLIENT_OPTIONS:
                raise ConsumeError(f"kafka_client option {key!r} cannot be set: {PROTECTED_CLIENT_OPTIONS[key]}")
        # One consumer per home, so the home names a stable group member: a consumer restarted after
        # a crash takes its partitions back at once instead of waiting for the dead member's session
        # to time out (45 s by default). kafka_client `group.instance.id` overrides it; "" turns it off.
        instance_id = client.pop("group.instance.id", None)
        if instance_id is None:
            digest = hashlib.sha256(str(settings.home.resolve()).encode()).hexdigest()[:12]
            instance_id = f"sendtime-{socket.gethostname()}-{digest}"
        return cls(bootstrap_servers=bootstrap_servers or settings.kafka_bootstrap_servers,
                   topics=check_topic_map(topic_map), group_id=settings.kafka_group_id,
                   flush_seconds=settings.kafka_flush_seconds, flush_records=settings.kafka_flush_records,
                   client=client, instance_id=instance_id)

    def client_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            # a topic created after the start (Debezium creates them on the first change) is found soon
            "topic.metadata.refresh.interval.ms": 10_000,
            **self.client,
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "logger": logging.getLogger("librdkafka"),
        }
        if self.instance_id:
            conf["group.instance.id"] = self.instance_id
        return conf


# --- the lake's record of offsets ------------------------------------------------------------------

Ranges = dict[int, tuple[int, int]]  # partition -> (first offset, last offset) of one batch


def batch_metadata(batch_id: str, source: str, topic: str, ranges: Ranges, counts: Mapping[str, int]) -> bytes:
    return orjson.dumps({"v": 1, "batch_id": batch_id, "source": source, "topic": topic,
                         "partitions": {str(p): [a, b] for p, (a, b) in sorted(ranges.items())}, **counts})


def read_batch_metadata(path: Path) -> dict[str, Any] | None:
    """The `sendtime.kafka` record of a lake file, or None for a file not written by the consumer."""
    try:
        meta = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowException):
        log.warning("unreadable lake file skipped while reading Kafka offsets", extra={"file": str(path)})
        return None
    raw = meta.get(META_KEY)
    return orjson.loads(raw) if raw else None


class OffsetLedger:
    """Next offset per (topic, partition) according to the lake; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.home / "kafka" / "offsets.json"
        self.next: dict[str, dict[int, int]] = {}
        self.through = ""  # every lake file with a batch id <= this is reflected in `next`
        self.scanned = 0
        # Kafka batches newer than the checkpoint: a killed consumer may not have logged them yet
        self.found: list[tuple[Path, dict[str, Any]]] = []

    def load(self) -> None:
        try:
            data = orjson.loads(self.path.read_bytes())
            self.next = {t: {int(p): int(o) for p, o in parts.items()} for t, parts in data["next"].items()}
            self.through = str(data["through"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("Kafka offsets checkpoint unreadable; reading every lake file's record",
                        extra={"file": str(self.path)})
            self.next, self.through = {}, ""
        newest = self.through
        since_day = self.through[:8]  # batch ids start with YYYYMMDD
        for source in CONTRACTS:
            root = self.settings.lake_dir / source
            if not root.is_dir():
                continue
            for day in root.glob("ingest_date=*"):
                if since_day and day.name.replace("ingest_date=", "").replace("-", "") < since_day:
                    continue
                for path in day.glob("*.parquet"):
                    if path.stem <= self.through:
                        continue
                    newest = max(newest, path.stem)
                    self.scanned += 1
                    record = read_batch_metadata(path)
                    if record:
                        self._add(record["topic"], {int(p): (r[0], r[1]) for p, r in record["partitions"].items()})
                        self.found.append((path, record))
        self.through = newest

    def _add(self, topic: str, ranges: Ranges) -> None:
        parts = self.next.setdefault(topic, {})
        for partition, (_, last) in ranges.items():
            parts[partition] = max(parts.get(partition, 0), last + 1)

    def next_offset(self, topic: str, partition: int) -> int | None:
        return self.next.get(topic, {}).get(partition)

    def advance(self, batch_id: str, topic: str, ranges: Ranges) -> None:
        self._add(topic, ranges)
        self.through = max(self.through, batch_id)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(".offsets.json.tmp")
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps({"v": 1, "through": self.through,
                                   "next": {t: {str(p): o for p, o in sorted(parts.items())}
                                            for t, parts in sorted(self.next.items())}}))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def last_batch_time(self) -> datetime | None:
        try:
            return datetime.strptime(self.through[:22], "%Y%m%dT%H%M%S%fZ")
        except ValueError:
            return None


def recover(settings: Settings) -> dict[str, int]:
    """Finish or undo what a killed consumer left: temporary lake files go; a pending quarantine
    file is renamed when its lake file exists (the batch committed) and deleted otherwise."""
    removed = finished = dropped = 0
    for source in CONTRACTS:
        for path in (settings.lake_dir / source).glob(f"ingest_date=*/.*.parquet{LAKE_TMP_SUFFIX}"):
            path.unlink(missing_ok=True)
            removed += 1
        for path in (settings.quarantine_dir / source).glob(f"ingest_date=*/.*.jsonl{QUARANTINE_PENDING_SUFFIX}"):
            batch_id = path.name[1:-len(".jsonl" + QUARANTINE_PENDING_SUFFIX)]
            lake_file = settings.lake_dir / source / path.parent.name / f"{batch_id}.parquet"
            if lake_file.exists():
                os.replace(path, path.with_name(f"{batch_id}.jsonl"))
                _fsync_dir(path.parent)
                finished += 1
            else:
                path.unlink(missing_ok=True)
                dropped += 1
    return {"lake_tmp_removed": removed, "quarantine_finished": finished, "quarantine_dropped": dropped}


def _failpoint(name: str) -> None:
    """Crash tests: `SENDTIME_FAILPOINT=<name>` kills the process (SIGKILL) at that point of a flush."""
    if os.environ.get("SENDTIME_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


# --- one batch: buffer -> validated lake file (+ quarantine) ------------------------------------------

@dataclass
class TopicBuffer:
    """Messages of one topic read since the last flush, in consumption order."""

    topic: str
    source: str
    values: list[bytes | None] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    def clear(self) -> None:
        self.values, self.partitions, self.offsets = [], [], []


@dataclass
class Prepared:
    """Messages turned into the validator's input: `lines` index the buffer (1-based)."""

    lines: pa.Array
    raw: pa.Array
    rejected: list[dict[str, Any]]
    skipped: int


def prepare(values: list[bytes | None]) -> Prepared:
    """Tombstones are skipped; values over 1 MiB or not UTF-8 are rejected; the JSON converter's
    schema wrapper is removed (its payload is the record). Vectorised unless a value is wrapped."""
    n = len(values)
    arr = pa.array(values, pa.binary())
    present = pc.is_valid(arr)
    oversize = pc.fill_null(pc.greater(pc.binary_length(arr), MAX_MESSAGE_BYTES), False)
    keep = pc.and_(present, pc.invert(oversize))
    skipped = n - pc.sum(present.cast(pa.int64())).as_py() if n else 0
    rejected: list[dict[str, Any]] = []
    for i in np.flatnonzero(oversize.to_numpy(zero_copy_only=False)):
        value = values[i] or b""
        rejected.append({"line": int(i) + 1, "reason": f"message over 1 MiB ({len(value)} bytes)",
                         "raw": value.decode("utf-8", "replace")})
    idx = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
    candidates = arr.filter(keep)
    try:
        text = candidates.cast(pa.string())
    except pa.ArrowInvalid:  # some value is not UTF-8: find it in Python (rare), keep its neighbours
        good, ok = [], np.ones(len(idx), dtype=bool)
        for j, i in enumerate(idx):
            try:
                good.append(values[i].decode("utf-8"))  # type: ignore[union-attr]
            except UnicodeDecodeError:
                ok[j] = False
                rejected.append({"line": int(i) + 1, "reason": "invalid UTF-8",
                                 "raw": values[i].decode("utf-8", "replace")})  # type: ignore[union-attr]
        idx, text = idx[ok], pa.array(good, pa.string())
    if len(text) and pc.any(pc.match_substring_regex(text, _WRAPPED)).as_py():
        idx, text, more, wrapped_tombstones = _unwrap(idx, text)
        rejected.extend(more)
        skipped += wrapped_tombstones
    rejected.sort(key=lambda r: r["line"])
    return Prepared(pa.array(idx + 1, pa.int64()), text, rejected, skipped)


def _unwrap(idx: np.ndarray, text: pa.Array) -> tuple[np.ndarray, pa.Array, list[dict[str, Any]], int]:
    """`{"schema": ..., "payload": {...}}` -> the payload's JSON; a null payload is a tombstone."""
    wrapped = pc.match_substring_regex(text, _WRAPPED).to_numpy(zero_copy_only=False)
    values = text.to_pylist()
    keep = np.ones(len(values), dtype=bool)
    rejected: list[dict[str, Any]] = []
    tombstones = 0
    for j in np.flatnonzero(wrapped):
        try:
            obj = orjson.loads(values[j])
        except orjson.JSONDecodeError:
            continue  # the validator names the JSON error
        if not isinstance(obj, dict) or set(obj) != {"schema", "payload"}:
            continue  # a record that merely starts with such a key
        payload = obj["payload"]
        if payload is None:
            keep[j] = False
            tombstones += 1
        elif isinstance(payload, dict):
            values[j] = orjson.dumps(payload).decode()
        else:
            keep[j] = False
            rejected.append({"line": int(idx[j]) + 1, "raw": values[j],
                             "reason": "schema-wrapped payload is not a JSON object"})
    kept = [v for v, k in zip(values, keep) if k]
    return idx[keep], pa.array(kept, pa.string()), rejected, tombstones


@dataclass
class BatchResult:
    batch_id: str
    source: str
    topic: str
    ranges: Ranges
    received: int
    accepted: int
    rejected: int
    skipped: int
    lake_file: Path
    quarantine_path: Path | None
    ingested_at: datetime


class BatchWriter:
    """Writes one buffer as one lake batch; one Validator (one DuckDB connection) per source."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.validators: dict[str, Validator] = {}

    def close(self) -> None:
        for v in self.validators.values():
            v.close()

    def _validator(self, source: str, ingested_at: datetime) -> Validator:
        validator = self.validators.get(source)
        if validator is None:
            validator = self.validators[source] = Validator(source, ingested_at)
        validator.ingested_at = ingested_at  # the future-timestamp bound counts from this batch
        return validator

    def write(self, buf: TopicBuffer, batch_id: str, ingested_at: datetime,
              already: Mapping[int, int]) -> BatchResult | None:
        """`already`: partition -> next offset the lake holds; older messages (a redelivery) are dropped."""
        parts = np.asarray(buf.partitions, dtype=np.int64)
        offs = np.asarray(buf.offsets, dtype=np.int64)
        values = buf.values
        fresh = _fresh(parts, offs, already)
        if not fresh.all():
            log.warning("dropped messages the lake already holds", extra={"topic": buf.topic,
                                                                          "messages": int((~fresh).sum())})
            keep = np.flatnonzero(fresh)
            parts, offs, values = parts[keep], offs[keep], [values[i] for i in keep]
        if len(values) == 0:
            return None
        source, topic = buf.source, buf.topic
        prepared = prepare(values)
        validator = self._validator(source, ingested_at)
        accepted, rejected = validator.run(Chunk(prepared.lines, prepared.raw, pre_rejected=prepared.rejected))
        rows = accepted.num_rows
        table = _lake_table(accepted, source, batch_id, ingested_at, f"kafka:{topic}")
        if rows:
            at = accepted.column("line").to_numpy() - 1  # the `_source_file` of a row names its message
            names = pc.binary_join_element_wise(pa.scalar(f"kafka:{topic}"), pa.array(parts[at]).cast(pa.string()),
                                                pa.array(offs[at]).cast(pa.string()), ":")
            table = table.set_column(table.schema.get_field_index("_source_file"), "_source_file", names)
        ranges: Ranges = {}
        for p in np.unique(parts):
            sel = offs[parts == p]
            ranges[int(p)] = (int(sel.min()), int(sel.max()))
        counts = {"received": len(values), "accepted": rows, "rejected": len(rejected), "skipped": prepared.skipped}
        assert counts["received"] == rows + len(rejected) + prepared.skipped, counts

        day = f"ingest_date={ingested_at:%Y-%m-%d}"
        lake_dir, quarantine_dir = self.settings.lake_dir / source / day, self.settings.quarantine_dir / source / day
        lake_dir.mkdir(parents=True, exist_ok=True)
        final = lake_dir / f"{batch_id}.parquet"
        pending = quarantine_final = None
        if rejected:
            quarantine_dir.mkdir(parents=True, exist_ok=True)
            quarantine_final = quarantine_dir / f"{batch_id}.jsonl"
            pending = quarantine_dir / f".{batch_id}.jsonl{QUARANTINE_PENDING_SUFFIX}"
            with open(pending, "wb") as fh:
                for r in rejected:
                    i = r["line"] - 1
                    r.update(source_file=f"kafka:{topic}", topic=topic, partition=int(parts[i]), offset=int(offs[i]))
                    fh.write(orjson.dumps(r) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        tmp = lake_dir / f".{batch_id}.parquet{LAKE_TMP_SUFFIX}"
        schema = lake_schema(source).with_metadata({META_KEY: batch_metadata(batch_id, source, topic, ranges, counts)})
        pq.write_table(table.cast(schema), tmp, compression="zstd", row_group_size=128 * 1024)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _failpoint("before-lake-rename")
        os.replace(tmp, final)  # the commit point of the batch
        _fsync_dir(lake_dir)
        _failpoint("after-lake-rename")
        if pending is not None and quarantine_final is not None:
            os.replace(pending, quarantine_final)
            _fsync_dir(quarantine_dir)
        return BatchResult(batch_id, source, topic, ranges, counts["received"], rows, len(rejected),
                           prepared.skipped, final, quarantine_final, ingested_at)


def _fresh(parts: np.ndarray, offs: np.ndarray, already: Mapping[int, int]) -> np.ndarray:
    """Messages not yet in the lake, and each (partition, offset) once."""
    keep = np.ones(len(offs), dtype=bool)
    for p, nxt in already.items():
        keep &= ~((parts == p) & (offs < nxt))
    if len(offs) > 1:
        key = parts * (1 << 40) + offs
        _, first = np.unique(key, return_index=True)
        once = np.zeros(len(offs), dtype=bool)
        once[first] = True
        keep &= once
    return keep


# --- the consumer ---------------------------------------------------------------------------------

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
            lines.append(f"  {topic}: received {t.received}, accepted {t.accepted}, rejected {t.rejected}, "
                         f"skipped {t.skipped} in {t.batches} batches")
        return "\n".join(lines)


def consume_lock(settings: Settings) -> FileLock:
    return FileLock(settings.run_dir / "consume.lock")


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

    # -- setup --
    def open(self) -> None:
        from confluent_kafka import Consumer

        stats = recover(self.settings)
        if any(stats.values()):
            log.info("recovered after an interrupted consumer", extra=stats)
        self.ledger.load()
        self.last_batch_at = self.ledger.last_batch_time()
        log.info("lake offsets read", extra={"lake_files_read": self.ledger.scanned,
                                             "partitions": sum(len(p) for p in self.ledger.next.values())})
        conf = self.config.client_config()
        conf["error_cb"] = self._on_client_error
        try:
            self.consumer = Consumer(conf)
        except Exception as exc:  # noqa: BLE001 - librdkafka's KafkaException for a bad option
            raise ConsumeError(f"invalid Kafka client configuration: {_reason(exc)}") from None
        try:
            meta = self.consumer.list_topics(timeout=CONNECT_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - KafkaException: transport, resolve, timeout
            self.consumer.close()
            raise ConsumeError(f"cannot reach the Kafka brokers at {self.config.bootstrap_servers}: "
                               f"{_reason(exc)}") from None
        missing = sorted(t for t in self.buffers if t not in meta.topics or meta.topics[t].error is not None)
        if missing:
            log.warning("topics not found yet; they are consumed once they exist", extra={"topics": missing})
        self._open_store()
        self._log_found_batches()
        if self.stopping:  # stopped while starting: joining the group now would only delay the exit
            return
        self.consumer.subscribe(list(self.buffers), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        self.subscribed = True
        log.info("consumer started", extra={"topics": self.config.topics, "group_id": self.config.group_id,
                                            "pid": os.getpid()})

    def _open_store(self) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        from pipeline.consume_log import ensure_table
        from pipeline.store import engine_for, migrate

        self.engine = engine_for(self.settings)
        try:
            migrate(self.engine)
            ensure_table(self.engine)
        except SQLAlchemyError as exc:
            log.warning("ingest log unavailable; batches are still written to the lake",
                        extra={"error": type(exc).__name__})

    def _log_found_batches(self) -> None:
        """Batches committed to the lake after the last checkpoint go (again) into the ingest log:
        a kill between a lake rename and its log row must not lose the counts (upserts: idempotent)."""
        for path, record in self.ledger.found:
            ranges = {int(p): (r[0], r[1]) for p, r in record["partitions"].items()}
            quarantine = self.settings.quarantine_dir / record["source"] / path.parent.name / f"{path.stem}.jsonl"
            at = datetime.strptime(path.stem[:22], "%Y%m%dT%H%M%S%fZ")
            self._record(BatchResult(path.stem, record["source"], record["topic"], ranges, record["received"],
                                     record["accepted"], record["rejected"], record["skipped"], path,
                                     quarantine if record["rejected"] else None, at), recovered=True)

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
        log.info("partitions assigned", extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in partitions],
                                               "resume_from_lake": resumed})

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # flush what was read, so the next owner (or this consumer again) resumes right after it
        self.flush()
        self.commit(asynchronous=self.stopping)
        log.info("partitions revoked", extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in partitions]})

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        # one consumer per home writes this lake: what was read is still right to land here
        self.flush()
        log.warning("partitions lost (session timed out)",
                    extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in partitions]})

    def _on_client_error(self, err: Any) -> None:
        """librdkafka retries by itself with backoff; one log line per kind of error a minute."""
        name = err.name()
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
            if self.buffered and (self.buffered >= limit or self.buffered_bytes >= FLUSH_BYTES
                                  or time.monotonic() - (self.oldest or 0) >= self.config.flush_seconds):
                self.flush()
                self.commit(asynchronous=True)
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
            _failpoint("after-checkpoint")

    def _record(self, r: BatchResult, *, recovered: bool = False) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        from pipeline.consume_log import BatchRecord, record_batch

        log.info("kafka batch (found in the lake at start)" if recovered else "kafka batch", extra={"batch_id": r.batch_id, "source": r.source, "topic": r.topic,
                                       "received": r.received, "accepted": r.accepted, "rejected": r.rejected,
                                       "skipped": r.skipped,
                                       "offsets": {str(p): list(x) for p, x in sorted(r.ranges.items())}})
        try:
            record_batch(self.engine, BatchRecord(
                batch_id=r.batch_id, source=r.source, topic=r.topic, ranges=r.ranges, received=r.received,
                accepted=r.accepted, rejected=r.rejected, skipped=r.skipped, lake_file=str(r.lake_file),
                quarantine_path=str(r.quarantine_path) if r.quarantine_path else None,
                ingested_at=iso_z(r.ingested_at) or ""))
        except SQLAlchemyError as exc:
            log.warning("batch not recorded in the ingest log (it is in the lake)",
                        extra={"batch_id": r.batch_id, "error": type(exc).__name__})

    def commit(self, *, asynchronous: bool) -> None:
        """Offsets of batches already durable in the lake; a failure is retried at the next flush."""
        if not self.to_commit:
            return
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self.to_commit.items())]
        _failpoint("before-commit")
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
            self.to_commit.clear()
        except KafkaException as exc:
            # not fatal: the lake holds the offsets; Kafka's copy is for lag and for new partitions
            log.warning("offset commit failed; retried after the next batch", extra={"reason": _reason(exc)})
        _failpoint("after-commit")

    def close(self) -> None:
        """Close the client with a time limit: everything read is in the lake by now, so a close
        stuck on an unreachable coordinator must not keep the process from exiting."""
        try:
            if self.consumer is not None:
                closer = threading.Thread(target=self.consumer.close, name="kafka-close", daemon=True)
                closer.start()
                closer.join(CLOSE_TIMEOUT_SECONDS)
                if closer.is_alive():
                    log.warning("the Kafka client did not close in time; exiting anyway (the lake holds the offsets)",
                                extra={"seconds": CLOSE_TIMEOUT_SECONDS})
        finally:
            self.writer.close()
            if self.engine is not None:
                self.engine.dispose()


def _reason(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    text = arg.str() if hasattr(arg, "str") else str(arg)
    return text.splitlines()[0] if text else type(exc).__name__


def run_consume(settings: Settings, *, bootstrap_servers: str | None = None,
                topics: str | None = None) -> ConsumeSummary:
    """Consume until SIGTERM or Ctrl-C, then flush and return (the CLI exits 0)."""
    config = ConsumeConfig.from_settings(settings, bootstrap_servers=bootstrap_servers, topics=topics)
    lock = consume_lock(settings)
    if not lock.acquire():
        pid = lock.holder_pid()
        raise ConsumeError(f"sendtime consume is already running on {settings.home} "
                           f"({'pid ' + str(pid) if pid else 'another process'}); one per home")
    consumer = StreamConsumer(settings, config)
    signals = {"count": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        consumer.stopping = True
        if signals["count"] > 1:
            # a second signal: leave now; safe, since a killed consumer loses nothing (recovery at start)
            log.warning("stopping now; the buffered messages are read again at the next start")
            os._exit(0)
        log.info("stop requested; flushing what was read", extra={"signal": signum})

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        consumer.open()
        summary = consumer.run()
        log.info("consumer stopped", extra={"seconds": summary.seconds,
                                            "topics": {t: vars(x) for t, x in summary.topics.items()}})
        return summary
    finally:
        try:
            consumer.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            lock.release()


def lake_offsets(settings: Settings, sources: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every Kafka batch of the lake with its ranges (for tests and operators)."""
    out = []
    for source in sources or CONTRACTS:
        for path in sorted((settings.lake_dir / source).glob("ingest_date=*/*.parquet")):
            record = read_batch_metadata(path)
            if record:
                out.append({**record, "file": str(path)})
    return out


__all__ = ["ConsumeConfig", "ConsumeError", "OffsetLedger", "StreamConsumer", "check_topic_map",
           "lake_offsets", "parse_topic_map", "prepare", "recover", "run_consume"]
