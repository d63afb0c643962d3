"""One JSON line per request on stderr, the same shape as pipeline.logs lines.

Only the route template (e.g. /api/v1/customers/<customer_id>) is logged, never the raw path or
query string, body, key or email: an unmatched path is logged as null. Lines are written with
one os.write each so the workers' lines never interleave.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

_second: list = [-1, ""]  # the formatted second, reused by every line within it


def _timestamp(now: float) -> str:
    whole = int(now)
    if whole != _second[0]:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int((now - whole) * 1000):03d}Z"


def write_line(level: str, logger: str, msg: str, **fields: Any) -> None:
    line = {"ts": _timestamp(time.time()), "level": level, "logger": logger, "msg": msg, **fields}
    try:
        os.write(2, orjson.dumps(line, default=str) + b"\n")
    except OSError:  # a closed stderr must never fail a request
        pass


def log_request(
    *,
    request_id: str,
    key: str | None,
    method: str,
    route: str | None,
    status: int,
    latency_ms: float,
    version: int | None,
) -> None:
    # built directly (not through write_line's **fields): this runs on every request
    line = {
        "ts": _timestamp(time.time()),
        "level": "info",
        "logger": "sendtime.request",
        "msg": "request",
        "request_id": request_id,
        "key": key,
        "method": method,
        "route": route,
        "status": status,
        "latency_ms": round(latency_ms, 3),
        "version": version,
    }
    try:
        os.write(2, orjson.dumps(line) + b"\n")
    except OSError:
        pass
