"""Source contracts (DESIGN.md "Source contracts") as data, and the DuckDB SQL that checks them in bulk.

Ingest turns every input (a JSONL line, a CSV row, a Parquet row, a collector record) into one JSON
text, `raw`, and runs `validation_sql` over a chunk `chunk(line BIGINT, raw VARCHAR)`. The query
returns, per record, `reason` (NULL when accepted, else the first rule it breaks) and the lake
columns of docs/architecture.md "The lake". One query per chunk: no Python per record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa

from pipeline.timestamps import WHITESPACE, timestamp_after_sql, timestamp_valid_sql

# email engagement (DESIGN.md "Engagement and send time"): from files, the collector, Kafka and the
# platforms' webhooks (pipeline/webhook_events.py), which all land them through this contract
ENGAGEMENT_EVENT_TYPES = (
    "email_delivered",
    "email_open",
    "email_click",
    "email_bounce",
    "email_unsubscribe",
    "email_spam_report",
)
EVENT_TYPES = (
    "page_view",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "search",
    "login",
    "signup",
    *ENGAGEMENT_EVENT_TYPES,
)
PRODUCT_EVENT_TYPES = ("product_view", "add_to_cart", "remove_from_cart")
ORDER_STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled", "refunded")
CDC_OPS = ("c", "u", "d", "r")
# accepted spellings of a boolean (compared trimmed, lower-cased); stored as 'true'/'false'
TRUE_TEXTS = ("true", "1", "yes")
FALSE_TEXTS = ("false", "0", "no")
# An event stamped further ahead of its ingestion than this is a wrong client clock (a device in
# 2099): rejected at ingest, so it can never reach a mart and fail every later cycle's validation
# (docs/ingest.md, "Decisions"). Whole days: the reason names them.
EVENT_MAX_AHEAD = timedelta(days=2)


@dataclass(frozen=True)
class Field:
    """One field of a record. kind: string, id (string or integer), timestamp, number, integer,
    bool, object, code2, code3 (letters), status, op, sha256 (64 lower-case hex digits). max_ahead
    (timestamps): reject a value more than this after the batch's ingestion time."""

    name: str
    kind: str = "string"
    required: bool = False
    max_ahead: timedelta | None = None


@dataclass(frozen=True)
class Contract:
    source: str
    fields: tuple[Field, ...]  # flat sources: the record's fields; CDC: the row's columns
    cdc: bool = False

    @property
    def key(self) -> str:
        return self.fields[0].name

    @property
    def columns(self) -> list[str]:
        """The source columns of the lake file, in order (metadata columns follow)."""
        names = [f.name for f in self.fields]
        return ["op", "ts_ms", "source_lsn", "row_json", *names] if self.cdc else names


CONTRACTS: dict[str, Contract] = {
    "events": Contract(
        "events",
        (
            Field("event_id", required=True),
            Field("event_type", required=True),
            Field("occurred_at", "timestamp", required=True, max_ahead=EVENT_MAX_AHEAD),
            Field("customer_id"),
            Field("anonymous_id"),
            Field("product_id"),
            Field("properties", "object"),
            # the sha256 of the trimmed, lower-cased email (pipeline.store.email_hash), never the email:
            # an engagement event without a customer_id is the CRM customer with that email (resolved
            # in the warehouse, int_email_addresses_resolved)
            Field("email_hash", "sha256"),
        ),
    ),
    "customers": Contract(
        "customers",
        (
            Field("customer_id", "id", required=True),
            Field("email"),
            Field("first_name"),
            Field("last_name"),
            Field("country", "code2"),
            Field("locale"),
            Field("timezone"),
            Field("marketing_consent", "bool"),
            Field("created_at", "timestamp"),
            Field("updated_at", "timestamp"),
        ),
        cdc=True,
    ),
    "orders": Contract(
        "orders",
        (
            Field("order_id", "id", required=True),
            Field("customer_id", "id"),
            Field("status", "status"),
            Field("currency", "code3"),
            Field("total_amount", "number"),
            Field("created_at", "timestamp"),
            Field("updated_at", "timestamp"),
        ),
        cdc=True,
    ),
    "order_items": Contract(
        "order_items",
        (
            Field("order_item_id", "id", required=True),
            Field("order_id", "id"),
            Field("product_id", "id"),
            Field("quantity", "number"),
            Field("unit_price", "number"),
        ),
        cdc=True,
    ),
    "products": Contract(
        "products",
        (
            Field("product_id", "id", required=True),
            Field("name"),
            Field("category"),
            Field("price", "number"),
            Field("currency", "code3"),
            Field("url"),
            Field("image_url"),
            Field("in_stock", "bool"),
        ),
    ),
}

