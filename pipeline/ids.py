"""Time and id helpers shared by ingest, cycles and publish (docs/architecture.md, "Time and ids")."""
from __future__ import annotations

import secrets
from datetime import datetime, timezone


def utcnow() -> datetime:
    """Naive datetime holding UTC: the one representation of time inside sendtime."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _time_id(at: datetime | None = None) -> str:
    at = at or utcnow()
    return at.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(4)


def new_batch_id(at: datetime | None = None) -> str:
    """Sorts in ingestion order: UTC start time, then randomness."""
    return _time_id(at)


def new_cycle_id(at: datetime | None = None) -> str:
    """Sorts in time order, so `_cycle_id > X` means written after cycle X."""
    return _time_id(at)


def iso_z(value: datetime | None) -> str | None:
    """Naive-UTC (or aware) datetime -> ISO-8601 with Z; fractional part only when non-zero."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat() + "Z"
