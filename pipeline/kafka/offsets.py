"""The lake's record of offsets, which decides where every partition resumes.

Each Kafka batch's lake file carries, in its Parquet key-value metadata (`sendtime.kafka`), the
offset range of every partition it covers. `OffsetLedger` folds those records into the next
offset per (topic, partition), with a checkpoint (`kafka/offsets.json` under the home) so that a
start reads only the footers of files newer than it. `recover` finishes or undoes what a killed
consumer left behind (hidden temporary lake files, pending quarantine files).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import Settings
from pipeline.contracts import CONTRACTS
from pipeline.lake_writer import _fsync_dir
from pipeline.logs import get_logger

log = get_logger(__name__)

META_KEY = b"sendtime.kafka"  # Parquet key-value metadata of a Kafka batch: its offset ranges
LAKE_TMP_SUFFIX = ".kafka-tmp"  # `.<batch>.parquet.kafka-tmp`: only the consumer writes these names
QUARANTINE_PENDING_SUFFIX = ".kafka-pending"  # `.<batch>.jsonl.kafka-pending`: awaiting its lake file

Ranges = dict[int, tuple[int, int]]  # partition -> (first offset, last offset) of one batch


def batch_metadata(batch_id: str, source: str, topic: str, ranges: Ranges, counts: Mapping[str, int]) -> bytes:
    return orjson.dumps(
        {
            "v": 1,
            "batch_id": batch_id,
            "source": source,
            "topic": topic,
            "partitions": {str(p): [a, b] for p, (a, b) in sorted(ranges.items())},
            **counts,
        }
    )


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
            log.warning(
                "Kafka offsets checkpoint unreadable; reading every lake file's record", extra={"file": str(self.path)}
            )
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
            fh.write(
                orjson.dumps(
                    {
                        "v": 1,
                        "through": self.through,
                        "next": {
                            t: {str(p): o for p, o in sorted(parts.items())} for t, parts in sorted(self.next.items())
                        },
                    }
                )
            )
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
            batch_id = path.name[1 : -len(".jsonl" + QUARANTINE_PENDING_SUFFIX)]
            lake_file = settings.lake_dir / source / path.parent.name / f"{batch_id}.parquet"
            if lake_file.exists():
                os.replace(path, path.with_name(f"{batch_id}.jsonl"))
                _fsync_dir(path.parent)
                finished += 1
            else:
                path.unlink(missing_ok=True)
                dropped += 1
    return {"lake_tmp_removed": removed, "quarantine_finished": finished, "quarantine_dropped": dropped}


def lake_offsets(settings: Settings, sources: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every Kafka batch of the lake with its ranges (for tests and operators)."""
    out = []
    for source in sources or CONTRACTS:
        for path in sorted((settings.lake_dir / source).glob("ingest_date=*/*.parquet")):
            record = read_batch_metadata(path)
            if record:
                out.append({**record, "file": str(path)})
    return out
