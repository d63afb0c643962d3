"""The clock: the one representation of time inside sendtime (docs/architecture.md, "Time and ids").

All timestamps are naive `datetime` values holding UTC; in JSON they are ISO-8601 with `Z`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Naive datetime holding UTC: the one representation of time inside sendtime."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso_z(value: datetime | None) -> str | None:
    """Naive-UTC (or aware) datetime -> ISO-8601 with Z; fractional part only when non-zero."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"
