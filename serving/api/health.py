"""Open endpoints: /health (alive), /ready (a fresh published state), /openapi.json.

Registered twice: at the root (load balancers, probes) and under /api/v1 (clients configured
with the API's base URL). Neither needs a key.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from flask import Blueprint, Response, current_app

from serving.http import json_response, set_version
from serving.problems import Problem
from serving.reader import StoreNotCreated, StoreUnavailable
from serving.state import state

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    return json_response(b'{"status":"ok"}')


@bp.get("/ready")
def ready() -> Response:
    reader = state().reader
    try:
        row = reader.latest_version()
        lag = reader.replica_lag()
    except StoreUnavailable:
        raise Problem("not-ready", "the online store cannot be read", {"Retry-After": "5"}) from None
    if row is None:
        set_version(0)
        raise Problem("not-ready", "nothing has been published yet", {"Retry-After": "60"})
    version, published_at, as_of, cycle_id = row
    set_version(int(version))
    published = datetime.fromisoformat(published_at.replace("Z", "+00:00"))
    if published.tzinfo is None:
        published = published.replace(tzinfo=UTC)
    age = (datetime.now(UTC) - published).total_seconds()
    limit = state().settings.ready_max_age_seconds
    if age > limit:
        raise Problem(
            "not-ready",
            f"the last publish is {age:.0f} s old (ready_max_age_seconds is {limit:g})",
            {"Retry-After": "60"},
        )
    body = {
        "status": "ready",
        "version": int(version),
        "cycle_id": cycle_id,
        "as_of": as_of,
        "published_at": published_at,
        "age_seconds": round(age, 3),
    }
    if reader.is_replica:
        # reads come from a streaming replica: how far behind the primary it is (None: it is not
        # replaying, e.g. promoted)
        body["replica_lag_seconds"] = None if lag is None else round(lag, 3)
    return json_response(orjson.dumps(body))


@bp.get("/openapi.json")
def openapi() -> Response:
    # the fields come from the published contract: a worker that never read it answers 503 while the
    # store is unreadable (the reader keeps the last contract it read and serves that one)
    try:
        contracts = state().reader.contracts()
    except StoreNotCreated:
        contracts = {}  # a fresh home: the document without the contract's fields
    return json_response(current_app.extensions["sendtime.openapi"].render(contracts))
