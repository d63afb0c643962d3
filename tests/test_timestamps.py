"""The one timestamp rule: the Python parser and the DuckDB expression agree with the battery and
with each other (the dbt macro's test runs the same battery: tests/fixtures/ingest/timestamps.json)."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from pipeline.timestamps import parse_timestamp, timestamp_sql, timestamp_valid_sql

BATTERY = json.loads((Path(__file__).parent / "fixtures" / "ingest" / "timestamps.json").read_text())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _sql_parse(con: duckdb.DuckDBPyConnection, inputs: list) -> list[str | None]:
    """Runs timestamp_sql over JSON values, as ingest does (text + json_type of each value)."""
    con.execute("CREATE OR REPLACE TEMP TABLE t (i INTEGER, j JSON)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, json.dumps(v)) for i, v in enumerate(inputs)])
    expr = timestamp_sql("j ->> '$'", "json_type(j)")
    rows = con.execute(f"SELECT i, strftime({expr}, '%Y-%m-%dT%H:%M:%S.%f') FROM t ORDER BY i").fetchall()
    return [_trim_iso(text) for _, text in rows]


def _trim_iso(text: str | None) -> str | None:
    """DuckDB's %f always prints 6 digits; isoformat() drops a zero fraction."""
    if text is None:
        return None
    return text[:-7] if text.endswith(".000000") else text


def test_battery_has_both_outcomes() -> None:
    assert len(BATTERY) >= 60
    assert sum(c["expected"] is None for c in BATTERY) >= 25
    assert sum(c["expected"] is not None for c in BATTERY) >= 25


@pytest.mark.parametrize("case", BATTERY, ids=[repr(c["input"])[:40] for c in BATTERY])
def test_python_parser_matches_battery(case: dict) -> None:
    assert _iso(parse_timestamp(case["input"])) == case["expected"]


def test_duckdb_expression_matches_battery() -> None:
    con = duckdb.connect()
    got = _sql_parse(con, [c["input"] for c in BATTERY])
    mismatches = [(c["input"], g, c["expected"]) for c, g in zip(BATTERY, got) if g != c["expected"]]
    assert mismatches == []


def test_csv_text_path_treats_numbers_as_strings() -> None:
    """Without a json type (CSV cells, dbt columns) the value is text: digits are epoch ms."""
    con = duckdb.connect()
    expr = timestamp_sql("$1")
    assert con.execute(f"SELECT {expr}", ["1732780800000"]).fetchone()[0] == datetime(2024, 11, 28, 8)
    assert con.execute(f"SELECT {expr}", ["true"]).fetchone()[0] is None


def _mutations(rng: random.Random, n: int) -> list:
    seeds = [
        "2026-11-28T10:15:30.123+02:00",
        "2026-02-28 23:59:59",
        "1732780800000",
        "2024-02-29Z",
        "2026-11-28T10:15-0130",
        "9999-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00+00:00",
    ]
    alphabet = "0123456789-+:.TZz tx"
    out: list = []
    for _ in range(n):
        text = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            pos = rng.randrange(len(text) + 1)
            if op < 0.4 and text:
                text[min(pos, len(text) - 1)] = rng.choice(alphabet)
            elif op < 0.7:
                text.insert(pos, rng.choice(alphabet))
            elif text:
                del text[min(pos, len(text) - 1)]
        out.append("".join(text))
    out += [rng.randint(-(10**16), 10**16) for _ in range(200)]
    return out


def test_python_and_duckdb_agree_on_random_inputs() -> None:
    rng = random.Random(7)
    inputs = _mutations(rng, 3000)
    con = duckdb.connect()
    got_sql = _sql_parse(con, inputs)
    got_py = [_iso(parse_timestamp(v)) for v in inputs]
    disagreements = [(v, p, s) for v, p, s in zip(inputs, got_py, got_sql) if p != s]
    assert disagreements == []
    # the mutations exercise both outcomes
    assert 300 < sum(p is None for p in got_py) < len(inputs) - 300


def test_fast_validity_check_agrees_with_the_full_expression() -> None:
    """Ingest runs timestamp_valid_sql; it must accept exactly what timestamp_sql parses."""
    inputs = [c["input"] for c in BATTERY] + _mutations(random.Random(11), 4000)
    con = duckdb.connect()
    con.execute("CREATE TEMP TABLE t (i INTEGER, j JSON)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, json.dumps(v)) for i, v in enumerate(inputs)])
    full = timestamp_sql("j ->> '$'", "json_type(j)")
    fast = timestamp_valid_sql("j ->> '$'", "json_type(j)")
    rows = con.execute(f"SELECT i, ({full}) IS NOT NULL, {fast} FROM t ORDER BY i").fetchall()
    assert [(inputs[i], a, b) for i, a, b in rows if a != b] == []
    assert sum(a for _, a, _ in rows) > 100


def test_aware_datetime_is_converted_to_naive_utc() -> None:
    aware = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert parse_timestamp(aware) == datetime(2026, 1, 1, 10)
