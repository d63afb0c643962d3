"""Which records an erasure removes: one rule, used by ingest (every writer of the lake passes
through `pipeline.ingest.Validator`), by the lake index (a restored or replayed file) and by the
cycle's rewrite of lake and quarantine files (pipeline/erasure.py).

A record is erasable when it is the erased customer's and happened at or before the request's
time T (DESIGN.md: "records of that id that occur after the request belong to a new customer and
are kept"):

| source | whose | its time |
|---|---|---|
| events | `customer_id` is theirs; or no `customer_id` and `anonymous_id` is a device linked to them | occurred_at |
| customers | `customer_id` | ts_ms |
| orders | `customer_id` (the order's customer in that change) | ts_ms |
| order_items | `order_id` is an order that was only theirs | ts_ms |
| quarantine | any of the above fields, or their email, in a record that may not even parse | the record's time; unknown counts as erased |

An event of another customer that carries a linked device keeps its place: it is that customer's.
Identifiers are compared as the lake holds them (trimmed; emails also lower-cased).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.erasure_register import Hasher, Snapshot, epoch_ms
from pipeline.timestamps import WHITESPACE, parse_timestamp

# the lake columns that identify a customer, per source (their kind is the column's name)
IDENTIFIERS: dict[str, tuple[str, ...]] = {
    "events": ("customer_id", "anonymous_id"),
    "customers": ("customer_id", "email"),
    "orders": ("customer_id", "order_id"),
    "order_items": ("order_id",),
    "products": (),
}
# the fields of a raw (quarantined) record that can name a customer, at the top level or in a CDC
# record's before/after
RAW_FIELDS = ("customer_id", "anonymous_id", "order_id", "email")
# written by the cycle, never by ingest: a CRM delete kept in force (pipeline/erasure.py)
TOMBSTONE_SOURCE = "sendtime:erasure-tombstone"

_RAW_FIELD = re.compile(
    r'"(customer_id|anonymous_id|order_id|email|occurred_at|ts_ms)"\s*:\s*'
    r'(?:"((?:[^"\\]|\\.){1,400})"|(-?[0-9]{1,19}))'
)


def normalize(kind: str, value: str) -> str:
    value = value.strip(WHITESPACE)
    return value.lower() if kind == "email" else value


class Lookup(Protocol):
    """Per value of an identifier column: the time up to which its records are erased, or null."""

    def __call__(self, kind: str, values: pa.Array) -> pa.Array: ...

    def value(self, kind: str, value: str) -> int | None: ...


class HashLookup:
    """By the register's hashes: ingest and the lake index (no plaintext id anywhere)."""

    def __init__(self, snapshot: Snapshot, hasher: Hasher) -> None:
        self.by_kind = {kind: snapshot.by_kind(kind) for kind in ("customer_id", "anonymous_id", "order_id", "email")}
        self.hasher = hasher
        self._memo: dict[tuple[str, str], int | None] = {}

    def value(self, kind: str, value: str) -> int | None:
        table = self.by_kind.get(kind)
        if not table:
            return None
        key = (kind, value)
        if key not in self._memo:
            if len(self._memo) > 200_000:  # a long-lived consumer: bounded memory
                self._memo.clear()
            self._memo[key] = table.get(self.hasher.hex(kind, normalize(kind, value)))
        return self._memo[key]

    def __call__(self, kind: str, values: pa.Array) -> pa.Array:
        if not self.by_kind.get(kind):
            return pa.nulls(len(values), pa.int64())
        return _per_distinct(values, lambda v: self.value(kind, v))


class PlainLookup:
    """By plaintext identifiers: the cycle's rewrite, which knows the ids it erases."""

    def __init__(self, mapping: dict[str, dict[str, int]]) -> None:
        self.mapping = mapping

    def value(self, kind: str, value: str) -> int | None:
        return self.mapping.get(kind, {}).get(normalize(kind, value))

    def __call__(self, kind: str, values: pa.Array) -> pa.Array:
        if not self.mapping.get(kind):
            return pa.nulls(len(values), pa.int64())
        return _per_distinct(values, lambda v: self.value(kind, v))


