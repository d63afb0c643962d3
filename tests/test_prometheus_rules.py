"""deploy/prometheus: promtool validates the config and the rules and runs the rules' unit tests;
then a real Prometheus server scrapes a real `sendtime serve`, loads the alert rules, evaluates them
(health ok) and raises the freshness alerts for a stale published state, and the Kafka lag alert for
a consumer whose reported lag keeps growing. The Grafana dashboard's queries are run through that
Prometheus too (they must parse and evaluate)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from test_metrics_store import KAFKA_TOPIC, SendtimeServer, seed_kafka, seeded_home, stop_process

from pipeline.clock import utcnow
from pipeline.config import load_settings
from pipeline.kafka import state
from pipeline.store import engine_for
from tests.helpers.cli import ROOT
from tests.helpers.net import free_port

DEPLOY = ROOT / "deploy" / "prometheus"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60)


def test_promtool_checks_config_rules_and_rule_tests() -> None:
    for args in (
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts_test.yml"),
    ):
        result = _promtool(*args)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def test_rules_cover_the_required_alerts() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert {
        "SendtimeFreshnessLagHigh",
        "SendtimeCyclesFailing",
        "SendtimeValidationFailing",
        "SendtimeNoSuccessfulCycle",
    } <= set(rules)
    assert "sendtime_freshness_lag_seconds" in rules["SendtimeFreshnessLagHigh"]["expr"]
    assert "sendtime_last_success_timestamp_seconds" in rules["SendtimeNoSuccessfulCycle"]["expr"]


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DEPLOY / "alerts.yml")],
            "scrape_configs": [
                {"job_name": "sendtime", "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: Any) -> Any:
        response = requests.get(self.url + "/api/v1/" + path, params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def wait(self, what: str, check, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "prometheus exited"
            try:
                last = check()
                if last:
                    return last
            except (requests.ConnectionError, ValueError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; last: {last}")

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    # the newest published data is two hours old: both freshness alerts must become active
    with SendtimeServer(seeded_home(tmp_path_factory, "prom", cycles=6, lag_seconds=7200), workers=2) as srv:
        prom = Prometheus(tmp_path_factory.mktemp("promdata"), f"127.0.0.1:{srv.port}")
        try:
            yield srv, prom
        finally:
            prom.stop()


def test_prometheus_scrapes_and_evaluates_every_rule(stack) -> None:
    srv, prom = stack
    prom.wait("the target to be up", lambda: [t for t in prom.api("targets")["activeTargets"] if t["health"] == "up"])
    value = prom.wait(
        "the freshness lag series", lambda: prom.api("query", query="sendtime_freshness_lag_seconds")["result"]
    )
    assert 7000 < float(value[0]["value"][1]) < 7500

    expected = {r["alert"] for g in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"] for r in g["rules"]}

    def evaluated() -> list[dict]:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        # every rule has been evaluated (lastEvaluation set) and is healthy
        done = all(r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for r in rules)
        return rules if done and {r["name"] for r in rules} == expected else []

    rules = prom.wait("every rule to evaluate with health ok", evaluated)
    assert all(r["health"] == "ok" and not r.get("lastError") for r in rules)

    def active() -> dict[str, str]:
        alerts = {a["labels"]["alertname"]: a["state"] for a in prom.api("alerts")["alerts"]}
        return alerts if {"SendtimeFreshnessLagHigh", "SendtimeFreshnessLagCritical"} <= set(alerts) else {}

    alerts = prom.wait("the freshness alerts to be active", active)
    assert alerts["SendtimeFreshnessLagHigh"] in {"pending", "firing"}
    # the API is up and the store readable: those alerts stay quiet
    assert "SendtimeApiDown" not in alerts and "SendtimeStoreUnreadable" not in alerts


def test_dashboard_queries_evaluate_in_prometheus(stack) -> None:
    srv, prom = stack
    srv.get("/health")
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "sendtime.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        prom.api("query", query=expr)  # asserts status success: the query parses and evaluates


def test_kafka_lag_growing_alert(stack) -> None:
    """A running consumer reports a lag that grows by 300 offsets a second: the alert goes active
    (pending: it fires after 15 minutes of growth), the consumer-down one stays quiet."""
    srv, prom = stack
    settings = load_settings(srv.home, environ={})
    report = seed_kafka(settings)
    stop = threading.Event()

    def grow() -> None:
        engine = engine_for(settings)
        started = time.monotonic()
        try:
            while not stop.is_set():
                lag = 2000 + int(300 * (time.monotonic() - started))
                report.updated_at = utcnow()
                report.partitions = [state.PartitionLag(KAFKA_TOPIC, 0, 10_000 + lag, lag)]
                state.write_state(engine, report)
                stop.wait(0.5)
        finally:
            engine.dispose()

    writer = threading.Thread(target=grow, daemon=True)
    writer.start()
    try:

        def active() -> dict[str, dict]:
            alerts = {a["labels"]["alertname"]: a for a in prom.api("alerts")["alerts"]}
            return alerts if "SendtimeKafkaLagGrowing" in alerts else {}

        alerts = prom.wait("the Kafka lag alert to be active", active)
        lag_alert = alerts["SendtimeKafkaLagGrowing"]
        assert lag_alert["state"] in {"pending", "firing"} and lag_alert["labels"]["topic"] == KAFKA_TOPIC
        assert "SendtimeKafkaConsumerDown" not in alerts and "SendtimeKafkaBrokersUnreachable" not in alerts
    finally:
        stop.set()
        writer.join(10)