METADATA_SCHEMA = [
    ("_batch_id", pa.string()),
    ("_ingested_at", pa.timestamp("us")),
    ("_source_file", pa.string()),
    ("_source_line", pa.int64()),
    ("_raw", pa.string()),
]


def lake_schema(source: str) -> pa.Schema:
    contract = CONTRACTS[source]
    typed = {"ts_ms": pa.int64(), "source_lsn": pa.int64()} if contract.cdc else {}
    return pa.schema([(c, typed.get(c, pa.string())) for c in contract.columns] + METADATA_SCHEMA)


# --- SQL building ----------------------------------------------------------------------------


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(_q(v) for v in values) + ")"


_WS = _q(WHITESPACE)
_NUMBER_RE = _q(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INTEGER_RE = _q(r"-?[0-9]{1,18}")
_INT_TYPES = "('BIGINT', 'UBIGINT')"
_NUM_TYPES = "('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT')"

# JSON-ish name of a DuckDB json_type, for reasons like "event_id: expected string, got number"
MACROS = """
CREATE OR REPLACE MACRO st_jname(y) AS CASE
  WHEN y = 'VARCHAR' THEN 'string' WHEN y IN ('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT') THEN 'number'
  WHEN y = 'BOOLEAN' THEN 'boolean' ELSE lower(y) END;
CREATE OR REPLACE MACRO st_show(t) AS '''' || left(t, 24) || CASE WHEN length(t) > 24 THEN '...' ELSE '' END || '''';
"""


_WS_CODES = "(9, 10, 12, 13, 32)"


def _trimmed(text: str) -> str:
    """Trim only values that start or end with whitespace: trim() with a set is costly per value."""
    return (
        f"CASE WHEN ascii({text}) IN {_WS_CODES} OR ascii(right({text}, 1)) IN {_WS_CODES} "
        f"THEN trim({text}, {_WS}) ELSE {text} END"
    )


def _columns(
    obj: str, names: list[str], csv: bool, objects: set[str], paths: dict[str, str] | None = None
) -> tuple[str, list[str]]:
    """Parse `obj` (JSON text) twice in all, whatever the number of fields: one json_type and one
    json_extract_string over the list of paths. Returns the SELECT items of the lists (`_y`, `_s`)
    and the per-field items: y_<name> (json type, NULL when missing), t_<name> (trimmed text,
    NULL when absent), o_<name> (compact JSON text, object fields only)."""
    paths = paths or {}
    plist = "[" + ", ".join(_q("$." + paths.get(n, n)) for n in names) + "]"
    # `obj` is a JSON object or NULL here (records that are not objects were split off before)
    lists = f"json_type({obj}, {plist}) AS _y, json_extract_string({obj}, {plist}) AS _s"
    items = []
    for i, name in enumerate(names, start=1):
        y, s = f"_y[{i}]", f"_s[{i}]"
        if name in objects and csv:  # a CSV cell holding a JSON object's text stands for the object
            # CASE, not AND: DuckDB evaluates both sides of AND, and json_type fails on invalid JSON
            unwrap = f"(CASE WHEN {y} = 'VARCHAR' AND json_valid({s}) THEN json_type({s}) = 'OBJECT' ELSE FALSE END)"
            items.append(f"CASE WHEN {unwrap} THEN 'OBJECT' ELSE {y} END AS y_{name}")
            items.append(f"CASE WHEN {unwrap} THEN json({s})::VARCHAR WHEN {y} = 'OBJECT' THEN {s} END AS o_{name}")
        elif name in objects:
            items.append(f"{y} AS y_{name}")
            items.append(f"CASE WHEN {y} = 'OBJECT' THEN {s} END AS o_{name}")
        else:
            items.append(f"{y} AS y_{name}")
        items.append(f"nullif({_trimmed(s)}, '') AS t_{name}")
    return lists, items


def _field_reason(f: Field, label: str, ingested_at: datetime) -> str:
    """SQL for the first rule field `f` breaks, or NULL. `label` is an SQL string expression."""
    y, t = f"y_{f.name}", f"t_{f.name}"
    present = f"({t} IS NOT NULL AND {y} <> 'NULL')"
    checks: list[tuple[str, str]] = []
    if f.required:
        checks.append((f"NOT {present}", f"'missing required field: ' || {label}"))
    if f.kind in ("string", "code2", "code3", "status", "op", "sha256"):
        checks.append((f"{present} AND {y} <> 'VARCHAR'", f"{label} || ': expected string, got ' || st_jname({y})"))
    elif f.kind == "id":
        checks.append(
            (
                f"{present} AND {y} NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT')",
                f"{label} || ': expected string or integer, got ' || st_jname({y})",
            )
        )
    elif f.kind == "object":
        checks.append((f"{present} AND {y} <> 'OBJECT'", f"{label} || ': expected object, got ' || st_jname({y})"))
    elif f.kind == "number":
        checks.append(
            (
                f"{present} AND NOT ({y} IN {_NUM_TYPES} OR ({y} = 'VARCHAR' AND regexp_full_match({t}, {_NUMBER_RE})))",
                f"{label} || ': expected number, got ' || CASE WHEN {y} = 'VARCHAR' THEN st_show({t}) ELSE st_jname({y}) END",
            )
        )
    elif f.kind == "integer":
        checks.append(
            (
                f"{present} AND NOT (({y} IN {_INT_TYPES} OR {y} = 'VARCHAR') AND regexp_full_match({t}, {_INTEGER_RE}))",
                f"{label} || ': expected integer, got ' || CASE WHEN {y} = 'VARCHAR' THEN st_show({t}) ELSE st_jname({y}) END",
            )
        )
    elif f.kind == "bool":
        ok = (
            f"{y} = 'BOOLEAN' OR ({y} IN {_INT_TYPES} AND {t} IN ('0', '1')) "
            f"OR ({y} = 'VARCHAR' AND lower({t}) IN {_in(TRUE_TEXTS + FALSE_TEXTS)})"
        )
        checks.append(
            (
                f"{present} AND NOT ({ok})",
                f"{label} || ': expected boolean, got ' || "
                f"CASE WHEN {y} = 'VARCHAR' THEN st_show({t}) ELSE st_jname({y}) END",
            )
        )
    elif f.kind == "timestamp":
        checks.append((f"{present} AND NOT {timestamp_valid_sql(t, y)}", f"{label} || ': unparseable timestamp'"))
        if f.max_ahead is not None:  # after the validity check: CASE runs it on valid values only
            checks.append(
                (
                    f"{present} AND {timestamp_after_sql(t, ingested_at + f.max_ahead)}",
                    f"{label} || ': more than {f.max_ahead.days} days in the future'",
                )
            )
    if f.kind == "code2":
        checks.append(
            (
                f"{present} AND NOT regexp_full_match({t}, '[A-Za-z]{{2}}')",
                f"{label} || ': expected a 2-letter country code, got ' || st_show({t})",
            )
        )
    elif f.kind == "code3":
        checks.append(
            (
                f"{present} AND NOT regexp_full_match({t}, '[A-Za-z]{{3}}')",
                f"{label} || ': expected a 3-letter currency code, got ' || st_show({t})",
            )
        )
    elif f.kind == "status":
        checks.append(
            (
                f"{present} AND lower({t}) NOT IN {_in(ORDER_STATUSES)}",
                f"{label} || ': unknown status ' || st_show({t})",
            )
        )
    elif f.kind == "op":
        checks.append((f"{present} AND {t} NOT IN {_in(CDC_OPS)}", f"{label} || ': unknown CDC op ' || st_show({t})"))
    elif f.kind == "sha256":
        checks.append(
            (
                f"{present} AND NOT regexp_full_match({t}, '[0-9a-f]{{64}}')",
                f"{label} || ': expected 64 lower-case hex digits (the sha256 of the trimmed, lower-cased "
                f"email), got ' || st_show({t})",
            )
        )
    return _first(checks)


def _first(checks: list[tuple[str, str]]) -> str:
    if not checks:
        return "NULL"
    return "CASE " + " ".join(f"WHEN {cond} THEN {reason}" for cond, reason in checks) + " END"


def _out(f: Field) -> str:
    """The lake column of field `f`: trimmed text; objects as compact JSON; booleans as true/false."""
    t, y = f"t_{f.name}", f"y_{f.name}"
    if f.kind == "object":
        return f"o_{f.name} AS {f.name}"
    if f.kind == "bool":
        return (
            f"CASE WHEN lower({t}) IN {_in(TRUE_TEXTS)} THEN 'true' "
            f"WHEN lower({t}) IN {_in(FALSE_TEXTS)} THEN 'false' END AS {f.name}"
        )
    return f"CASE WHEN {y} <> 'NULL' THEN {t} END AS {f.name}"


def _record_reason(forced: str | None) -> str:
    parse = (
        "CASE WHEN NOT json_valid(raw) THEN 'malformed JSON' "
        "WHEN json_type(raw) <> 'OBJECT' THEN 'not a JSON object' END"
    )
    return _q(forced) if forced else parse


def validation_sql(source: str, *, ingested_at: datetime, csv: bool = False, forced_reason: str | None = None) -> str:
    """The query over `chunk(line, raw)`: line, raw, reason, then the lake's source columns.

    `ingested_at`: the batch's ingestion time (naive UTC), which `max_ahead` counts from.
    `csv`: values came from CSV cells (all strings; object fields hold JSON text).
    `forced_reason`: reject every record with it (a CSV file missing a required column).
    """
    contract = CONTRACTS[source]
    if contract.cdc:
        return _cdc_sql(contract, csv, forced_reason, ingested_at)
    return _flat_sql(contract, csv, forced_reason, ingested_at)


def _flat_sql(c: Contract, csv: bool, forced: str | None, ingested_at: datetime) -> str:
    names = [f.name for f in c.fields]
    lists, items = _columns("raw", names, csv, {f.name for f in c.fields if f.kind == "object"})
    reasons = [_field_reason(f, _q(f.name), ingested_at) for f in c.fields]
    if c.source == "events":
        reasons.append(
            "CASE WHEN t_customer_id IS NULL AND t_anonymous_id IS NULL AND t_email_hash IS NULL "
            "THEN 'needs customer_id, anonymous_id or email_hash' END"
        )
        reasons.append(
            f"CASE WHEN lower(t_event_type) IN {_in(PRODUCT_EVENT_TYPES)} AND t_product_id IS NULL "
            "THEN lower(t_event_type) || ' requires product_id' END"
        )
    select = f"coalesce({', '.join(reasons)}) AS reason, {', '.join(_out(f) for f in c.fields)}"
    return _with_rejects(
        forced,
        select,
        f"SELECT line, raw, {', '.join(items)} FROM (SELECT line, raw, {lists} FROM ok)",
        [f"NULL AS {n}" for n in names],
    )


def _with_rejects(forced: str | None, select: str, source: str, nulls: list[str]) -> str:
    """Records that are JSON objects go through `select` over `source`; the others get their
    record-level reason (malformed JSON, not an object, or the forced reason) and NULL columns."""
    return f"""
WITH checked AS (SELECT line, raw, {_record_reason(forced)} AS record_reason FROM chunk),
ok AS (SELECT line, raw FROM checked WHERE record_reason IS NULL)
SELECT line, raw, {select} FROM ({source})
UNION ALL
SELECT line, raw, record_reason AS reason, {', '.join(nulls)} FROM checked WHERE record_reason IS NOT NULL
"""


_ENVELOPE = (
    Field("op", "op", required=True),
    Field("ts_ms", "integer", required=True),
    Field("lsn", "integer"),
    Field("source_lsn", "integer"),
    Field("before", "object"),
    Field("after", "object"),
)


def _cdc_sql(c: Contract, csv: bool, forced: str | None, ingested_at: datetime) -> str:
    env_names = [f.name for f in _ENVELOPE]
    lists, items = _columns("raw", env_names, csv, {"before", "after"}, {"lsn": "source.lsn"})
    side = "CASE WHEN t_op = 'd' THEN 'before' ELSE 'after' END"
    env_reasons = [
        _field_reason(f, _q("source.lsn" if f.name in ("lsn", "source_lsn") else f.name), ingested_at)
        for f in _ENVELOPE[:4]
    ]
    env_reasons.append(
        "CASE WHEN t_op = 'd' AND o_before IS NULL THEN 'before: required object for op ''d''' "
        "WHEN t_op <> 'd' AND o_after IS NULL THEN 'after: required object for op ''' || t_op || '''' END"
    )
    names = [f.name for f in c.fields]
    row_lists, row_items = _columns("row_obj", names, False, set())
    row_reasons = [_field_reason(f, f"{side} || '.{f.name}'", ingested_at) for f in c.fields]
    env = (
        f"SELECT *, coalesce({', '.join(env_reasons)}) AS env_reason, "
        f"CASE WHEN t_op = 'd' THEN o_before ELSE o_after END AS row_obj "
        f"FROM (SELECT line, raw, {', '.join(items)} FROM (SELECT line, raw, {lists} FROM ok))"
    )
    source = (
        f"SELECT line, raw, env_reason, t_op, t_ts_ms, t_lsn, t_source_lsn, row_obj, {', '.join(row_items)} "
        f"FROM (SELECT *, {row_lists} FROM ({env}))"
    )
    select = (
        f"coalesce(env_reason, {', '.join(row_reasons)}) AS reason, t_op AS op, "
        "TRY_CAST(t_ts_ms AS BIGINT) AS ts_ms, TRY_CAST(coalesce(t_lsn, t_source_lsn) AS BIGINT) AS source_lsn, "
        f"row_obj AS row_json, {', '.join(_out(f) for f in c.fields)}"
    )
    nulls = ["NULL AS op", "NULL AS ts_ms", "NULL AS source_lsn", "NULL AS row_json", *[f"NULL AS {n}" for n in names]]
    return _with_rejects(forced, select, source, nulls)
