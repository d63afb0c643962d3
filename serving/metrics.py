"""Prometheus instrumentation of the API, and the `/metrics` endpoint.

API requests (a counter and a latency histogram by route template, method and status) are counted
in the process that served the request. Under gunicorn each worker is its own process, so they use
prometheus_client's multiprocess mode: every worker writes its values to mmap files in
`PROMETHEUS_MULTIPROC_DIR` and a scrape, whichever worker answers it, merges all the files.
`serving/server.py` calls `prepare_multiprocess(settings)` before forking and installs
`child_exit` as gunicorn's hook.

Requests that Flask answers are counted by `init_app`'s before/after-request hooks; a request
answered below Flask (serving/fastpath.py) is counted through the public hook `observe_request`,
with the same labels.

`/metrics` also carries the pipeline's state (cycles, rows, validation, freshness), read from the
online store at scrape time by serving/pipeline_metrics.py. It is open (counts and durations, never
a customer id, email or name: serving/access.py lists it); restrict it at the network layer when
needed (docs/operations.md).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request

from pipeline.config import Settings
from serving.pipeline_metrics import PipelineCollector
from serving.state import app_settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# the API answers in microseconds to milliseconds; Braze gives an endpoint 2 s
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


# --------------------------------------------------------------------------- multiprocess mode


def multiprocess_dir(settings: Settings) -> Path:
    return settings.run_dir / "prometheus"


def prepare_multiprocess(settings: Settings) -> dict[str, str]:
    """Create an empty metrics folder for one server run and point this process at it.

    Call it in the gunicorn master before any worker is forked (it also sets os.environ, so the
    workers inherit it). Files of a previous run are removed: counters restart with the server,
    which Prometheus' rate() and increase() handle. Returns the environment to hand to a child
    process when gunicorn is started as a subprocess instead.
    """
    path = multiprocess_dir(settings)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    _use_multiprocess_values()
    return {MULTIPROC_ENV: str(path)}


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live gauges (its counters and histograms are kept, as they must be)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's `child_exit` server hook: `child_exit = serving.metrics.child_exit`."""
    mark_process_dead(worker.pid)


def _use_multiprocess_values() -> None:
    """prometheus_client picks its value class when first imported; re-pick it when the
    multiprocess folder was set afterwards (e.g. the server imported Flask and this module first)."""
    from prometheus_client import values

    if os.environ.get(MULTIPROC_ENV) and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.get_value_class()


def _multiprocess_path() -> str | None:
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


# --------------------------------------------------------------------------- request metrics


@dataclass
class _RequestMetrics:
    registry: Any
    requests: Any
    latency: Any
    # labelled children by (route, method, status): `labels()` validates and locks on every call,
    # which doubled the cost per request (measured ~17 us -> ~10 us, multiprocess mode)
    children: dict[tuple[str, str, str], tuple[Any, Any]] = field(default_factory=dict)

    def child(self, labels: tuple[str, str, str]) -> tuple[Any, Any]:
        pair = self.children.get(labels)
        if pair is None:
            pair = self.children[labels] = (self.requests.labels(*labels), self.latency.labels(*labels))
        return pair


_request_metrics: _RequestMetrics | None = None
_request_metrics_lock = threading.Lock()


def _get_request_metrics() -> _RequestMetrics:
    """Created once per process, lazily, so that the multiprocess choice is already made."""
    global _request_metrics
    with _request_metrics_lock:
        if _request_metrics is None:
            _use_multiprocess_values()
            from prometheus_client import CollectorRegistry, Counter, Histogram

            registry = CollectorRegistry(auto_describe=True)
            labels = ("route", "method", "status")
            _request_metrics = _RequestMetrics(
                registry=registry,
                requests=Counter(
                    "sendtime_http_requests",
                    "API requests by route template, method and status.",
                    labels,
                    registry=registry,
                ),
                latency=Histogram(
                    "sendtime_http_request_duration_seconds",
                    "API request latency by route template, method and status.",
                    labels,
                    buckets=LATENCY_BUCKETS,
                    registry=registry,
                ),
            )
        return _request_metrics


_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^:<>]+)>")


@lru_cache(maxsize=256)
def route_template(rule: str) -> str:
    """`/api/v1/customers/<customer_id:customer_id>` -> `/api/v1/customers/<customer_id>`."""
    return _CONVERTER.sub(r"<\1>", rule)


def _route_label() -> str:
    # the URL rule, never the URL: keeps customer ids out of the metrics and the series bounded
    rule = request.url_rule
    return route_template(rule.rule) if rule is not None else "unmatched"


def _before_request() -> None:
    g._sendtime_metrics_start = time.perf_counter()


def _after_request(response: Response) -> Response:
    start = g.pop("_sendtime_metrics_start", None)
    if start is not None:
        metrics = _request_metrics or _get_request_metrics()
        method = request.method if request.method in _METHODS else "other"
        count, latency = metrics.child((_route_label(), method, str(response.status_code)))
        count.inc()
        latency.observe(time.perf_counter() - start)
    return response


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one request answered outside Flask's hooks (the fast path) in the same counter and
    histogram as the hooks, with the same labels: `route` is the URL rule or its template."""
    metrics = _request_metrics or _get_request_metrics()
    count, latency = metrics.child((route_template(route), method, str(status)))
    count.inc()
    latency.observe(seconds)


# --------------------------------------------------------------------------- exposition


def render_metrics(settings: Settings) -> tuple[bytes, str]:
    """The /metrics body: request metrics (merged over workers when multiprocess) + pipeline metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    path = _multiprocess_path()
    if path:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        from prometheus_client import PROCESS_COLLECTOR

        _RegistryProxy(_get_request_metrics().registry).register_into(registry)
        registry.register(PROCESS_COLLECTOR)
    registry.register(PipelineCollector(settings))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _RegistryProxy:
    """Exposes one registry's metrics through another (single-process mode)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def register_into(self, registry: Any) -> None:
        registry.register(self)

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Any]:
        return self.source.collect()


def init_app(app: Flask) -> None:
    """Register `/metrics` and the request instrumentation on a Flask app (called by the app factory)."""
    _get_request_metrics()  # fail at start-up, not at the first request
    app.before_request(_before_request)
    app.after_request(_after_request)

    def metrics() -> Response:
        body, content_type = render_metrics(app_settings(app))
        return Response(body, status=200, content_type=content_type, headers={"Cache-Control": "no-store"})

    app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics, methods=["GET"])
