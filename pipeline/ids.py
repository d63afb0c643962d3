"""Batch and cycle ids: UTC start time plus randomness, so they sort in time order
(docs/architecture.md, "Time and ids"). The clock itself is `pipeline.clock`."""

from __future__ import annotations

import secrets
from datetime import datetime

from pipeline.clock import iso_z, utcnow

# `utcnow` and `iso_z` live in pipeline.clock; they are still importable from here because
# pipeline/cycle.py, publish.py, store.py and validate.py (and tests/test_publish.py) import them
# from this module. Switch those imports to pipeline.clock, then drop `iso_z` from this line.
__all__ = ["iso_z", "new_batch_id", "new_cycle_id", "utcnow"]


def _time_id(at: datetime | None = None) -> str:
    at = at or utcnow()
    return at.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(4)


def new_batch_id(at: datetime | None = None) -> str:
    """Sorts in ingestion order: UTC start time, then randomness."""
    return _time_id(at)


def new_cycle_id(at: datetime | None = None) -> str:
    """Sorts in time order, so `_cycle_id > X` means written after cycle X."""
    return _time_id(at)
