"""Great Expectations over the rows a cycle changed, before anyone can read them.

The suites live in `pipeline/suites/<mart>.json` (analysts read and extend them). Each runs on a
pandas DataFrame of the changed rows with an ephemeral GX context: GX's SQL path fails on DuckDB
(../shared/STACK.md). Checks GX has no expectation for (list sizes, cross-field rules such as the
lifecycle stage) are derived here as `check_*` columns that the suites then expect.

Importing GX costs ~3 s and ~220 MB, so it happens once per long-lived process (the scheduler,
or one `sendtime run`), on first use, never in the API.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.publish import PRODUCT_FIELDS, PROFILE_FIELDS, RECOMMENDATION_FIELDS, Changes

SUITES_DIR = Path(__file__).with_name("suites")
LIFECYCLE_ACTIVE = timedelta(days=90)
LIFECYCLE_AT_RISK = timedelta(days=180)
_CANONICAL_ID = re.compile(r"^\S(.*\S)?$")


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


# ------------------------------------------------------------------------------ the changed rows as frames

def _distinct(values: Any) -> bool:
    return len(set(values)) == len(values)


def _expected_stage(orders: Any, last_order: Any, as_of: datetime) -> str | None:
    if orders is None or (isinstance(orders, float) and math.isnan(orders)):
        return None
    if orders == 0:
        return "prospect"
    if last_order is None or pd.isna(last_order):
        return None  # orders without a last order time: caught by check_orders_agree
    age = as_of - pd.Timestamp(last_order).to_pydatetime()
    return "active" if age <= LIFECYCLE_ACTIVE else "at_risk" if age <= LIFECYCLE_AT_RISK else "lapsed"


def profiles_frame(rows: list[tuple], as_of: datetime) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(PROFILE_FIELDS))
    if frame.empty:
        return frame
    for column in ("first_seen_at", "last_seen_at", "last_order_at"):
        frame[column] = pd.to_datetime(frame[column])
    # Decimal -> float for GX's numeric comparisons (>= 0 is exact either way)
    frame["lifetime_value"] = frame["lifetime_value"].map(lambda v: None if v is None else float(v))
    frame["marketing_consent"] = frame["marketing_consent"].astype(object)
    lists = {name: frame[name].tolist() for name in ("recently_viewed", "cart", "top_categories", "recommendations")}
    for name, values in lists.items():
        if name != "cart":
            frame[f"check_{name}_size"] = [len(v) for v in values]
        frame[f"check_{name}_distinct"] = [_distinct(v) for v in values]
    frame["check_product_ids_canonical"] = [
        all(isinstance(p, str) and _CANONICAL_ID.match(p) and p == p.upper() for p in (*a, *b, *c))
        for a, b, c in zip(lists["recently_viewed"], lists["cart"], lists["recommendations"])
    ]
    orders = frame["orders_count"].tolist()
    last_orders = frame["last_order_at"].tolist()
    values = frame["lifetime_value"].tolist()
    frame["check_expected_lifecycle_stage"] = [_expected_stage(o, t, as_of) for o, t in zip(orders, last_orders)]
    frame["check_orders_agree"] = [
        (o == 0) == pd.isna(t) and (o != 0 or v == 0) for o, t, v in zip(orders, last_orders, values)
    ]
    frame["check_seen_pair"] = frame["first_seen_at"].isna() == frame["last_seen_at"].isna()
    return frame


def recommendations_frame(changes: Changes) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(changes.recommendations, columns=list(RECOMMENDATION_FIELDS))
    if frame.empty:
        return frame
    frame["check_score_finite"] = [s is not None and math.isfinite(s) for s in frame["score"].tolist()]
    frame["check_in_stock"] = frame["product_id"].isin(changes.in_stock_product_ids)
    return frame


def products_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(PRODUCT_FIELDS))
    if not frame.empty:
        frame["price"] = frame["price"].map(lambda v: None if v is None else float(v))
        frame["in_stock"] = frame["in_stock"].astype(object)
    return frame


def erasures_frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=["customer_id", "erased_at"])


def validate_changes(changes: Changes, as_of: datetime) -> ValidationReport:
    """Run every suite on the changed rows; success only when every suite passes."""
    started = time.perf_counter()
    params = {"as_of": as_of}
    frames = {
        "customer_profiles": profiles_frame(changes.profiles, as_of),
        "customer_recommendations": recommendations_frame(changes),
        "products": products_frame(changes.products),
        "customer_erasures": erasures_frame(changes.erasures),
    }
    results = {name: run_suite(name, frame, params) for name, frame in frames.items()}
    return ValidationReport(all(r.success for r in results.values()), results, time.perf_counter() - started)
