"""Writes sendtime.json, the Grafana dashboard (run: python deploy/grafana/dashboard.py).

Kept as code so panels stay consistent; tests/test_grafana_dashboard.py checks that every metric a
query names exists on a live /metrics. Import the JSON in Grafana (Dashboards > Import) and pick
the Prometheus data source for the DS_PROMETHEUS input.
"""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def _panel(
    pid: int,
    title: str,
    kind: str,
    grid: tuple[int, int, int, int],
    targets: list[tuple[str, str]],
    unit: str = "short",
    description: str = "",
    **extra: object,
) -> dict:
    x, y, w, h = grid
    panel = {
        "id": pid,
        "title": title,
        "type": kind,
        "datasource": DS,
        "description": description,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    panel.update(extra)
    return panel


def build() -> dict:
    p = []
    p.append(
        _panel(
            1,
            "Freshness lag",
            "stat",
            (0, 0, 6, 5),
            [("max(sendtime_freshness_lag_seconds)", "lag")],
            "s",
            "Now minus the newest ingested_at in the published state.",
            fieldConfig={
                "defaults": {
                    "unit": "s",
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [
                            {"color": "green", "value": None},
                            {"color": "orange", "value": 1800},
                            {"color": "red", "value": 3600},
                        ],
                    },
                },
                "overrides": [],
            },
        )
    )
    p.append(
        _panel(
            2,
            "Since last successful cycle",
            "stat",
            (6, 0, 6, 5),
            [("time() - max(sendtime_last_success_timestamp_seconds)", "since")],
            "s",
        )
    )
    p.append(_panel(3, "Published version", "stat", (12, 0, 6, 5), [("max(sendtime_published_version)", "version")]))
    p.append(
        _panel(
            4,
            "Online store readable",
            "stat",
            (18, 0, 6, 5),
            [("min(sendtime_store_up)", "up")],
            description="1 when every node could read the online store at its last scrape.",
        )
    )
    p.append(
        _panel(
            5,
            "Freshness lag over time",
            "timeseries",
            (0, 5, 12, 8),
            [("max(sendtime_freshness_lag_seconds)", "freshness lag")],
            "s",
        )
    )
    p.append(
        _panel(
            6,
            "Cycles by status (per hour)",
            "timeseries",
            (12, 5, 12, 8),
            [("sum by (status) (increase(sendtime_cycles_total[1h]))", "{{status}}")],
            options={"legend": {"displayMode": "table", "placement": "right"}},
        )
    )
    p.append(
        _panel(
            7,
            "Cycle duration by phase",
            "timeseries",
            (0, 13, 12, 8),
            [
                ("max by (phase) (sendtime_last_cycle_phase_seconds)", "latest: {{phase}}"),
                (
                    "max by (phase) (rate(sendtime_cycle_phase_duration_seconds_sum[15m])) / "
                    "max by (phase) (rate(sendtime_cycle_phase_duration_seconds_count[15m]))",
                    "15m mean: {{phase}}",
                ),
                (
                    "histogram_quantile(0.95, max by (le) (rate(sendtime_cycle_duration_seconds_bucket[1h])))",
                    "p95 cycle (1h)",
                ),
            ],
            "s",
            description="Latest finished cycle per phase, the 15-minute mean per phase, and the hourly p95 "
            "of whole cycles (pipeline metrics are the same on every node: max, not sum).",
        )
    )
    p.append(
        _panel(
            8,
            "Validation",
            "timeseries",
            (12, 13, 12, 8),
            [
                ("max by (suite) (sendtime_validation_suite_failed)", "{{suite}} failing now"),
                ("max by (suite) (increase(sendtime_validation_failures_total[1h]))", "{{suite}} failed cycles / h"),
                ("max by (suite) (increase(sendtime_validation_runs_total[1h]))", "{{suite}} validated cycles / h"),
            ],
        )
    )
    p.append(
        _panel(
            9,
            "Rows ingested and quarantined (per second)",
            "timeseries",
            (0, 21, 12, 8),
            [
                ("sum by (source) (rate(sendtime_rows_ingested_total[5m]))", "{{source}} accepted"),
                ("sum by (source) (rate(sendtime_rows_quarantined_total[5m]))", "{{source}} quarantined"),
            ],
        )
    )
    p.append(
        _panel(
            10,
            "Rows changed and published (per hour)",
            "timeseries",
            (12, 21, 12, 8),
            [
                ("max(increase(sendtime_rows_changed_total[1h]))", "changed"),
                ("max(increase(sendtime_rows_published_total[1h]))", "published"),
                ("max(increase(sendtime_rows_deleted_total[1h]))", "erased"),
            ],
        )
    )
    p.append(
        _panel(
            11,
            "API requests per second by route and status",
            "timeseries",
            (0, 29, 12, 8),
            [("sum by (route, status) (rate(sendtime_http_requests_total[1m]))", "{{route}} {{status}}")],
            "reqps",
        )
    )
    p.append(
        _panel(
            12,
            "API latency (p50, p99)",
            "timeseries",
            (12, 29, 12, 8),
            [
                (
                    "histogram_quantile(0.5, sum by (le) (rate(sendtime_http_request_duration_seconds_bucket[5m])))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.99, sum by (le) (rate(sendtime_http_request_duration_seconds_bucket[5m])))",
                    "p99",
                ),
                (
                    "sum(rate(sendtime_http_request_duration_seconds_sum[5m])) / sum(rate(sendtime_http_request_duration_seconds_count[5m]))",
                    "mean",
                ),
            ],
            "s",
        )
    )
    p.append(
        _panel(
            13,
            "API 5xx ratio",
            "timeseries",
            (0, 37, 12, 6),
            [
                (
                    'sum(rate(sendtime_http_requests_total{status=~"5.."}[5m])) / sum(rate(sendtime_http_requests_total[5m]))',
                    "5xx",
                )
            ],
            "percentunit",
        )
    )
    p.append(
        _panel(
            14,
            "Ingest batches (per hour)",
            "timeseries",
            (12, 37, 12, 6),
            [
                ("sum by (source) (increase(sendtime_ingest_batches_total[1h]))", "{{source}}"),
                ("sum by (source) (increase(sendtime_rows_received_total[1h]))", "{{source}} records"),
            ],
        )
    )
    # `sendtime consume` (no series on a home that does not consume Kafka)
    p.append(
        _panel(
            15,
            "Kafka consumer lag by topic",
            "timeseries",
            (0, 43, 12, 8),
            [("sum by (topic) (max by (topic, partition) (sendtime_kafka_consumer_lag))", "{{topic}}")],
            description="Offsets not in the lake yet, summed over each topic's partitions, as the running "
            "consumer measures them (alert: SendtimeKafkaLagGrowing).",
        )
    )
    p.append(
        _panel(
            16,
            "Kafka records per second by topic",
            "timeseries",
            (12, 43, 12, 8),
            [
                ("max by (topic) (sendtime_kafka_records_per_second)", "{{topic}} consumed"),
                ("max by (topic) (rate(sendtime_kafka_records_quarantined_total[5m]))", "{{topic}} quarantined"),
                ("max by (topic) (rate(sendtime_kafka_records_skipped_total[5m]))", "{{topic}} skipped"),
            ],
        )
    )
    p.append(
        _panel(
            17,
            "Kafka consumer up",
            "stat",
            (0, 51, 6, 5),
            [("max by (group) (sendtime_kafka_consumer_up)", "{{group}}")],
            description="1 while a consumer of the group runs and reports.",
        )
    )
    p.append(
        _panel(
            18,
            "Kafka brokers connected",
            "stat",
            (6, 51, 6, 5),
            [("max by (group) (sendtime_kafka_brokers_up)", "{{group}}")],
        )
    )
    p.append(
        _panel(
            19,
            "Kafka client errors and failed commits (per hour)",
            "timeseries",
            (12, 51, 12, 5),
            [
                ("max by (code) (increase(sendtime_kafka_client_errors_total[1h]))", "{{code}}"),
                ("max(increase(sendtime_kafka_commit_failures_total[1h]))", "failed commits"),
            ],
        )
    )
    p.append(
        _panel(
            20,
            "Reconcile: drifted rows by check",
            "timeseries",
            (0, 56, 12, 6),
            [
                ("max by (check) (sendtime_reconcile_drift_rows) > 0", "{{check}}"),
                ("max by (status) (increase(sendtime_reconcile_runs_total[6h]))", "reconciles {{status}} / 6h"),
            ],
            description="Rows the latest `sendtime reconcile` found different between lake, warehouse and "
            "online store (docs/recovery.md); nothing drawn while everything agrees.",
        )
    )
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "title": "sendtime",
        "uid": "sendtime-overview",
        "tags": ["sendtime"],
        "timezone": "utc",
        "schemaVersion": 38,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": p,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("sendtime.json")
    out.write_text(json.dumps(build(), indent=2) + "\n")
    print(out)
