"""Great Expectations over the rows a cycle changed, before anyone can read them.

The suites live in `pipeline/suites/<mart>.json` (analysts read and extend them). Each runs on a
pandas DataFrame of the changed rows with an ephemeral GX context: GX's SQL path fails on DuckDB
(../shared/STACK.md). Checks GX has no expectation for (list sizes, cross-field rules such as the
lifecycle stage) are derived as `check_*` columns: DuckDB expressions below, computed while
the changed rows are read, that the suites then expect.

Importing GX costs ~3 s and ~220 MB, so it happens once per long-lived process (the scheduler,
or one `sendtime run`), on first use, never in the API.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.ids import utcnow

if TYPE_CHECKING:
    from pipeline.publish import Changes

SUITES_DIR = Path(__file__).with_name("suites")
LIFECYCLE_ACTIVE = timedelta(days=90)
LIFECYCLE_AT_RISK = timedelta(days=180)
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
            for name, result in self.suites.items() for f in result.failed
        ]


def _columns_of(failure: dict[str, Any]) -> str:
    if "column" in failure:
        return failure["column"]
    if "column_list" in failure:
        return ", ".join(failure["column_list"])
    return ", ".join(failure[k] for k in ("column_A", "column_B") if k in failure)


# ------------------------------------------------------------------------------ suites

def load_suite(name: str) -> dict[str, Any]:
    return json.loads((SUITES_DIR / f"{name}.json").read_text())


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.json"))


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _bind(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return params[value[1:]]
    return value


def build_suite(name: str, params: dict[str, Any]):  # noqa: ANN201 - gx.ExpectationSuite
    gx = _gx()
    _context()  # GX binds a suite to the active context
    spec = load_suite(name)
    suite = gx.ExpectationSuite(name=spec["suite"])
    for item in spec["expectations"]:
        cls = getattr(gx.expectations, _camel(item["type"]))
        suite.add_expectation(cls(**{k: _bind(v, params) for k, v in item["kwargs"].items()}))
    return suite


# ------------------------------------------------------------------------------ GX, once per process

def _gx():  # noqa: ANN202 - the great_expectations module
    import great_expectations as gx  # deferred: ~3 s, so only the pipeline process pays it

    return gx


@lru_cache(maxsize=1)
def _context():  # noqa: ANN202 - an ephemeral GX context, reused for the process's life
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    # no tqdm bars on the scheduler's stderr (they are not JSON log lines)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


@lru_cache(maxsize=None)
def _batch_definition(name: str):  # noqa: ANN202 - one pandas asset per mart, created once
    context = _context()
    source = context.data_sources.add_or_update_pandas(name="sendtime_changes_" + name)
    asset = source.add_dataframe_asset(name=name)
    return asset.add_batch_definition_whole_dataframe(name + "_changed_rows")


def run_suite(name: str, frame: pd.DataFrame, params: dict[str, Any]) -> SuiteResult:
    if frame.empty:
        return SuiteResult(name, True, 0)
    batch = _batch_definition(name).get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(build_suite(name, params))
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


# ------------------------------------------------------------------------------ derived check columns

_CANONICAL = r"^\S(?:.*\S)?$"
_US_PER_DAY = 86_400_000_000


def profile_checks_sql() -> dict[str, str]:
    """check_* columns over a changed customer_profiles row, as DuckDB expressions (`$as_of`
    is the cycle's as_of). publish.read_changes computes them with the bodies, in one query."""
    checks: dict[str, str] = {}
    for name in ("recently_viewed", "top_categories", "recommendations"):
        checks[f"check_{name}_size"] = f"len(coalesce({name}, []))"
    for name in ("recently_viewed", "cart", "top_categories", "recommendations"):
        checks[f"check_{name}_distinct"] = f"len(list_distinct(coalesce({name}, []))) = len(coalesce({name}, []))"
    checks["check_product_ids_canonical"] = (
        "len(list_filter(list_concat(coalesce(recently_viewed, []), coalesce(cart, []), coalesce(recommendations, [])),"
        f" lambda x: x is null or x <> upper(x) or not regexp_matches(x, '{_CANONICAL}'))) = 0"
    )
    age = "(epoch_us($as_of::timestamp) - epoch_us(last_order_at))"
    checks["check_expected_lifecycle_stage"] = (
        "case when orders_count is null then null when orders_count = 0 then 'prospect' "
        "when last_order_at is null then null "
        f"when {age} <= {LIFECYCLE_ACTIVE.days} * {_US_PER_DAY}::bigint then 'active' "
        f"when {age} <= {LIFECYCLE_AT_RISK.days} * {_US_PER_DAY}::bigint then 'at_risk' else 'lapsed' end"
    )
    checks["check_orders_agree"] = (
        "coalesce((orders_count = 0) = (last_order_at is null) and (orders_count <> 0 or lifetime_value = 0), false)"
    )
    checks["check_seen_pair"] = "(first_seen_at is null) = (last_seen_at is null)"
    return checks


def recommendation_checks_sql() -> dict[str, str]:
    """check_* columns over a customer_recommendations row `r` joined to the catalog `pr`."""
    return {
        "check_score_finite": "coalesce(isfinite(r.score), false)",
        "check_in_stock": "coalesce(pr.in_stock, false)",
    }


def validate_changes(changes: Changes, as_of: datetime) -> ValidationReport:
    """Run every suite on the changed rows; success only when every suite passes."""
    started = time.perf_counter()
    params = {"as_of": as_of, "not_after": max(as_of, utcnow()) + CLOCK_SKEW}
    frames = {
        "customer_profiles": changes.profiles,
        "customer_recommendations": changes.recommendations,
        "products": changes.products,
        "customer_erasures": changes.erasures,
    }
    results = {name: run_suite(name, frame, params) for name, frame in frames.items()}
    return ValidationReport(all(r.success for r in results.values()), results, time.perf_counter() - started)