def _per_distinct(values: pa.Array, get: Callable[[str], int | None]) -> pa.Array:
    """Apply `get` once per distinct value (a chunk holds few customers, many records)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if len(values) == 0:
        return pa.array([], pa.int64())
    distinct = pc.unique(values)
    found = pa.array([None if v is None else get(v) for v in distinct.to_pylist()], pa.int64())
    if found.null_count == len(found):
        return pa.nulls(len(values), pa.int64())
    return pc.take(found, pc.index_in(values, value_set=distinct))


def _times(source: str, table: pa.Table, rows: pa.Array) -> list[int | None]:
    """Epoch ms of the records at `rows` (indices): occurred_at for events, ts_ms for CDC."""
    if source == "events":
        out = []
        for text in pc.take(table.column("occurred_at"), rows).to_pylist():
            parsed = parse_timestamp(text)
            out.append(None if parsed is None else epoch_ms(parsed))
        return out
    if "ts_ms" in table.column_names:
        return pc.take(table.column("ts_ms"), rows).to_pylist()
    return [None] * len(rows)


def erase_until(source: str, table: pa.Table, lookup: Lookup) -> pa.Array:
    """Per lake row: T when the row belongs to an erased customer (before the time test), else null."""
    n = table.num_rows
    if source == "events":
        by_customer = lookup("customer_id", table.column("customer_id"))
        by_device = lookup("anonymous_id", table.column("anonymous_id"))
        return pc.if_else(pc.is_null(table.column("customer_id")), by_device, by_customer)
    if source in ("customers", "orders"):
        return lookup("customer_id", table.column("customer_id"))
    if source == "order_items":
        return lookup("order_id", table.column("order_id"))
    return pa.nulls(n, pa.int64())


def erasable(source: str, table: pa.Table, lookup: Lookup, *, spare_tombstones: bool = False) -> pa.Array:
    """Per lake row of `source`: is it an erased customer's record from at or before the erasure?
    `spare_tombstones`: the cycle's own CRM-delete tombstones are not records that reappeared."""
    n = table.num_rows
    if n == 0 or not IDENTIFIERS.get(source):
        return pa.array([False] * n, pa.bool_())
    until = erase_until(source, table, lookup)
    candidates = pc.indices_nonzero(pc.is_valid(until))
    if len(candidates) == 0:
        return pa.array([False] * n, pa.bool_())
    times = _times(source, table, candidates)
    limits = pc.take(until, candidates).to_pylist()
    mask = [False] * n
    spared = set()
    if spare_tombstones and "_source_file" in table.column_names:
        files = pc.take(table.column("_source_file"), candidates).to_pylist()
        spared = {i for i, f in enumerate(files) if f == TOMBSTONE_SOURCE}
    for i, (row, at, limit) in enumerate(zip(candidates.to_pylist(), times, limits)):
        if i in spared:
            continue
        mask[row] = at is None or at <= limit  # a record without a readable time is erased (fail safe)
    return pa.array(mask, pa.bool_())


# --------------------------------------------------------------------------- raw records


def raw_identifiers(raw: str | None) -> tuple[list[tuple[str, str]], int | None, bool]:
    """([(kind, value)], epoch ms or None, has a customer_id) of a raw record as received: the
    identifier fields at its top level and in a CDC record's before/after. Text that is not JSON is
    searched for `"field": value` pairs, so a malformed line that names the customer is found too."""
    if not raw:
        return [], None, False
    found: list[tuple[str, str]] = []
    when: Any = None
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        record = None
    if isinstance(record, dict):
        parts = [record] + [record[k] for k in ("before", "after") if isinstance(record.get(k), dict)]
        for part in parts:
            for kind in RAW_FIELDS:
                value = part.get(kind)
                if isinstance(value, (str, int)) and not isinstance(value, bool):
                    text = normalize(kind, str(value))
                    if text:
                        found.append((kind, text))
        when = record.get("occurred_at", record.get("ts_ms"))
    elif record is None:
        for match in _RAW_FIELD.finditer(raw):
            name, text = match.group(1), match.group(2) if match.group(2) is not None else match.group(3)
            if name in ("occurred_at", "ts_ms"):
                when = when if when is not None else (int(text) if name == "ts_ms" and match.group(3) else text)
            elif text and text.strip(WHITESPACE):
                found.append((name, normalize(name, text)))
    parsed = parse_timestamp(when) if when is not None else None
    has_customer = any(kind == "customer_id" for kind, _ in found)
    return found, (None if parsed is None else epoch_ms(parsed)), has_customer


def raw_erasable(raw: str | None, lookup: Lookup) -> bool:
    """Is a quarantined (or rejected) record an erased customer's, from at or before the erasure?
    Its time, when it has a readable one, must be at or before T; without one it is erased."""
    found, when, has_customer = raw_identifiers(raw)
    for kind, value in found:
        if kind == "anonymous_id" and has_customer:
            continue  # another customer's event that carries a linked device: theirs
        limit = lookup.value(kind, value)
        if limit is not None and (when is None or when <= limit):
            return True
    return False


def identifier_values(source: str, table: pa.Table) -> Iterable[tuple[str, list[str]]]:
    """(kind, distinct values) of a lake table's identifier columns (for the lake index)."""
    for column in IDENTIFIERS.get(source, ()):
        if column not in table.column_names:
            continue
        values = pc.unique(
            table.column(column).combine_chunks()
            if isinstance(table.column(column), pa.ChunkedArray)
            else table.column(column)
        )
        kept = [normalize(column, v) for v in values.to_pylist() if v is not None]
        yield column, [v for v in dict.fromkeys(kept) if v]
