"""The dbt macros against their Python twins and the shared battery, run by dbt itself
(`dbt show --inline` in-process over a real DuckDB file), and the project's dbt unit tests."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from dbt.cli.main import dbtRunner

from pipeline import transform
from pipeline.timestamps import parse_timestamp

BATTERY = Path(__file__).parent / "fixtures" / "ingest" / "timestamps.json"


def _lake_text(value) -> str | None:
    """What the lake holds for a JSON value: strings as they are, anything else as its JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _sql_literal(text: str | None) -> str:
    return "null" if text is None else "'" + text.replace("'", "''") + "'"


def _show(settings, sql: str) -> list[tuple]:
    with transform._Environment(settings):
        result = dbtRunner().invoke(["show", *transform._flags(settings), "--inline", sql, "--limit", "-1"])
        transform._release_warehouse()
    assert result.success, result.exception
    return [tuple(row) for row in result.result.results[0].agate_table.rows]


def test_parse_timestamp_macro_agrees_with_the_battery_and_python(settings):
    cases = json.loads(BATTERY.read_text())
    assert len(cases) > 50
    values = ", ".join(f"({i}, {_sql_literal(_lake_text(c['input']))})" for i, c in enumerate(cases))
    sql = (
        f"select i, cast({{{{ parse_timestamp('raw') }}}} as varchar) as parsed "
        f"from (values {values}) as battery (i, raw) order by i"
    )
    rows = _show(settings, sql)
    assert len(rows) == len(cases)
    for (_i, parsed), case in zip(rows, cases):
        expected = case["expected"]
        got = None if parsed is None else datetime.fromisoformat(parsed).isoformat()
        python = parse_timestamp(case["input"])
        assert got == expected, (case, got)
        assert got == (python.isoformat() if python else None), (case, got, python)


def test_normalization_macros(settings):
    rows = _show(
        settings,
        """
        select
            {{ clean_string("'\t  x y \r\n'") }} as cleaned,
            {{ clean_string("' \t '") }} as empty_is_null,
            {{ normalize_email("'  Ann.Lee@Example.COM '") }} as email,
            {{ normalize_product_id("' sku-40\t'") }} as product_id,
            {{ parse_boolean("' TRUE '") }} as yes,
            {{ parse_boolean("'maybe'") }} as unknown
    """,
    )
    assert rows == [("x y", None, "ann.lee@example.com", "SKU-40", True, None)]


def test_dbt_unit_tests_pass(settings):
    with transform._Environment(settings):
        result = dbtRunner().invoke(
            ["build", *transform._flags(settings), "--select", "+test_type:unit", "--exclude", "test_type:data"]
        )
        transform._release_warehouse()
    assert result.success, [
        (r.node.name, r.message) for r in result.result.results if r.status not in ("pass", "success")
    ]
    names = {r.node.name for r in result.result.results if r.node.resource_type == "unit_test"}
    assert len(names) >= 8, names


def test_every_data_test_passes_on_generated_data(settings, tmp_path):
    """What an analyst's `dbt build` runs (every data test, staging ones included) on messy data."""
    from pipeline.generate import generate
    from pipeline.ingest import ingest_files

    files = generate(tmp_path / "generated", customers=60, events=2000, products=30, seed=5)
    for source, paths in files.items():
        ingest_files(settings, source, paths)
    with transform._Environment(settings):
        result = dbtRunner().invoke(["build", *transform._flags(settings), "--exclude", "test_type:unit"])
        transform._release_warehouse()
    failed = [(r.node.name, r.message) for r in result.result.results if r.status not in ("pass", "success")]
    assert result.success and not failed, failed
    tests = [r for r in result.result.results if r.node.resource_type == "test"]
    assert len(tests) > 60
