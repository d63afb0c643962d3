"""Message values -> the validator's input: tombstones skipped, values over 1 MiB or not UTF-8
rejected, the JSON converter's schema wrapper (`{"schema": ..., "payload": ...}`) removed.

Debezium's change event itself needs nothing here: it is the CDC contract's envelope already,
and `pipeline.ingest.Validator` reads it from a topic as from a file (docs/kafka.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

MAX_MESSAGE_BYTES = 1024 * 1024  # a bigger value is quarantined unread: no record of a contract is that big
_WRAPPED = r'^\s*\{\s*"(?:schema|payload)"\s*:'  # the JSON converter's schema wrapper, either key first


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
        rejected.append(
            {
                "line": int(i) + 1,
                "reason": f"message over 1 MiB ({len(value)} bytes)",
                "raw": value.decode("utf-8", "replace"),
            }
        )
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
                rejected.append(
                    {"line": int(i) + 1, "reason": "invalid UTF-8", "raw": values[i].decode("utf-8", "replace")}
                )  # type: ignore[union-attr]
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
            rejected.append(
                {"line": int(idx[j]) + 1, "raw": values[j], "reason": "schema-wrapped payload is not a JSON object"}
            )
    kept = [v for v, k in zip(values, keep) if k]
    return idx[keep], pa.array(kept, pa.string()), rejected, tombstones
