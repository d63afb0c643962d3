"""deploy/grafana/sendtime.json: a valid dashboard whose every query names only metrics that a live
`sendtime serve` exposes on /metrics."""

from __future__ import annotations

import json
import re

import pytest
from test_metrics_store import SendtimeServer, seed_kafka, seeded_home

from pipeline.config import load_settings
from tests.helpers.cli import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "sendtime.json"
# a PromQL identifier followed by a label matcher, a range, an operator, a paren or the end;
# function names are followed by "(" and are filtered out below
_IDENT = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b")
_PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "rate",
    "increase",
    "irate",
    "time",
    "histogram_quantile",
    "le",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "and",
    "or",
    "unless",
    "bool",
    "abs",
    "clamp_min",
    "clamp_max",
    "delta",
    "deriv",
    "topk",
    "bottomk",
}


def metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression: identifiers outside {label matchers} and
    "by (...)" lists that are not functions, keywords or duration units."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r'"[^"]*"', "", expr)
    return {name for name in _IDENT.findall(expr) if name not in _PROMQL_WORDS and not name[0].isdigit()}


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (route, status) (rate(sendtime_http_requests_total{status=~"5.."}[5m]))') == {
        "sendtime_http_requests_total"
    }
    assert metric_names("time() - max(sendtime_last_success_timestamp_seconds)") == {
        "sendtime_last_success_timestamp_seconds"
    }


@pytest.fixture(scope="module")
def live_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    home = seeded_home(tmp_path_factory, "grafana", cycles=8)
    seed_kafka(load_settings(home, environ={}))  # the Kafka panels' metrics exist once consume has run
    with SendtimeServer(home, workers=2) as srv:
        srv.get("/health")
        srv.get("/api/v1/customers/c1")  # a 401: request metrics exist for several statuses
        return set(srv.metrics())


def test_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "sendtime" and dashboard["uid"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


def test_every_dashboard_metric_exists_on_live_metrics(live_names: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"no metric in {target['expr']!r}"
            used |= names
    missing = used - live_names
    assert not missing, f"dashboard queries metrics that /metrics does not expose: {sorted(missing)}"
    # the dashboard covers the operator's questions: freshness, cycles, validation, rows, API
    for name in (
        "sendtime_freshness_lag_seconds",
        "sendtime_cycles_total",
        "sendtime_validation_suite_failed",
        "sendtime_rows_quarantined_total",
        "sendtime_http_request_duration_seconds_bucket",
    ):
        assert name in used
