"""gunicorn settings shared by `sendtime serve` and bench/api.py (the bare baseline uses the
same ones, so the two are compared like for like)."""

from __future__ import annotations

from typing import Any


def gunicorn_options(host: str, port: int, workers: int) -> dict[str, Any]:
    return {
        "bind": f"{host}:{port}",
        "workers": max(int(workers), 1),
        # sync workers: one request at a time per process; every request is CPU-bound and short
        # (microsecond store reads), so threads or async would add overhead, not throughput
        "worker_class": "sync",
        "backlog": 2048,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 2,
        # the app writes its own JSON request line; gunicorn's access log would duplicate it
        # (and log raw paths)
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "sendtime-api",
        "preload_app": False,
    }
