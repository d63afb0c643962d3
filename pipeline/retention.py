"""Quarantine retention (`quarantine_retention_days`, default 30): cycles delete older quarantine files.

A quarantine file's age is its batch's: the file is named after the batch id, which starts with the
UTC time the batch started (docs/architecture.md "Time and ids"); a file named otherwise counts from
its modification time. Emptied `ingest_date=` folders go too. The lake index forgets the files.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pipeline.clock import utcnow
from pipeline.config import Settings
from pipeline.logs import get_logger

log = get_logger(__name__)


class _Forgets(Protocol):
    def forget(self, path: os.PathLike) -> None: ...


def _batch_time(name: str) -> datetime | None:
    try:
        return datetime.strptime(name.split("-", 1)[0], "%Y%m%dT%H%M%S%fZ")
    except ValueError:
        return None


def expire_quarantine(settings: Settings, index: _Forgets | None = None, now: datetime | None = None) -> int:
    """Delete quarantine files older than the retention; returns how many."""
    root = settings.quarantine_dir
    if not root.is_dir():
        return 0
    cutoff = (now or utcnow()) - timedelta(days=settings.quarantine_retention_days)
    removed = 0
    for source in os.scandir(root):
        if not source.is_dir():
            continue
        for part in os.scandir(source.path):
            if not part.is_dir() or not part.name.startswith("ingest_date="):
                continue
            # a whole day folder newer than the cutoff holds nothing old: not even listed
            try:
                day = datetime.strptime(part.name.split("=", 1)[1], "%Y-%m-%d")
            except ValueError:
                day = None
            if day is not None and day > cutoff:
                continue
            for entry in os.scandir(part.path):
                if not entry.is_file() or entry.name.startswith("."):
                    continue
                born = _batch_time(entry.name) or datetime.fromtimestamp(entry.stat().st_mtime, UTC).replace(
                    tzinfo=None
                )
                if born < cutoff:
                    os.unlink(entry.path)
                    removed += 1
                    if index is not None:
                        index.forget(entry.path)
            try:
                os.rmdir(part.path)  # only when empty
            except OSError:
                pass
    if removed:
        log.info(
            "quarantine files expired", extra={"files": removed, "retention_days": settings.quarantine_retention_days}
        )
    return removed
