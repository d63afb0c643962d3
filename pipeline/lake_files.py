"""The lake's batches as their file names tell them, without opening a file.

A lake file is `lake/<table>/ingest_date=YYYY-MM-DD/<batch-id>.parquet` and a batch id starts with
the UTC time the batch started, which is its `_ingested_at` (docs/architecture.md, "The lake" and
"Time and ids"); `.<name>.tmp` files are still being written and are not in the lake yet. So the
cycle can tell what arrived by listing folders, and a listing bounded by a date only opens the
partitions from that date on: its cost follows the recent files, not the lake's age.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

PARTITION_PREFIX = "ingest_date="
SUFFIX = ".parquet"
_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
# pipeline/ids.py: UTC start time, then random hex
_BATCH_ID = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]+$")


@dataclass(frozen=True)
class LakeBatch:
    table: str
    batch_id: str
    # None for a file whose name is not a batch id (not written by sendtime's lake writer)
    ingested_at: datetime | None


def batch_time(batch_id: str) -> datetime | None:
    """The UTC start time a batch id begins with (None for a name that is not a batch id)."""
    if not _BATCH_ID.match(batch_id):
        return None
    try:
        return datetime.strptime(batch_id.split("-", 1)[0], _TIME_FORMAT)
    except ValueError:
        return None


def is_lake_file(name: str) -> bool:
    return name.endswith(SUFFIX) and not name.startswith(".")


def _partitions(table_dir: Path, since: datetime | None) -> Iterator[Path]:
    try:
        entries = list(os.scandir(table_dir))
    except OSError:
        return
    floor = since.strftime("%Y-%m-%d") if since else ""
    for entry in entries:
        if entry.is_dir() and entry.name.startswith(PARTITION_PREFIX) and entry.name[len(PARTITION_PREFIX) :] >= floor:
            yield Path(entry.path)


def tables(lake_dir: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(lake_dir) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def list_batches(lake_dir: Path, since: Mapping[str, datetime] | None = None) -> list[LakeBatch]:
    """Every landed batch of every lake table; with `since`, a table's batches that started at or
    after its bound only (its older partitions are not even listed). A file not named by a batch id
    is listed with `ingested_at` None (whatever its time: only its content could tell)."""
    out: list[LakeBatch] = []
    for table in tables(lake_dir):
        floor = (since or {}).get(table)
        for partition in _partitions(lake_dir / table, floor):
            try:
                names = [e.name for e in os.scandir(partition)]
            except OSError:
                continue
            for name in names:
                if not is_lake_file(name):
                    continue
                batch_id = name[: -len(SUFFIX)]
                at = batch_time(batch_id)
                if at is not None and floor is not None and at < floor:
                    continue
                out.append(LakeBatch(table, batch_id, at))
    return out


def has_files(table_dir: Path) -> bool:
    for partition in _partitions(table_dir, None):
        try:
            if any(is_lake_file(e.name) for e in os.scandir(partition)):
                return True
        except OSError:
            continue
    return False


def newest_ingested_at(lake_dir: Path) -> datetime | None:
    """The newest batch time in the lake: only each table's newest non-empty partition is listed."""
    newest: datetime | None = None
    for table in tables(lake_dir):
        for partition in sorted(_partitions(lake_dir / table, None), reverse=True):
            try:
                stamps = [batch_time(e.name[: -len(SUFFIX)]) for e in os.scandir(partition) if is_lake_file(e.name)]
            except OSError:
                continue
            stamps = [s for s in stamps if s is not None]
            if stamps:
                top = max(stamps)
                newest = top if newest is None or top > newest else newest
                break
    return newest
