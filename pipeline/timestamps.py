"""One timestamp rule, two implementations (docs/architecture.md, "Accepted timestamp forms").

`parse_timestamp` parses one value in Python (CLI options, tests, the collector); `timestamp_sql`
builds the DuckDB expression that ingest runs over whole chunks. `tests/test_timestamps.py` runs
both over the battery in `tests/fixtures/ingest/timestamps.json` (which the dbt macro's test reuses)
and over random inputs, so the two cannot drift apart.

Accepted, after trimming (spaces, tabs, CR, LF, FF: RE2's `\\s`, the set DuckDB and dbt use):
1. epoch milliseconds: a JSON integer, or a string of 1-16 ASCII digits with an optional leading `-`;
2. `YYYY-MM-DD`, optionally `T`/space + `HH:MM`, `HH:MM:SS` or `HH:MM:SS.f{1,9}` (fraction truncated
   to microseconds), optionally `Z`/`z`/`+HH:MM`/`+HHMM`/`+HH` (or `-`): converted to UTC.
The result must lie in years 1..9999 (what both Python and every warehouse can hold); anything else,
including impossible dates, hour 24, second 60, floats and booleans, is unparseable (None / NULL).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

# the whitespace set of RE2's \s, which DuckDB's regexp functions use; Python's str.strip() would
# also strip \v and Unicode spaces and so disagree with the SQL implementation
WHITESPACE = " \t\n\r\f"

EPOCH_MS_PATTERN = r"-?[0-9]{1,16}"
ISO_PATTERN = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?)?"
    r"(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?"
)
_EPOCH_MS = re.compile(EPOCH_MS_PATTERN)
_ISO = re.compile(ISO_PATTERN)

# epoch ms of 0001-01-01T00:00:00 and of 9999-12-31T23:59:59.999
MIN_EPOCH_MS = -62135596800000
MAX_EPOCH_MS = 253402300799999
_EPOCH = datetime(1970, 1, 1)


def _from_epoch_ms(ms: int) -> datetime | None:
    if not MIN_EPOCH_MS <= ms <= MAX_EPOCH_MS:
        return None
    return _EPOCH + timedelta(milliseconds=ms)


def parse_timestamp(value: Any) -> datetime | None:
    """A naive datetime holding UTC, or None when `value` is not an accepted timestamp."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):  # convenience for callers holding a datetime already
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, int):
        text = str(value)
        return _from_epoch_ms(value) if _EPOCH_MS.fullmatch(text) else None
    if not isinstance(value, str):
        return None
    text = value.strip(WHITESPACE)
    if _EPOCH_MS.fullmatch(text):
        return _from_epoch_ms(int(text))
    match = _ISO.fullmatch(text)
    if not match:
        return None
    y, mo, d, h, mi, s, frac, _z, sign, oh, om = match.groups()
    try:
        base = datetime(
            int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), int((frac or "")[:6].ljust(6, "0"))
        )
        if not sign:
            return base
        off_h, off_m = int(oh), int(om or 0)
        if off_h > 23 or off_m > 59:
            return None
        offset = timedelta(hours=off_h, minutes=off_m)
        return base - offset if sign == "+" else base + offset
    except (ValueError, OverflowError):
        return None


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def trim_sql(expr: str) -> str:
    """DuckDB's trim(x) removes spaces only; this removes the whole `WHITESPACE` set."""
    return f"trim({expr}, {_sql_str(WHITESPACE)})"


def timestamp_sql(text: str, json_type: str | None = None) -> str:
    """DuckDB expression: TIMESTAMP (naive UTC) or NULL, the bulk twin of `parse_timestamp`.

    `text` is an SQL expression of the value's text (untrimmed is fine); `json_type` an optional
    expression of its DuckDB `json_type` (the value came from JSON: integers pass, other
    non-strings fail). Without it the text is treated as a string (CSV cells, dbt columns).
    """
    t = f"({trim_sql(text)})"
    iso = _sql_str(ISO_PATTERN)
    parts = f"regexp_extract({t}, {iso}, ['y','mo','d','h','mi','s','f','z','sg','oh','om'])"
    base = (
        "try_strptime(p.y || '-' || p.mo || '-' || p.d || ' ' || coalesce(nullif(p.h, ''), '00') || ':' "
        "|| coalesce(nullif(p.mi, ''), '00') || ':' || coalesce(nullif(p.s, ''), '00') || '.' "
        "|| rpad(left(p.f, 6), 6, '0'), '%Y-%m-%d %H:%M:%S.%f')"
    )
    with_offset = (
        f"CASE WHEN p.sg = '' THEN {base} "
        "WHEN TRY_CAST(p.oh AS INTEGER) <= 23 AND TRY_CAST(coalesce(nullif(p.om, ''), '0') AS INTEGER) <= 59 THEN "
        f"{base} - (CASE WHEN p.sg = '-' THEN -1 ELSE 1 END) * (to_minutes(TRY_CAST(p.oh AS INTEGER) * 60 "
        "+ TRY_CAST(coalesce(nullif(p.om, ''), '0') AS INTEGER))) END"
    )
    # a one-element list + lambda binds the regexp parts once per row, without a subquery
    iso_value = (
        f"list_transform(list_transform([{parts}], lambda p: {with_offset}), "
        "lambda v: CASE WHEN year(v) BETWEEN 1 AND 9999 THEN v END)[1]"
    )
    epoch = f"CASE WHEN {t}::HUGEINT BETWEEN {MIN_EPOCH_MS} AND {MAX_EPOCH_MS} THEN epoch_ms({t}::BIGINT) END"
    string_ok = "TRUE" if json_type is None else f"({json_type}) = 'VARCHAR'"
    int_ok = "FALSE" if json_type is None else f"({json_type}) IN ('BIGINT', 'UBIGINT')"
    return (
        f"(CASE WHEN ({string_ok} OR {int_ok}) AND regexp_full_match({t}, {_sql_str(EPOCH_MS_PATTERN)}) THEN {epoch} "
        f"WHEN {string_ok} AND regexp_full_match({t}, {iso}) THEN {iso_value} END)"
    )


