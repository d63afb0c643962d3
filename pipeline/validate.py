"""Great Expectations over the rows a cycle changed, before anyone can read them.

The suites are derived from the served marts' contract (models/marts/_marts.yml, read through
pipeline/mart_contract.py): a column's not_null, unique, accepted_values, non_negative and
in_range data tests, its meta `pattern`, `max_items`, `distinct_items` and `item_pattern`, the
model's `row_checks`, and "nothing happened in the future" for every timestamp. An analyst who
adds a column or a rule edits the YAML only. Each suite runs on a pandas DataFrame of the changed
rows with an ephemeral GX context: GX's SQL path fails on DuckDB (../shared/STACK.md). Checks GX
has no expectation for (list contents, cross-field rules) are `check_*` columns that the change
reader computes with the bodies (pipeline/changes.py), which the suites then expect.

Importing GX costs ~3 s and ~220 MB, so it happens once per long-lived process (the scheduler,
or one `sendtime run`), on first use, never in the API.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any

import pandas as pd

from pipeline.changes import Changes, check_columns_sql
from pipeline.ids import utcnow
from pipeline.mart_contract import MartContract

# Events keep arriving while a cycle runs, so data newer than as_of (the cycle's start) is normal.
# Ingest accepts an event up to 2 days after its ingestion (contracts.EVENT_MAX_AHEAD: client
# clocks run ahead) and validation runs after ingestion, so this must be at least that, or one
# accepted event would fail every cycle from then on; 3 days leaves a day for clock differences
# between hosts. Beyond it a timestamp is a bug (a year-2099 value, a transform inventing times).
CLOCK_SKEW = timedelta(days=3)


@dataclass
class SuiteResult:
    suite: str
    success: bool
    rows: int
    failed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "rows": self.rows, "failed": self.failed}


@dataclass
class ValidationReport:
    success: bool
    suites: dict[str, SuiteResult]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """suite -> {success, rows, failed: [{expectation, column(s), unexpected_count}]}: counts
        only, never the unexpected values (they could be emails)."""
        return {name: result.to_dict() for name, result in self.suites.items()}

    def failures(self) -> list[str]:
        return [
            f"{name}: {f['expectation']}({_columns_of(f)}) {f.get('unexpected_count', '?')} rows"
            for name, result in self.suites.items()
            for f in result.failed
        ]


def _columns_of(failure: dict[str, Any]) -> str:
    if "column" in failure:
        return failure["column"]
    if "column_list" in failure:
        return ", ".join(failure["column_list"])
    return ", ".join(failure[k] for k in ("column_A", "column_B") if k in failure)


# ------------------------------------------------------------------------------ suites


def expectations(contract: MartContract) -> list[dict[str, Any]]:
    """The suite of a mart: {type, kwargs} of each expectation, derived from its contract.
    `$not_after` is bound at run time (the latest believable timestamp)."""
    out: list[dict[str, Any]] = []

    def expect(kind: str, **kwargs: Any) -> None:
        out.append({"type": kind, "kwargs": kwargs})

    for column in contract.served:
        name = column.name
        if column.kind == "list":
            if column.max_items is not None:
                expect(
                    "expect_column_values_to_be_between",
                    column=f"check_{name}_size",
                    min_value=0,
                    max_value=column.max_items,
                )
            continue
        if column.not_null:
            expect("expect_column_values_to_not_be_null", column=name)
        if column.unique:
            expect("expect_column_values_to_be_unique", column=name)
        if column.accepted_values is not None:
            expect("expect_column_values_to_be_in_set", column=name, value_set=list(column.accepted_values))
        if column.kind == "boolean":
            expect("expect_column_values_to_be_in_set", column=name, value_set=[True, False])
        if column.minimum is not None or column.maximum is not None:
            expect(
                "expect_column_values_to_be_between", column=name, min_value=column.minimum, max_value=column.maximum
            )
        if column.pattern:
            expect("expect_column_values_to_match_regex", column=name, regex=column.pattern)
        if column.kind == "timestamp" and not column.meta.get("future_ok"):
            expect("expect_column_values_to_be_between", column=name, max_value="$not_after")
    for columns in contract.unique_sets:
        expect("expect_compound_columns_to_be_unique", column_list=list(columns))
    for name in check_columns_sql(contract):
        if not name.endswith("_size"):
            expect("expect_column_values_to_be_in_set", column=name, value_set=[True])
    return out


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _bind(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return params[value[1:]]
    return value


def build_suite(contract: MartContract, params: dict[str, Any]):
    gx = _gx()
    _context()  # GX binds a suite to the active context
    suite = gx.ExpectationSuite(name=contract.name)
    for item in expectations(contract):
        cls = getattr(gx.expectations, _camel(item["type"]))
        kwargs = {k: _bind(v, params) for k, v in item["kwargs"].items() if v is not None}
        suite.add_expectation(cls(**kwargs))
    return suite


# ------------------------------------------------------------------------------ GX, once per process


def _gx():
    import great_expectations as gx  # deferred: ~3 s, so only the pipeline process pays it

    return gx


@lru_cache(maxsize=1)
def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    # no tqdm bars on the scheduler's stderr (they are not JSON log lines)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


@cache
def _batch_definition(name: str):
    context = _context()
    source = context.data_sources.add_or_update_pandas(name="sendtime_changes_" + name)
    asset = source.add_dataframe_asset(name=name)
    return asset.add_batch_definition_whole_dataframe(name + "_changed_rows")


def warm_up() -> None:
    """Import GX and create its context now (~3 s), e.g. in a thread while the scheduler starts, so
    the first cycle with changed rows does not pay it."""
    _context()


def run_suite(contract: MartContract, frame: pd.DataFrame, params: dict[str, Any]) -> SuiteResult:
    name = contract.name
    if frame.empty:
        return SuiteResult(name, True, 0)
    batch = _batch_definition(name).get_batch(batch_parameters={"dataframe": frame})
    suite = build_suite(contract, params)
    # success alone first: GX's default result (partial unexpected lists and counts per
    # expectation) costs about twice the check itself; only a failing suite runs again for the
    # counts the run log keeps
    if batch.validate(suite, result_format="BOOLEAN_ONLY").success:
        return SuiteResult(name, True, len(frame))
    result = batch.validate(suite, result_format="BASIC")
    failed = []
    for item in result.results:
        if item.success:
            continue
        kwargs = item.expectation_config.kwargs
        entry: dict[str, Any] = {"expectation": item.expectation_config.type}
        for key in ("column", "column_A", "column_B", "column_list"):
            if key in kwargs:
                entry[key] = kwargs[key]
        details = item.result or {}
        entry["unexpected_count"] = details.get("unexpected_count")
        if item.exception_info and item.exception_info.get("raised_exception"):
            entry["error"] = str(item.exception_info.get("exception_message"))[:300]
        failed.append(entry)
    return SuiteResult(name, bool(result.success), len(frame), failed)


def validate_changes(changes: Changes, as_of: datetime) -> ValidationReport:
    """Run every suite on the changed rows; success only when every suite passes."""
    started = time.perf_counter()
    params = {"as_of": as_of, "not_after": max(as_of, utcnow()) + CLOCK_SKEW}
    results = {name: run_suite(contract, changes.frame(name), params) for name, contract in changes.contracts.items()}
    return ValidationReport(all(r.success for r in results.values()), results, time.perf_counter() - started)