# ISO_PATTERN with the clock and offset ranges written into it (hour 00-23, minute and second
# 00-59, offset hour 00-23): with it, only the calendar date is left to check
_ISO_STRICT = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?"
)


def timestamp_valid_sql(text: str, json_type: str | None = None) -> str:
    """DuckDB expression: TRUE when `timestamp_sql` would give a value. What ingest runs, because
    it needs only validity (the lake keeps the text) and this is much cheaper than the
    regexp_extract + strptime of `timestamp_sql`: one regexp with the clock and offset ranges
    built in, then a DATE cast of the first 10 characters for the calendar. Values whose offset
    could leave years 1..9999 (years 0000, 0001, 9999) take the full expression. Tests hold it to
    `timestamp_sql` on the battery and on random inputs.
    """
    t = f"({trim_sql(text)})"
    string_ok = "TRUE" if json_type is None else f"(({json_type}) = 'VARCHAR')"
    int_ok = "FALSE" if json_type is None else f"(({json_type}) IN ('BIGINT', 'UBIGINT'))"
    return (
        f"(CASE WHEN ({string_ok} OR {int_ok}) AND regexp_full_match({t}, {_sql_str(EPOCH_MS_PATTERN)}) "
        f"THEN {t}::HUGEINT BETWEEN {MIN_EPOCH_MS} AND {MAX_EPOCH_MS} "
        f"WHEN {string_ok} AND regexp_full_match({t}, {_sql_str(_ISO_STRICT)}) THEN "
        f"CASE WHEN left({t}, 4) IN ('0000', '0001', '9999') THEN {timestamp_sql(text, json_type)} IS NOT NULL "
        f"ELSE try_cast(left({t}, 10) AS DATE) IS NOT NULL END ELSE FALSE END)"
    )


def timestamp_after_sql(text: str, limit: datetime) -> str:
    """DuckDB expression: TRUE when a value that `timestamp_valid_sql` accepts lies after `limit`
    (naive UTC), exactly as `parse_timestamp(value) > limit` would say; FALSE otherwise (NULL for
    NULL). `text` must be trimmed already and valid (ingest checks validity first).

    `limit` is written in as literals, so the session time zone plays no part. Cheap for nearly
    every row: epoch ms compare as integers; an ISO value's calendar date D (its first 10
    characters, compared as text) is decided alone when it is far from limit's date, because an
    offset moves the instant by less than a day: D <= date(limit) - 2 ends before date(limit)
    starts (not after), D >= date(limit) + 2 starts after date(limit) ends (after). Only the
    three dates around the limit take the full `timestamp_sql`.
    """
    day = limit.date()
    not_after = _sql_str((day - timedelta(days=2)).isoformat())
    surely_after = _sql_str((day + timedelta(days=2)).isoformat())
    limit_us = (limit - _EPOCH) // timedelta(microseconds=1)
    # an ISO value has '-' as its 5th character; an epoch-ms text never does (at most a leading '-')
    return (
        f"(CASE WHEN substr({text}, 5, 1) <> '-' THEN TRY_CAST({text} AS HUGEINT) * 1000 > {limit_us} "
        f"WHEN left({text}, 10) <= {not_after} THEN FALSE "
        f"WHEN left({text}, 10) >= {surely_after} THEN TRUE "
        f"ELSE {timestamp_sql(text)} > TIMESTAMP {_sql_str(limit.isoformat(sep=' ', timespec='microseconds'))} END)"
    )
